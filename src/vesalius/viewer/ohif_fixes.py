"""Fixes to the OHIF build for conformant data it does not handle, applied as it is served.

The DICOMweb answers are conformant and OHIF's configuration has no switch for these cases, so
each fix is one exact text replacement in one file of the build. The file is found by its text,
not its name (the name changes with every build). It is patched in memory at start-up and served
in place of the installed file; the installed folder (checked against npm's digest at install)
is never changed. A build without the text, such as another OHIF version, is served unchanged.
docs/dicomweb.md ("The bundled viewer and edge cases") says what each fix is for.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fix:
    """In ``old`` (found exactly once in a file), replace the line ``was`` with ``now``;
    ``reason`` says why. ``old`` is the whole passage, so that the match is unambiguous."""

    name: str
    reason: str
    old: bytes
    was: bytes
    now: bytes

    @property
    def new(self) -> bytes:
        """The passage as served."""
        return self.old.replace(self.was, self.now, 1)


#: PS3.3 C.17.3 (Table C.17-5): Concept Name Code Sequence is Type 1C, absent from e.g. IMAGE,
#: COMPOSITE and WAVEFORM items and from by-reference items (pydicom's test-SR.dcm has all of
#: them). OHIF 3.13's SR text viewport reads ``CodeValue`` from it unconditionally; the
#: ``TypeError`` unmounts the whole viewer (a black page). With the fix such an item shows its
#: value with no label.
SR_CONTENT_ITEM = Fix(
    name="sr-content-item-without-concept-name",
    reason="an SR content item without a Concept Name Code Sequence blanks OHIF's SR viewport",
    old=(
        b"function OHIFCornerstoneSRContentItem(props) {\n"
        b"  const {\n"
        b"    contentItem,\n"
        b"    nodeIndexesTree,\n"
        b"    continuityOfContent\n"
        b"  } = props;\n"
        b"  const {\n"
        b"    ConceptNameCodeSequence\n"
        b"  } = contentItem;\n"
        b"  const {\n"
        b"    CodeValue,\n"
        b"    CodeMeaning\n"
        b"  } = ConceptNameCodeSequence;\n"
    ),
    was=b"  } = ConceptNameCodeSequence;\n",
    now=b"  } = ConceptNameCodeSequence ?? {}; /* vesalius: Type 1C, may be absent */\n",
)

#: PS3.18 Table 10.6.3-3 lists Modalities in Study as a return attribute of a study search, sent
#: with no value (F.2.5: ``{"vr": "CS"}``, no ``Value``) when no series of the study has a
#: Modality. OHIF 3.13's ``getModalities`` (``@ohif/core``, run for every row of the study list)
#: loops over ``ModalitiesInStudy.Value.length``; the ``TypeError`` empties the whole list. With
#: the fix an empty attribute counts as no modality, as ``Modality`` already does a line above.
EMPTY_MODALITIES_IN_STUDY = Fix(
    name="empty-modalities-in-study",
    reason="one study with an empty Modalities in Study empties OHIF's whole study list",
    old=b"  modalities.Value = modalities.Value || [];\n  if (ModalitiesInStudy) {\n",
    was=b"  if (ModalitiesInStudy) {\n",
    now=b"  if (ModalitiesInStudy && ModalitiesInStudy.Value) { /* vesalius: may be empty */\n",
)

FIXES: tuple[Fix, ...] = (SR_CONTENT_ITEM, EMPTY_MODALITIES_IN_STUDY)


def apply_fixes(
    files: dict[str, Path], fixes: tuple[Fix, ...] = FIXES
) -> dict[str, tuple[bytes, tuple[str, ...]]]:
    """The patched text of each script in ``files`` (URL path to file) that a fix applies to,
    with the names of the fixes applied. A fix whose text is found twice is not applied; one
    applied nowhere (another OHIF version) is logged as a warning, so an upgrade of
    ``viewer.version`` does not lose it silently."""
    patched: dict[str, tuple[bytes, tuple[str, ...]]] = {}
    done: set[str] = set()
    for url_path, path in files.items():
        if not url_path.endswith(".js"):
            continue
        text = path.read_bytes()
        applied = []
        for fix in fixes:
            if text.count(fix.old) == 1:
                text = text.replace(fix.old, fix.new)
                applied.append(fix.name)
        if applied:
            patched[url_path] = (text, tuple(applied))
            done.update(applied)
            log.info("viewer: %s patched (%s)", url_path, ", ".join(applied))
    for fix in fixes:
        if fix.name not in done:
            log.warning(
                "viewer: fix %s not applied (its text is not in this OHIF build): %s",
                fix.name,
                fix.reason,
            )
    return patched

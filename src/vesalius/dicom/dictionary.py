"""The data dictionary (PS3.6 section 6) by tag, for people reading a data set: each tag's
keyword and name, the repeating groups (``60xx3000``) under their masks, from pydicom's copy of
the standard's dictionary."""

from __future__ import annotations

import functools

from pydicom._dicom_dict import DicomDictionary, RepeatersDictionary


@functools.cache
def names() -> dict[str, tuple[str, str]]:
    """``"GGGGEEEE"`` (or a mask such as ``"60xx3000"``) -> (keyword, name), retired
    attributes included (old files still carry them)."""
    entries: dict[str, tuple[str, str]] = {}
    for tag, (_vr, _vm, name, _retired, keyword) in DicomDictionary.items():
        entries[f"{tag:08X}"] = (keyword, name)
    for mask, (_vr, _vm, name, _retired, keyword) in RepeatersDictionary.items():
        entries[mask.upper().replace("X", "x")] = (keyword, name)
    return entries

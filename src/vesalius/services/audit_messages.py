"""DICOM audit messages (PS3.15 A.5) from the services' events.

:func:`render` turns one :class:`~vesalius.services.events.Event` into the XML of the audit
message A.5.3 defines for it (the schema of A.5.1, ``schemas/audit-message.rng``), or ``None``
for an event no A.5 message describes (jobs: their transfers and deletions are audited by the
services that run them). :data:`MESSAGES` says which event kind becomes which message.

Conventions (A.5.2): times in UTC; the archive itself is an ActiveParticipant named by its AE
title (``AETITLES=`` in AlternativeUserID); patients are ParticipantObjects with ID type
"Patient Number" (RFC 3881), studies with ID type 110180 and, where known, one SOPClass per
SOP Class with its NumberOfInstances; query keys are base64 (the schema's
ParticipantObjectQuery), as are the values of ParticipantObjectDetail.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lxml import etree
from pydicom.datadict import dictionary_VR, tag_for_keyword

from vesalius.identity import Identity
from vesalius.services.events import Event

SCHEMA = Path(__file__).with_name("schemas") / "audit-message.rng"


@dataclass(frozen=True)
class Code:
    """A coded value (``csd-code``, ``codeSystemName``, ``originalText``: the code meaning)."""

    code: str
    system: str
    meaning: str


def _dcm(code: str, meaning: str) -> Code:
    return Code(code, "DCM", meaning)


# Event IDs (PS3.16 CID 400, A.5.3)
APPLICATION_ACTIVITY = _dcm("110100", "Application Activity")
AUDIT_LOG_USED = _dcm("110101", "Audit Log Used")
BEGIN_TRANSFERRING = _dcm("110102", "Begin Transferring DICOM Instances")
INSTANCES_ACCESSED = _dcm("110103", "DICOM Instances Accessed")
INSTANCES_TRANSFERRED = _dcm("110104", "DICOM Instances Transferred")
STUDY_DELETED = _dcm("110105", "DICOM Study Deleted")
EXPORT = _dcm("110106", "Export")
IMPORT = _dcm("110107", "Import")
PATIENT_RECORD = _dcm("110110", "Patient Record")
QUERY = _dcm("110112", "Query")
SECURITY_ALERT = _dcm("110113", "Security Alert")
USER_AUTHENTICATION = _dcm("110114", "User Authentication")
# Event type codes (CID 401, 402)
APPLICATION_START = _dcm("110120", "Application Start")
APPLICATION_STOP = _dcm("110121", "Application Stop")
LOGIN = _dcm("110122", "Login")
LOGOUT = _dcm("110123", "Logout")
NODE_AUTHENTICATION = _dcm("110126", "Node Authentication")
RESTRICTED_FUNCTION = _dcm("110132", "Use of a restricted function")
USER_ATTRIBUTES_CHANGED = _dcm("110137", "User security Attributes Changed")
# Active participant roles (CID 402)
APPLICATION = _dcm("110150", "Application")
LAUNCHER = _dcm("110151", "Application Launcher")
DESTINATION = _dcm("110152", "Destination Role ID")
SOURCE = _dcm("110153", "Source Role ID")
DESTINATION_MEDIA = _dcm("110154", "Destination Media")
SOURCE_MEDIA = _dcm("110155", "Source Media")
# Media types (CID 405)
URI_MEDIA = _dcm("110037", "URI")
# Participant object ID types (RFC 3881 and CID 404)
PATIENT_NUMBER = Code("2", "RFC-3881", "Patient Number")
USER_IDENTIFIER = Code("11", "RFC-3881", "User Identifier")
URI = Code("12", "RFC-3881", "URI")
STUDY_UID = _dcm("110180", "Study Instance UID")
SOP_CLASS_UID = _dcm("110181", "SOP Class UID")
NODE_ID = _dcm("110182", "Node ID")

#: The C-FIND information models (PS3.4 C.6), the SOP Class a query names.
FIND_MODELS = {
    "PATIENT": "1.2.840.10008.5.1.4.1.2.1.1",
    "STUDY": "1.2.840.10008.5.1.4.1.2.2.1",
}
EXPLICIT_LITTLE = "1.2.840.10008.1.2.1"

#: Which event kind becomes which A.5 message (A.5.3.x).
MESSAGES: dict[str, Code] = {
    "application-start": APPLICATION_ACTIVITY,
    "application-stop": APPLICATION_ACTIVITY,
    "audit-read": AUDIT_LOG_USED,
    "transfer-begun": BEGIN_TRANSFERRING,
    "metadata-read": INSTANCES_ACCESSED,
    "instances-stored": INSTANCES_TRANSFERRED,  # by an AE; by a user or the CLI: Import
    "instances-transferred": INSTANCES_TRANSFERRED,
    "instances-deleted": STUDY_DELETED,
    "study-exported": EXPORT,
    "study-corrected": INSTANCES_ACCESSED,
    "study-correction-undone": INSTANCES_ACCESSED,
    "patient-record-updated": PATIENT_RECORD,
    "query": QUERY,
    "remote-query": QUERY,
    "access-refused": SECURITY_ALERT,
    "authentication-failed": SECURITY_ALERT,
    "user-changed": SECURITY_ALERT,
    "token-created": SECURITY_ALERT,
    "token-revoked": SECURITY_ALERT,
    "user-login": USER_AUTHENTICATION,
    "user-logout": USER_AUTHENTICATION,
}

_SUCCESS = {"success", "created", "replaced", "kept", "discarded"}
_MAJOR = {"unavailable"}


@dataclass(frozen=True)
class AuditSource:
    """Who reports (AuditSourceIdentification) and what the archive is called as a
    participant: its AE title and host name."""

    source_id: str
    ae_title: str
    host: str = ""
    site_id: str = ""


def outcome_indicator(outcome: str) -> str:
    """EventOutcomeIndicator (A.5.1): 0 success, 4 minor failure (a failed login, a refusal,
    a transfer partly done or cancelled), 8 serious failure, 12 major."""
    if outcome in _SUCCESS:
        return "0"
    if outcome in _MAJOR:
        return "12"
    if outcome in ("failure", "error"):
        return "8"
    return "4"


def message_of(event: Event) -> Code | None:
    """The A.5 message ``event`` becomes (None: none does)."""
    code = MESSAGES.get(event.kind)
    if event.kind == "instances-stored" and _imported(event):
        return IMPORT
    return code


def _imported(event: Event) -> bool:
    """Instances stored by a user (STOW-RS) or the command line (``vesalius import``) are a
    Data Import (A.5.3.7); by an AE, DICOM Instances Transferred (A.5.3.5)."""
    return event.who.kind != "ae"


def render(event: Event, source: AuditSource) -> bytes | None:
    """The audit message of ``event`` as UTF-8 XML, or None (see :data:`MESSAGES`)."""
    code = message_of(event)
    if code is None:
        return None
    builder = _Builder(event, source)
    getattr(builder, "_" + event.kind.replace("-", "_"))(code)
    return etree.tostring(builder.root, encoding="UTF-8", xml_declaration=False)


def validator() -> etree.RelaxNG:
    """The schema of PS3.15 A.5.1 (RELAX NG), to validate messages with."""
    return etree.RelaxNG(etree.parse(str(SCHEMA)))


def encode_keys(keys: Mapping[str, Any]) -> tuple[bytes, dict[str, str | bytes]]:
    """The query keys (keyword to value) as the data set of an identifier, Explicit VR Little
    Endian (PS3.5 7.1.2; UTF-8 with Specific Character Set ISO_IR 192 when a value is not
    ASCII), and the ParticipantObjectDetail naming that transfer syntax. The values are
    recorded as sent, unchecked. Keys that are not text (a sequence match) make the whole query
    JSON instead, said in an ``Encoding`` detail (an extension, docs/conformance.md)."""
    elements: list[tuple[int, str, bytes]] = []
    try:
        for keyword, value in keys.items():
            tag = tag_for_keyword(keyword)
            if tag is None or not isinstance(value, str):
                raise ValueError(keyword)
            elements.append((tag, dictionary_VR(tag), value.encode("utf-8")))
        if any(not raw.isascii() for _, _, raw in elements):
            elements.append((0x00080005, "CS", b"ISO_IR 192"))
        return b"".join(_element(*e) for e in sorted(elements)), {"TransferSyntax": EXPLICIT_LITTLE}
    except (ValueError, KeyError):
        text = json.dumps(dict(keys), sort_keys=True, default=str).encode()
        return text, {"Encoding": "application/json"}


_LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT"}


def _element(tag: int, vr: str, value: bytes) -> bytes:
    """One data element, Explicit VR Little Endian, padded to an even length (UI with NUL)."""
    if len(value) % 2:
        value += b"\0" if vr == "UI" else b" "
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr[:2].encode("ascii")
    if vr[:2] in _LONG_VRS:
        return head + struct.pack("<HI", 0, len(value)) + value
    if len(value) > 0xFFFF:
        raise ValueError("value too long")
    return head + struct.pack("<H", len(value)) + value


def _coded(parent: etree._Element, tag: str, code: Code) -> etree._Element:
    return etree.SubElement(
        parent,
        tag,
        {
            "csd-code": code.code,
            "codeSystemName": code.system,
            "displayName": code.meaning,
            "originalText": code.meaning,
        },
    )


def _access_point(host: str) -> dict[str, str]:
    """NetworkAccessPointID and its type: 2 for an IP address, 1 for a machine name."""
    if not host:
        return {}
    try:
        ipaddress.ip_address(host)
        kind = "2"
    except ValueError:
        kind = "1"
    return {"NetworkAccessPointID": host, "NetworkAccessPointTypeCode": kind}


def _b64(value: str | bytes) -> str:
    raw = value.encode() if isinstance(value, str) else value
    return base64.b64encode(raw).decode("ascii")


def _strings(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, Iterable):
        return [str(v) for v in value if v not in (None, "")]
    return [str(value)]


class _Builder:
    """Builds one message: EventIdentification, then participants, the source, the objects
    (the schema's order, A.5.1)."""

    def __init__(self, event: Event, source: AuditSource) -> None:
        self.event = event
        self.details = event.details
        self.source = source
        self.root = etree.Element("AuditMessage")
        self._participants: list[etree._Element] = []
        self._objects: list[etree._Element] = []

    # -- the parts --------------------------------------------------------------------------

    def identify(self, code: Code, action: str, *types: Code, outcome: str = "") -> None:
        ident = etree.SubElement(
            self.root,
            "EventIdentification",
            {
                "EventActionCode": action,
                "EventDateTime": self.event.time.isoformat(),
                "EventOutcomeIndicator": outcome_indicator(outcome or self.event.outcome),
            },
        )
        _coded(ident, "EventID", code)
        for type_code in types:
            _coded(ident, "EventTypeCode", type_code)
        reason = self.details.get("reason")
        if reason or self.event.outcome not in _SUCCESS:
            description = etree.SubElement(ident, "EventOutcomeDescription")
            description.text = str(reason or self.event.outcome)

    def participant(
        self,
        user_id: str,
        *,
        requestor: bool,
        host: str = "",
        role: Code | None = None,
        alternative: str = "",
        media: Code | None = None,
    ) -> None:
        attributes = {"UserID": user_id or "unknown"}
        if alternative:
            attributes["AlternativeUserID"] = alternative
        attributes["UserIsRequestor"] = "true" if requestor else "false"
        attributes.update(_access_point(host))
        element = etree.SubElement(self.root, "ActiveParticipant", attributes)
        if role is not None:
            _coded(element, "RoleIDCode", role)
        if media is not None:
            identifier = etree.SubElement(element, "MediaIdentifier")
            _coded(identifier, "MediaType", media)

    def who(self, role: Code | None = None, requestor: bool = True) -> None:
        """The identity behind the event (the requestor, A.5.2.1: an AE by its AE title)."""
        who: Identity = self.event.who
        alternative = f"AETITLES={who.name}" if who.kind == "ae" else ""
        self.participant(
            who.name, requestor=requestor, host=who.host, role=role, alternative=alternative
        )

    def archive(self, role: Code | None = None, requestor: bool = False) -> None:
        """This archive as a participant (by its AE title)."""
        self.participant(
            self.source.ae_title,
            requestor=requestor,
            host=self.source.host,
            role=role,
            alternative=f"AETITLES={self.source.ae_title}",
        )

    def finish(self) -> None:
        """The source, then the objects gathered (the schema's order)."""
        attributes = {"AuditSourceID": self.source.source_id}
        if self.source.site_id:
            attributes = {"AuditEnterpriseSiteID": self.source.site_id, **attributes}
        audit_source = etree.SubElement(self.root, "AuditSourceIdentification", attributes)
        etree.SubElement(audit_source, "AuditSourceTypeCode", {"csd-code": "4"})
        for element in self._objects:
            self.root.append(element)

    def obj(
        self,
        object_id: str,
        id_type: Code,
        *,
        type_code: str,
        role: str = "",
        life_cycle: str = "",
        name: str = "",
        query: bytes | None = None,
        details: Mapping[str, str | bytes] | None = None,
    ) -> etree._Element:
        attributes = {"ParticipantObjectID": object_id or "unknown"}
        attributes["ParticipantObjectTypeCode"] = type_code
        if role:
            attributes["ParticipantObjectTypeCodeRole"] = role
        if life_cycle:
            attributes["ParticipantObjectDataLifeCycle"] = life_cycle
        element = etree.Element("ParticipantObjectIdentification", attributes)
        _coded(element, "ParticipantObjectIDTypeCode", id_type)
        if query is not None:
            etree.SubElement(element, "ParticipantObjectQuery").text = _b64(query)
        else:
            etree.SubElement(element, "ParticipantObjectName").text = name or object_id or "-"
        for key, value in (details or {}).items():
            etree.SubElement(
                element, "ParticipantObjectDetail", {"type": key, "value": _b64(value)}
            )
        self._objects.append(element)
        return element

    def patients(self, life_cycle: str = "") -> None:
        ids = _strings(self.details.get("patient_ids")) or _strings(self.details.get("patient_id"))
        for patient_id in sorted(set(ids)):
            self.obj(patient_id, PATIENT_NUMBER, type_code="1", role="1", life_cycle=life_cycle)

    def studies(self, life_cycle: str = "", anonymized: bool | None = None) -> None:
        """One object per study; its SOP Classes with their instance counts where the event
        carries them (``sop_classes``: {study: {class: count}} or {class: count} for one)."""
        uids = _strings(self.details.get("study_uids")) or _strings(self.details.get("study_uid"))
        classes: Any = self.details.get("sop_classes") or {}
        for study in sorted(set(uids)):
            element = self.obj(study, STUDY_UID, type_code="2", role="3", life_cycle=life_cycle)
            counts = classes.get(study) if isinstance(classes.get(study), dict) else classes
            counts = {k: v for k, v in counts.items() if isinstance(v, int)}
            if counts or anonymized is not None:
                description = etree.SubElement(element, "ParticipantObjectDescription")
                for sop_class, count in sorted(counts.items()):
                    etree.SubElement(
                        description, "SOPClass", {"UID": sop_class, "NumberOfInstances": str(count)}
                    )
                if anonymized is not None:
                    etree.SubElement(description, "Anonymized").text = (
                        "true" if anonymized else "false"
                    )

    # -- one method per event kind (named after it) -----------------------------------------

    def _application_start(self, code: Code) -> None:
        self._application(code, APPLICATION_START)

    def _application_stop(self, code: Code) -> None:
        self._application(code, APPLICATION_STOP)

    def _application(self, code: Code, type_code: Code) -> None:
        """A.5.3.1: the application, and who launched it."""
        self.identify(code, "E", type_code)
        self.archive(APPLICATION)
        launcher = str(self.details.get("launcher") or "")
        if launcher:
            self.participant(launcher, requestor=True, role=LAUNCHER, host="localhost")
        self.finish()

    def _audit_read(self, code: Code) -> None:
        """A.5.3.2: who read the audit trail, and which (a URI naming the index)."""
        self.identify(code, "R")
        self.who()
        trail = str(self.details.get("trail") or "audit-trail")
        self.obj(trail, URI, type_code="2", role="13", name=trail)
        self.finish()

    def _transfer_begun(self, code: Code) -> None:
        """A.5.3.3: the archive begins sending instances (C-MOVE, C-GET)."""
        self.identify(code, "E")
        self._sender_and_receiver()
        self.patients()
        self.studies()
        self.finish()

    def _instances_transferred(self, code: Code) -> None:
        """A.5.3.5, as the sender: action Read; the requestor, the archive as source, the
        destination (the move destination, or the requestor itself)."""
        self.identify(code, "R")
        self._sender_and_receiver()
        self.patients()
        self.studies()
        self.finish()

    def _sender_and_receiver(self) -> None:
        destination = str(self.details.get("destination") or "")
        self.archive(SOURCE)
        if destination:
            self.who()
            self._peer(destination)
        else:
            self.who(DESTINATION)

    def _instances_stored(self, code: Code) -> None:
        """A.5.3.5 as the receiver (action Create; Update when an instance was replaced) for
        an AE; A.5.3.7 Import for STOW-RS and ``vesalius import``."""
        outcomes: Mapping[str, int] = self.details.get("outcomes") or {}
        action = "U" if outcomes.get("replaced") and not outcomes.get("created") else "C"
        if code == IMPORT:
            self.identify(code, "C")
            self.who()
            self.participant(
                str(self.details.get("source") or self.event.who.host or "local"),
                requestor=False,
                role=SOURCE_MEDIA,
                media=URI_MEDIA,
            )
            self.archive(DESTINATION)
        else:
            self.identify(code, action)
            self.who(SOURCE)
            self.archive(DESTINATION)
        self.patients()
        self.studies()
        self.finish()

    def _metadata_read(self, code: Code) -> None:
        """A.5.3.4: instances accessed (read) without being transferred."""
        self.identify(code, "R")
        self.who()
        self.archive()
        self.patients(life_cycle="6")
        self.studies()
        self.finish()

    def _instances_deleted(self, code: Code) -> None:
        """A.5.3.6: DICOM Study Deleted (a study, series or instances of it, or a patient)."""
        self.identify(code, "D")
        self.who()
        self.archive()
        self.patients()
        self.studies(life_cycle="14")
        self.finish()

    def _study_corrected(self, code: Code) -> None:
        """A.5.3.4 with action Update: the study's stored instances rewritten with corrected
        patient or study attributes (``services/corrections.py``)."""
        self.identify(code, "U")
        self.who()
        self.archive()
        self.patients(life_cycle="3")  # RFC 3881: amendment
        self.studies(life_cycle="3")
        self.finish()

    def _study_correction_undone(self, code: Code) -> None:
        self._study_corrected(code)

    def _patient_record_updated(self, code: Code) -> None:
        """A.5.3.9 Patient Record, action Update: the patient's name, birth date, sex or ID
        corrected."""
        self.identify(code, "U")
        self.who()
        self.archive()
        self.patients(life_cycle="3")
        self.finish()

    def _study_exported(self, code: Code) -> None:
        """A.5.3.8 Export: the requestor, the archive as source, the destination media
        (a folder, a zip) or the archive itself (a de-identified copy stored back)."""
        self.identify(code, "R")
        self.who()
        self.archive(SOURCE)
        destination = str(self.details.get("destination") or self.details.get("output") or "")
        if destination:
            self.participant(destination, requestor=False, role=DESTINATION_MEDIA, media=URI_MEDIA)
        self.patients()
        deidentified = self.details.get("deidentified", self.details.get("anonymized"))
        self.studies(
            life_cycle="7" if deidentified else "10",
            anonymized=bool(deidentified) if deidentified is not None else None,
        )
        self.finish()

    def _query(self, code: Code) -> None:
        """A.5.3.12 for a query this archive answers: the process issuing it (the requestor,
        Source Role ID), the archive responding (Destination Role ID), and the query keys."""
        self.identify(code, "E")
        self.who(SOURCE)
        self.archive(DESTINATION)
        self._query_object()

    def _remote_query(self, code: Code) -> None:
        """A.5.3.12 for a query this archive sends to a remote AE (the Query/Retrieve page,
        ``POST /peers/{name}/query``): the archive issues it (Source Role ID), the peer
        responds (Destination Role ID), and the user who asked is the requestor."""
        self.identify(code, "E")
        self.who()
        self.archive(SOURCE)
        self._peer(str(self.details.get("destination") or self.details.get("peer") or ""))
        self._query_object()

    def _peer(self, ae_title: str) -> None:
        """The remote AE ``ae_title`` as the Destination (Role ID), at ``destination_host``."""
        self.participant(
            ae_title,
            requestor=False,
            role=DESTINATION,
            host=str(self.details.get("destination_host") or ""),
            alternative=f"AETITLES={ae_title}",
        )

    def _query_object(self) -> None:
        """The query keys as a data set (Explicit VR Little Endian, the TransferSyntax
        detail), base64, under the SOP Class of the information model queried."""
        model = str(self.details.get("model") or "STUDY")
        criteria = self.details.get("criteria") or {}
        level = str(self.details.get("level", "")).upper()
        keys = {"QueryRetrieveLevel": level, **criteria}
        encoded, details = encode_keys(keys)
        self.obj(
            FIND_MODELS.get(model, model),
            SOP_CLASS_UID,
            type_code="2",
            role="3",
            query=encoded,
            details=details,
        )
        self.finish()

    def _security(self, code: Code, type_code: Code, subject: str, id_type: Code) -> None:
        self.identify(code, "E", type_code)
        self.who(requestor=True)
        self.archive()
        description = str(self.details.get("reason") or self.event.kind)
        self.obj(
            subject, id_type, type_code="2", role="13", details={"Alert Description": description}
        )
        self.finish()

    def _access_refused(self, code: Code) -> None:
        """A.5.3.11: a request the policy refused (use of a restricted function)."""
        action = str(self.details.get("action") or "")
        resource = str(self.details.get("resource") or "archive")
        self._security(code, RESTRICTED_FUNCTION, f"{action}:{resource}", URI)

    def _authentication_failed(self, code: Code) -> None:
        """A.5.3.11: a node or user whose credentials were refused."""
        self._security(code, NODE_AUTHENTICATION, self.event.who.host or "unknown", NODE_ID)

    def _user_changed(self, code: Code) -> None:
        self._user_attributes(code)

    def _token_created(self, code: Code) -> None:
        self._user_attributes(code)

    def _token_revoked(self, code: Code) -> None:
        self._user_attributes(code)

    def _user_attributes(self, code: Code) -> None:
        """A.5.3.11: a user's security attributes changed (the user, a token of theirs)."""
        subject = str(self.details.get("user") or self.details.get("name") or self.event.who.name)
        self.identify(code, "E", USER_ATTRIBUTES_CHANGED)
        self.who()
        self.archive()
        description = self.event.kind
        if self.details.get("change"):
            description += f": {self.details['change']}"
        self.obj(
            subject,
            USER_IDENTIFIER,
            type_code="1",
            role="11",
            details={"Alert Description": description},
        )
        self.finish()

    def _user_login(self, code: Code) -> None:
        self._authentication(code, LOGIN)

    def _user_logout(self, code: Code) -> None:
        self._authentication(code, LOGOUT)

    def _authentication(self, code: Code, type_code: Code) -> None:
        """A.5.3.13: the user (requestor) and the node that authenticated them."""
        self.identify(code, "E", type_code)
        method = str(self.details.get("method") or self.event.who.method)
        who = self.event.who
        user = str(self.details.get("user") or who.name)
        self.participant(user, requestor=True, host=who.host, alternative=f"method={method}")
        self.archive()
        self.finish()

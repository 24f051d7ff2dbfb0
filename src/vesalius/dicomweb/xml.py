"""The Native DICOM Model in XML (PS3.19 A.1), for clients that ask for ``application/dicom+xml``.

Built from the DICOM JSON model (PS3.18 F.2), so both encodings carry the same attributes.
QIDO-RS answers XML as ``multipart/related; type="application/dicom+xml"``, one data set per
part (PS3.18 8.7.3.1). Metadata in XML is out of scope (JSON is what viewers use).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from typing import Any

from pydicom.datadict import keyword_for_tag
from starlette.responses import Response

from vesalius.dicomweb import multipart

NAMESPACE = "http://dicom.nema.org/PS3.19/models/NativeDICOM"
_PN_PARTS = ("FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix")


def _person_name(parent: ET.Element, number: int, value: Mapping[str, str]) -> None:
    name = ET.SubElement(parent, "PersonName", number=str(number))
    for group, text in value.items():
        group_element = ET.SubElement(name, group)
        for part, piece in zip(_PN_PARTS, text.split("^"), strict=False):
            if piece:
                ET.SubElement(group_element, part).text = piece


def _attributes(parent: ET.Element, dataset: Mapping[str, Any]) -> None:
    for tag, member in dataset.items():
        attrs = {"tag": tag, "vr": member.get("vr", "UN")}
        keyword = keyword_for_tag(int(tag, 16))
        if keyword:
            attrs["keyword"] = keyword
        element = ET.SubElement(parent, "DicomAttribute", attrs)
        if "BulkDataURI" in member:
            ET.SubElement(element, "BulkData", uri=member["BulkDataURI"])
        elif "InlineBinary" in member:
            ET.SubElement(element, "InlineBinary").text = member["InlineBinary"]
        for number, value in enumerate(member.get("Value", []), 1):
            if member["vr"] == "SQ":
                item = ET.SubElement(element, "Item", number=str(number))
                _attributes(item, value)
            elif member["vr"] == "PN":
                _person_name(element, number, value)
            else:
                text = "" if value is None else str(value)
                ET.SubElement(element, "Value", number=str(number)).text = text


def native_model(dataset: Mapping[str, Any]) -> bytes:
    """One data set (DICOM JSON) as a Native DICOM Model XML document."""
    root = ET.Element("NativeDicomModel", {"xmlns": NAMESPACE, "xml:space": "preserve"})
    _attributes(root, dataset)
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True))


def xml_search_response(
    datasets: Iterable[Mapping[str, Any]], headers: dict[str, str] | None
) -> Response:
    """QIDO-RS results as ``multipart/related; type="application/dicom+xml"``."""
    boundary = multipart.new_boundary()
    parts = [
        multipart.Part("application/dicom+xml", [native_model(dataset)]) for dataset in datasets
    ]
    body = b"".join(multipart.stream(parts, boundary))
    return Response(
        body,
        media_type=multipart.content_type("application/dicom+xml", boundary),
        headers=headers,
    )

"""DIMSE command sets (PS3.7 E.1), the DIMSE-N ones included (PS3.7 10.3): ours encode to the
same bytes as pynetdicom's, a real implementation of the same tables, and responses echo what
the standard says they echo."""

from __future__ import annotations

from typing import Any

import pytest
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pynetdicom import dimse_messages, dimse_primitives

from vesalius.dimse import commands

COMMITMENT = "1.2.840.10008.1.20.1"
COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
MPPS = "1.2.840.10008.3.1.2.3.3"


def pynetdicom_bytes(message: Any, primitive: Any) -> bytes:
    message.primitive_to_message(primitive)
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, True
    write_dataset(out, message.command_set)
    return bytes(out.getvalue())


def test_n_action_request_encodes_as_pynetdicom_does() -> None:
    primitive = dimse_primitives.N_ACTION()
    primitive.MessageID = 7
    primitive.RequestedSOPClassUID = COMMITMENT
    primitive.RequestedSOPInstanceUID = COMMITMENT_INSTANCE
    primitive.ActionTypeID = 1
    ours = commands.encode(
        [
            (commands.COMMAND_FIELD, commands.N_ACTION_RQ),
            (commands.MESSAGE_ID, 7),
            (commands.REQUESTED_SOP_CLASS, COMMITMENT),
            (commands.REQUESTED_SOP_INSTANCE, COMMITMENT_INSTANCE),
            (commands.ACTION_TYPE_ID, 1),
            (commands.DATA_SET_TYPE, commands.NO_DATA_SET),
        ]
    )
    assert ours == pynetdicom_bytes(dimse_messages.N_ACTION_RQ(), primitive)
    decoded = commands.decode(ours)
    assert (decoded.name, decoded.us(commands.ACTION_TYPE_ID)) == ("N-ACTION-RQ", 1)


@pytest.mark.parametrize(
    ("request_field", "response_field", "type_element"),
    [
        (commands.N_ACTION_RQ, commands.N_ACTION_RSP, commands.ACTION_TYPE_ID),
        (commands.N_EVENT_REPORT_RQ, commands.N_EVENT_REPORT_RSP, commands.EVENT_TYPE_ID),
    ],
)
def test_n_responses_echo_class_instance_and_type(
    request_field: int, response_field: int, type_element: int
) -> None:
    """PS3.7 10.3.1-10.3.4: the response names the SOP class and instance (a request's
    Requested ones become Affected ones) and repeats the Action or Event Type ID."""
    named = (
        [(commands.REQUESTED_SOP_CLASS, COMMITMENT), (commands.REQUESTED_SOP_INSTANCE, "1.2.3")]
        if request_field == commands.N_ACTION_RQ
        else [(commands.AFFECTED_SOP_CLASS, COMMITMENT), (commands.AFFECTED_SOP_INSTANCE, "1.2.3")]
    )
    request = commands.decode(
        commands.encode(
            [
                (commands.COMMAND_FIELD, request_field),
                (commands.MESSAGE_ID, 3),
                (type_element, 2),
                (commands.DATA_SET_TYPE, commands.DATA_SET),
                *named,
            ]
        )
    )
    assert commands.RESPONSE_FIELD[request_field] == response_field
    response = commands.decode(commands.response(request, response_field, 0x0000))
    assert response.field == response_field
    assert response.message_id_responded == 3
    assert response.text(commands.AFFECTED_SOP_CLASS) == COMMITMENT
    assert response.text(commands.AFFECTED_SOP_INSTANCE) == "1.2.3"
    assert response.us(type_element) == 2
    assert not response.has_data_set


def test_n_create_response_encodes_as_pynetdicom_does() -> None:
    primitive = dimse_primitives.N_CREATE()
    primitive.MessageIDBeingRespondedTo = 9
    primitive.AffectedSOPClassUID = MPPS
    primitive.AffectedSOPInstanceUID = "1.2.3.4"
    primitive.Status = 0x0000
    request = commands.decode(
        commands.encode(
            [
                (commands.COMMAND_FIELD, commands.N_CREATE_RQ),
                (commands.MESSAGE_ID, 9),
                (commands.AFFECTED_SOP_CLASS, MPPS),
                (commands.AFFECTED_SOP_INSTANCE, "1.2.3.4"),
                (commands.DATA_SET_TYPE, commands.DATA_SET),
            ]
        )
    )
    ours = commands.response(request, commands.N_CREATE_RSP, 0x0000)
    assert ours == pynetdicom_bytes(dimse_messages.N_CREATE_RSP(), primitive)

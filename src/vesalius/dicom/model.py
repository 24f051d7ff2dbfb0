"""The Query/Retrieve information models (PS3.4 C.6): their levels, in order, and the unique
key of each level. Declared once here; the index, the services and every front door use it."""

from __future__ import annotations

from typing import Literal

#: Query/Retrieve Level (0008,0052) values, PS3.4 C.6.1.1 / C.6.2.1.
Level = Literal["PATIENT", "STUDY", "SERIES", "IMAGE"]
#: The information models: Patient Root (C.6.1) and Study Root (C.6.2).
Model = Literal["PATIENT", "STUDY"]

#: Every level, from the top down.
LEVELS: tuple[Level, ...] = ("PATIENT", "STUDY", "SERIES", "IMAGE")
#: The levels of each model, from the top down.
MODEL_LEVELS: dict[Model, tuple[Level, ...]] = {"PATIENT": LEVELS, "STUDY": LEVELS[1:]}
#: The unique key of each level (PS3.4 C.6.1.1.1, C.6.2.1.1).
UNIQUE_KEYS: dict[Level, str] = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}


def level_of(text: str, model: Model) -> Level | None:
    """The level named by ``text`` (case and padding ignored) if the model has it."""
    wanted = text.strip().upper()
    return next((level for level in MODEL_LEVELS[model] if level == wanted), None)

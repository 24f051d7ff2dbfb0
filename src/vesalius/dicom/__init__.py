"""Pure DICOM helpers over pydicom: no I/O beyond the file they are given, no archive state.

pydicom's own value validation is switched off while reading: real-world data breaks VR rules
all the time and must still be stored as received. What the archive relies on (the UIDs it
indexes) is checked explicitly in :mod:`vesalius.dicom.uids`.
"""

from pydicom import config as _pydicom_config

_pydicom_config.settings.reading_validation_mode = _pydicom_config.IGNORE

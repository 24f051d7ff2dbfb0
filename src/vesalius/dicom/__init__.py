"""Pure DICOM helpers over pydicom: no I/O beyond the file they are given, no archive state."""

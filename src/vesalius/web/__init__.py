"""The HTTP front door: health now; DICOMweb, the REST API and the UI plug in here."""

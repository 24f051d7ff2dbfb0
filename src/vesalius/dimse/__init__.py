"""The DIMSE front door (PS3.7, PS3.8): pynetdicom SCPs and SCUs over the archive services."""

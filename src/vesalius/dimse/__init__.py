"""The DIMSE front door (PS3.7, PS3.8): our own Upper Layer and association, the SCP handlers,
the SCU commands (``scu/``) and the send job, over the archive services."""

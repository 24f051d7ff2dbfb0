"""The OHIF viewer, served by Vesalius (an HTTP app mounted by the host, ``web/host.py``)."""

"""The web UI: the archive's pages for people, over the REST API (``/api/v1``)."""

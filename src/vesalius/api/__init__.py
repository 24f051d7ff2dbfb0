"""The REST API (``/api/v1``): typed endpoints over the archive's services, described by an
OpenAPI 3.1 document at ``/api/openapi.json`` (docs/api.md)."""

"""The archive services every front door calls: ingest, query, retrieve."""

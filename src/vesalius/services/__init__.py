"""The archive services every front door calls: ingest, query, retrieve, metadata, health,
peers, jobs, deletion and sending, each checking the policy and publishing its events."""

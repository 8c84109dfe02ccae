"""The ingest HTTP API (`meterstream serve`): FastAPI app, auth, limits, uploads, reads, health."""

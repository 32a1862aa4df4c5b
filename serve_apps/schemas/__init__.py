"""Pydantic models of the HTTP API and of the service handle calls (one module per resource)."""

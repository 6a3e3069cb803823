"""Telemetry: ingest (MQTT → store), the store, drift and health monitoring, Prefect events.

This package's own namespace stays free of SQLAlchemy, scipy and paho, so that the CLI can show
``DEFAULT_DB_URL`` as an option's default without importing the store."""

DEFAULT_DB_URL = "sqlite:///.edgeops/telemetry.db"
"""The telemetry store when none is configured: SQLite under the project's ``.edgeops/``."""

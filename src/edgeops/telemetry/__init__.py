"""Telemetry: ingest (MQTT → store), the store, drift and health (drift*.py), performance estimated without
labels (performance.py) and realized from them (realized.py), the monitor, Prefect events and reports.

This package's own namespace stays free of SQLAlchemy, scipy and paho, so that the CLI can show
``DEFAULT_DB_URL`` as an option's default without importing the store."""

DEFAULT_DB_URL = "sqlite:///.edgeops/telemetry.db"
"""The telemetry store when none is configured: SQLite under the project's ``.edgeops/``."""

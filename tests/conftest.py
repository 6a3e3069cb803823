"""Shared fixtures. Service fixtures live in tests/services.py so that unit tests stay import-light."""

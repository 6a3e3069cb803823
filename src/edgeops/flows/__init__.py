"""Prefect flows: thin orchestration over plain functions of ``edgeops``."""

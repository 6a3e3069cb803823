"""Prefect flows: thin orchestration over plain functions of ``edgeops``. Deployments name them by module path
(``edgeops.flows.pipeline:pipeline_flow``); nothing below ``edgeops.flows`` imports this package."""

"""Monitoring as a Prefect flow: drift and health from stored telemetry, shown in the Prefect UI.

    scheduled run → run_monitor (edgeops.telemetry.monitor, plain functions)
      → table artifact ``edgeops-fleet-status`` (every device: presence, release, drift and health verdicts)
      → markdown artifact ``edgeops-drift-report`` (per model version: statistics table + PSI chart as PNG)
      → ``edgeops.drift.detected`` / ``edgeops.health.degraded`` once per episode (state kept in the
        telemetry DB), which the retrain deployment's trigger listens to (deployments/prefect.yaml)

Parameters are plain JSON so the flow runs as a scheduled deployment as well as in-process.
"""

from datetime import timedelta
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from edgeops.config import load_config
from edgeops.telemetry.events import emit_to_prefect
from edgeops.telemetry.monitor import episode_events, manifest_references, registry_references, run_monitor
from edgeops.telemetry.report import drift_markdown, fleet_rows
from edgeops.telemetry.store import DEFAULT_DB_URL, TelemetryStore


@flow(name="monitor", log_prints=False)
def monitor_flow(db: str = DEFAULT_DB_URL, model: str | None = None, hours: float = 24.0,
                 registry_root: str | None = None, manifests: list[str] | None = None,
                 per_device: bool = True) -> dict[str, Any]:
    """Compute drift and health over the last ``hours``; publish artifacts; raise episode events.
    References come from ``manifests`` (file paths) when given, else from the registry."""
    logger = get_run_logger()
    if manifests:
        references = manifest_references(Path(p) for p in manifests)
    else:
        references = registry_references(Path(registry_root) if registry_root else load_config().registry.root)
    store = TelemetryStore(db)
    try:
        report = run_monitor(store, references, model=model, window=timedelta(hours=hours), per_device=per_device)
        events = episode_events(store, report)
    finally:
        store.close()
    create_table_artifact(key="edgeops-fleet-status", table=fleet_rows(report),
                          description=f"Fleet status, telemetry of the last {hours:g} h")
    create_markdown_artifact(key="edgeops-drift-report", markdown=drift_markdown(report),
                             description="Drift (PSI, Jensen-Shannon, chi-square) and health per model version")
    for spec in events:
        emit_to_prefect(spec)
        logger.warning("%s: %s", spec.event, spec.resource["prefect.resource.id"])
    summary = {"scopes": len(report.scopes), "drift": [f"{s.model}@{s.version}" for s in report.fleet
                                                        if s.verdict == "drift"],
               "events": [s.event for s in events], "unreferenced": report.unreferenced}
    logger.info("monitor: %s", summary)
    return summary


if __name__ == "__main__":
    monitor_flow()

"""Monitoring as a Prefect flow: drift and health from stored telemetry, shown in the Prefect UI.

    scheduled run → run_monitor (edgeops.telemetry.monitor, plain functions)
      → table artifact ``edgeops-fleet-status`` (every device: presence, release, drift, health and performance)
      → markdown artifact ``edgeops-drift-report`` (per model version: drift evidence per feature and health over
        time as PNG charts, the latest check point's statistics, a device × feature view; retired versions last)
      → markdown artifact ``edgeops-performance`` (per model version: performance estimated without labels and
        realized from labels, and a chart of both over time with their intervals)
      → ``edgeops.drift.detected`` / ``edgeops.health.degraded`` (errors, latency) / ``edgeops.performance.degraded``
        (estimated or realized) once per episode (state kept in the telemetry DB); the retrain deployment's
        trigger listens to drift and performance (deployments/prefect.yaml)

Parameters are plain JSON so the flow runs as a scheduled deployment as well as in-process.
"""

from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from edgeops.config import load_config
from edgeops.telemetry.events import emit_to_prefect
from edgeops.telemetry.monitor import (
    drift_thresholds,
    episode_events,
    manifest_references,
    performance_thresholds,
    realized_thresholds,
    registry_references,
    run_monitor,
)
from edgeops.telemetry.performance_report import performance_markdown
from edgeops.telemetry.report import drift_markdown, fleet_rows
from edgeops.telemetry.store import TelemetryStore


@flow(name="monitor", log_prints=False)
def monitor_flow(db: str | None = None, model: str | None = None, hours: float | None = None,
                 registry_root: str | None = None, manifests: list[str] | None = None,
                 per_device: bool = True, false_alarms: float | None = None, window_s: float | None = None,
                 recent_windows: int | None = None, recovery_windows: int | None = None,
                 label_hours: float | None = None, min_labels: int | None = None, confidence: float | None = None,
                 accuracy_tolerance: float | None = None, mae_tolerance: float | None = None,
                 min_accuracy: float | None = None, max_mae: float | None = None) -> dict[str, Any]:
    """Judge drift at every check point of recent telemetry, sum health, estimate performance without labels;
    publish artifacts; raise episode events.

    Unset parameters take edgeops.yaml's ``monitor`` section (docs/monitoring.md), else the defaults below;
    performance verdicts always take ``monitor.performance``.

    Args:
        db: Telemetry store URL, the ingest's store (default: telemetry.url in edgeops.yaml, else
            sqlite:///.edgeops/telemetry.db beside it).
        model: Only this model; empty for every model with telemetry.
        hours: Telemetry read per run, in hours (default 24): health sums it, drift judges every check point in it.
        registry_root: Release registry folder or s3://bucket/prefix URL (default: edgeops.yaml registry.root).
        manifests: Reference manifest files to use instead of the registry.
        per_device: Also judge and report every device, not only the fleet.
        false_alarms: Expected false drift episodes per device (and for the fleet) per 30 days of unchanged
            traffic (default 0.5); lower is quieter and slower to detect small shifts.
        window_s: Check-point length in seconds (default 60): windows ending in the same slot are judged together.
        recent_windows: Each check also tests this many recent check points pooled (default 3).
        recovery_windows: A drift episode ends after this many quiet check points in a row (default 10).
        label_hours: Labels count for the predictions made in the last N hours, by prediction time (default 168).
        min_labels: No realized accuracy / MAE verdict before this many labels per version and scope (default 50).
        confidence: Confidence level of the realized accuracy (Wilson) / MAE (Student t) interval (default 0.95).
        accuracy_tolerance: Degraded when the interval's upper bound is below the release's test accuracy minus
            this (default 0.05).
        mae_tolerance: Degraded when the interval's lower bound is above the release's test MAE times (1 + this)
            (default 0.25).
        min_accuracy: An absolute minimum accuracy instead of the relative one.
        max_mae: An absolute maximum MAE instead of the relative one.
    """
    logger = get_run_logger()
    cfg = load_config()
    thresholds = drift_thresholds(cfg.monitor.drift, false_alarms=false_alarms, window_s=window_s,
                                  recent_windows=recent_windows, recovery_windows=recovery_windows)
    realized = realized_thresholds(cfg.monitor.labels, min_labels=min_labels, confidence=confidence,
                                   accuracy_tolerance=accuracy_tolerance, mae_tolerance=mae_tolerance,
                                   min_accuracy=min_accuracy, max_mae=max_mae)
    performance = performance_thresholds(cfg.monitor.performance)
    hours = hours if hours is not None else cfg.monitor.hours
    label_hours = label_hours if label_hours is not None else cfg.monitor.labels.hours
    if manifests:
        references = manifest_references(Path(p) for p in manifests)
    else:
        references = registry_references(replace(cfg.registry, root=registry_root) if registry_root else cfg.registry)
    store = TelemetryStore(db or cfg.telemetry.url)
    try:
        report = run_monitor(store, references, model=model, window=timedelta(hours=hours), per_device=per_device,
                             thresholds=thresholds, realized=realized, label_window=timedelta(hours=label_hours),
                             performance=performance)
        events = episode_events(store, report)
    finally:
        store.close()
    create_table_artifact(key="edgeops-fleet-status", table=fleet_rows(report),
                          description=f"Fleet status, telemetry of the last {hours:g} h")
    create_markdown_artifact(key="edgeops-drift-report", markdown=drift_markdown(report),
                             description="Drift over time (two-sample chi-square per check point; PSI, JS), health "
                             "over time and devices × features, per model version")
    create_markdown_artifact(key="edgeops-performance", markdown=performance_markdown(report),
                             description="Performance estimated without labels (CBPE / DLE) and realized from "
                             "labels, over time with intervals, against each release's test metrics")
    for spec in events:
        emit_to_prefect(spec)
        logger.warning("%s: %s", spec.event, spec.resource["prefect.resource.id"])
    summary = {"scopes": len(report.scopes), "drift": [f"{s.model}@{s.version}" for s in report.current
                                                        if s.verdict == "drift"],
               "retired": [f"{s.model}@{s.version}" for s in report.fleet if report.is_retired(s)],
               "events": [s.event for s in events], "unreferenced": report.unreferenced,
               "performance_degraded": [
                   *(f"{j.scope.model}@{j.scope.version}" for j in report.performance
                     if j.scope.device is None and j.verdict == "degraded"),
                   *(f"{s.model}@{s.version} (realized)" for s in report.current
                     if s.health.realized is not None and s.health.realized.verdict == "degraded")]}
    logger.info("monitor: %s", summary)
    return summary


if __name__ == "__main__":
    monitor_flow()

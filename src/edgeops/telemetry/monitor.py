"""One monitoring pass: stored windows + the releases' reference bins → drift and health per model and device.

Plain functions (no Prefect): ``edgeops monitor run`` prints the result and ``flows/monitor.py`` turns it into
artifacts and events. References come from a ``ReferenceSource`` — the registry in production (every window
names its model *and version*, so each is compared with the bins of the release that produced it), or manifest
files when there is no registry at hand.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from edge_agent.protocol import ReleaseManifest, parse_manifest
from edgeops.drift import DriftThresholds, HealthThresholds, ScopeReport, assess_scope, sum_windows
from edgeops.errors import EdgeopsError
from edgeops.telemetry.events import EventSpec, drift_event, health_event
from edgeops.telemetry.store import TelemetryStore

ReferenceSource = Callable[[str, int], ReleaseManifest | None]


def registry_references(root: Path) -> ReferenceSource:
    """Manifests from the release registry (``Registry(root).get(model, version)``); None when unknown."""
    from edgeops.registry import Registry

    registry = Registry(root)

    @cache
    def lookup(model: str, version: int) -> ReleaseManifest | None:
        try:
            return registry.get(model, version).manifest
        except EdgeopsError:
            return None

    return lookup


def manifest_references(paths: Iterable[Path]) -> ReferenceSource:
    """Manifests read from files (``edgeops monitor run --manifest path``)."""
    manifests = {}
    for path in paths:
        manifest = parse_manifest(path.read_bytes())
        manifests[manifest.name, manifest.version] = manifest
    return lambda model, version: manifests.get((model, version))


@dataclass(frozen=True)
class MonitorReport:
    generated: datetime
    since: datetime
    scopes: list[ScopeReport]
    devices: list[dict[str, Any]]
    unreferenced: list[str] = field(default_factory=list)   # "model@version" with windows but no manifest

    @property
    def fleet(self) -> list[ScopeReport]:
        return [s for s in self.scopes if s.device is None]

    def to_dict(self) -> dict[str, Any]:
        return {"generated": self.generated.isoformat(), "since": self.since.isoformat(),
                "scopes": [s.to_dict() for s in self.scopes], "unreferenced": self.unreferenced,
                "devices": [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in d.items()
                             if k != "reported"} for d in self.devices]}


def run_monitor(store: TelemetryStore, references: ReferenceSource, *, model: str | None = None,
                window: timedelta = timedelta(hours=24), now: datetime | None = None, per_device: bool = True,
                thresholds: DriftThresholds | None = None, health: HealthThresholds | None = None) -> MonitorReport:
    """Drift and health over the sliding ``window`` ending ``now``, fleet-wide and (optionally) per device."""
    now = now or datetime.now(UTC)
    thresholds, health = thresholds or DriftThresholds(), health or HealthThresholds()
    since = now - window
    totals = sum_windows(store.windows(model=model, since=since))
    scopes: list[ScopeReport] = []
    unreferenced: set[str] = set()
    for (name, version, device), total in sorted(totals.items(), key=lambda kv: (kv[0][0], kv[0][1],
                                                                                 kv[0][2] or "")):
        if device is not None and not per_device:
            continue
        manifest = references(name, version)
        if manifest is None:
            unreferenced.add(f"{name}@{version}")
            continue
        scopes.append(assess_scope(total, manifest.reference, manifest.prediction_reference, device,
                                   thresholds, health))
    return MonitorReport(now, since, scopes, store.devices(), sorted(unreferenced))


def episode_events(store: TelemetryStore, report: MonitorReport) -> list[EventSpec]:
    """``edgeops.drift.detected`` / ``edgeops.health.degraded`` once per episode: an event when a condition
    starts; none while it lasts; the episode closes when a verdict is ``ok`` again (``insufficient_data``
    leaves it as it is). Fleet-wide events are about ``edgeops.model.{name}`` — what the retrain trigger
    matches; per-device ones about the device."""
    events: list[EventSpec] = []
    for scope in report.scopes:
        where = scope.device or "*"
        base = {"scope": scope.device or "fleet", "windows": scope.windows, "devices": scope.devices}
        if scope.verdict != "insufficient_data":
            results = [*scope.features, *([scope.prediction] if scope.prediction else [])]
            detail = {**base, "drifted": scope.drifted,
                      "psi": {r.name: round(r.psi, 4) for r in results if r.verdict == "drift" and r.psi is not None},
                      "js": {r.name: round(r.js, 4) for r in results if r.verdict == "drift" and r.js is not None}}
            if store.set_episode("drift", scope.model, scope.version, where, scope.verdict == "drift", detail):
                events.append(drift_event(scope.model, scope.version, scope.device, detail))
        health = scope.health
        if health.verdict != "insufficient_data":
            detail = {**base, "reason": health.reason, "error_rate": health.error_rate,
                      "latency_p95_ms": health.latency_p95_ms, "accuracy": health.accuracy, "mae": health.mae}
            if store.set_episode("health", scope.model, scope.version, where, health.verdict == "degraded", detail):
                events.append(health_event(scope.model, scope.version, scope.device, detail))
    return events

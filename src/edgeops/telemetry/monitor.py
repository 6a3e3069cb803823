"""One monitoring pass: stored windows + the releases' reference bins → drift and health per model and device,
and performance estimated without labels (edgeops.telemetry.performance) with its verdict.

Plain functions (no Prefect): ``edgeops monitor run`` prints the result and ``flows/monitor.py`` turns it into
artifacts and events. References come from a ``ReferenceSource`` — the registry in production (every window
names its model *and version*, so each is compared with the bins of the release that produced it), or manifest
files when there is no registry at hand.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from edge_agent.protocol import ReleaseManifest, TelemetryWindow, parse_manifest
from edgeops.config import RegistryConfig
from edgeops.config.monitor import (
    DriftConfig,
    DriftThresholds,
    LabelsConfig,
    PerformanceConfig,
    PerformanceThresholds,
    RealizedThresholds,
    ThresholdError,
)
from edgeops.errors import ConfigError, EdgeopsError
from edgeops.telemetry.drift import (
    PREDICTION,
    HealthThresholds,
    Scope,
    ScopeReport,
    Timeline,
    WindowTotals,
    assess_health,
    compare_counts,
    parse_ts,
    sum_windows,
)
from edgeops.telemetry.drift_checks import EpisodeState, judge, step
from edgeops.telemetry.events import EventSpec, drift_event, health_event
from edgeops.telemetry.performance import Judged, TrendPoint, estimate_trend, judge_performance
from edgeops.telemetry.performance_events import performance_events
from edgeops.telemetry.performance_trends import PerformanceTrend, add_arrived_feedback, performance_trends
from edgeops.telemetry.realized import LabelTotals, judge_realized
from edgeops.telemetry.store import TelemetryStore
from edgeops.telemetry.trends import Buckets, HealthPoint, chart_buckets, health_trends

ReferenceSource = Callable[[str, int], ReleaseManifest | None]


def registry_references(where: RegistryConfig | Path | str) -> ReferenceSource:
    """Manifests from the release registry (edgeops.yaml's ``registry`` section, or a folder or ``s3://`` URL);
    None when unknown."""
    from edgeops.release.registry import Registry

    registry = Registry.from_config(where) if isinstance(where, RegistryConfig) else Registry(where)

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
    thresholds: DriftThresholds = field(default_factory=DriftThresholds)
    retired: frozenset[Scope] = frozenset()      # scopes whose every sender now reports running another release
    health_limits: HealthThresholds = field(default_factory=HealthThresholds)
    health_trend: dict[tuple[str, int], list[HealthPoint]] = field(default_factory=dict)   # per version, in buckets
    buckets: Buckets = field(default_factory=lambda: Buckets(datetime.now(UTC), 60.0))   # the charts' steps
    realized: RealizedThresholds = field(default_factory=RealizedThresholds)
    labels_since: datetime | None = None   # labels count for predictions made since then
    performance: list[Judged] = field(default_factory=list)   # estimated without labels, per scope
    performance_thresholds: PerformanceThresholds = field(default_factory=PerformanceThresholds)
    performance_trend: dict[tuple[str, int], list[TrendPoint]] = field(default_factory=dict)   # fleet, per hour
    performance_chart: dict[tuple[str, int], PerformanceTrend] = field(default_factory=dict)   # estimated + realized

    @property
    def fleet(self) -> list[ScopeReport]:
        return [s for s in self.scopes if s.device is None]

    @property
    def current(self) -> list[ScopeReport]:
        """The fleet-wide scopes of versions some device still runs (or might: see ``retired_scopes``)."""
        return [s for s in self.fleet if not self.is_retired(s)]

    def is_retired(self, scope: ScopeReport) -> bool:
        return (scope.model, scope.version, scope.device) in self.retired

    def to_dict(self) -> dict[str, Any]:
        return {"generated": self.generated.isoformat(), "since": self.since.isoformat(),
                "scopes": [{**s.to_dict(), "retired": self.is_retired(s)} for s in self.scopes],
                "unreferenced": self.unreferenced,
                "thresholds": dict(self.thresholds.__dict__), "realized": dict(self.realized.__dict__),
                "labels_since": None if self.labels_since is None else self.labels_since.isoformat(),
                "performance": [j.to_dict() for j in self.performance],
                "performance_trend": [{"model": m, "version": v, "slot": slot, **e.to_dict()}
                                      for (m, v), points in self.performance_trend.items()
                                      for slot, scope in points for e in scope.estimates],
                "devices": [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in d.items()
                             if k != "reported"} for d in self.devices]}


_Thresholds = TypeVar("_Thresholds", DriftThresholds, RealizedThresholds, PerformanceThresholds)


def _overridden(section: str, thresholds: _Thresholds, overrides: Mapping[str, Any]) -> _Thresholds:
    """``thresholds`` with the overrides that are not None (command-line options, flow parameters), checked
    again by the dataclass; a bad value is a ConfigError naming the key (``monitor.<section>.<field>``)."""
    try:
        return dataclasses.replace(thresholds, **{k: v for k, v in overrides.items() if v is not None})
    except ThresholdError as exc:
        raise ConfigError(f"monitor.{section}.{exc.field}", exc.problem) from exc


def drift_thresholds(config: DriftConfig, **overrides: float | int | None) -> DriftThresholds:
    """The thresholds of ``config`` (edgeops.yaml ``monitor.drift``) with the overrides that are not None."""
    return _overridden("drift", config, overrides)


def realized_thresholds(config: LabelsConfig, **overrides: float | int | None) -> RealizedThresholds:
    """The thresholds of ``config`` (edgeops.yaml ``monitor.labels``) with the overrides that are not None."""
    return _overridden("labels", config.thresholds(), overrides)


def performance_thresholds(config: PerformanceConfig, **overrides: float | int | str | None) -> PerformanceThresholds:
    """The thresholds of ``config`` (edgeops.yaml ``monitor.performance``) with the overrides that are not None."""
    return _overridden("performance", config, overrides)


def run_monitor(store: TelemetryStore, references: ReferenceSource, *, model: str | None = None,
                window: timedelta = timedelta(hours=24), now: datetime | None = None, per_device: bool = True,
                thresholds: DriftThresholds | None = None, health: HealthThresholds | None = None,
                realized: RealizedThresholds | None = None, label_window: timedelta | None = None,
                performance: PerformanceThresholds | None = None) -> MonitorReport:
    """Drift check points (drift_checks) and health over the ``window`` ending ``now``, fleet-wide and (optionally)
    per device. Health sums the whole window; drift judges every check point in it. Realized performance counts
    the labels of predictions made in ``label_window`` (default: ``window``) ending ``now``, credited to the
    version and device that made them (credits.py), plus the labels of older agents' windows (counted as they
    arrived, as those windows mean); a version with labels but no recent windows is judged on its labels.
    Performance is estimated without labels from the score counts (or prediction counts) of the whole window."""
    now = now or datetime.now(UTC)
    thresholds, health = thresholds or DriftThresholds(), health or HealthThresholds()
    realized = realized or RealizedThresholds()
    since = now - window
    labels_since = now - (label_window or window)
    windows = store.windows(model=model, since=since)
    totals = sum_windows(windows)
    labels = store.label_totals(since=labels_since, model=model)
    for key, total in totals.items():
        labels.setdefault(key, LabelTotals()).add_feedback(total.feedback)
    slots = slot_counts(windows, thresholds.window_s)
    scopes: list[ScopeReport] = []
    unreferenced: set[str] = set()
    devices = store.devices()
    for name, version, device in sorted({*totals, *labels}, key=lambda k: (k[0], k[1], k[2] or "")):
        if device is not None and not per_device:
            continue
        manifest = references(name, version)
        if manifest is None:
            unreferenced.add(f"{name}@{version}")
            continue
        key = (name, version, device)
        scopes.append(judge_scope(totals.get(key) or WindowTotals(name, version), slots.get(key, {}), manifest,
                                  device, thresholds, health, labels.get(key), realized))
    performance = performance or PerformanceThresholds()
    judged = judge_performance(windows, references, performance, per_device=per_device)
    trend = estimate_trend(windows, references, confidence=performance.confidence)
    hourly = add_arrived_feedback(store.hourly_label_totals(since=labels_since, model=model), windows)
    chart = performance_trends(trend, hourly, references, performance, realized, now)
    ends = [parse_ts(windows[0].end), parse_ts(windows[-1].end)] if windows else [now]   # stored oldest first
    buckets = chart_buckets(ends[0], ends[-1], thresholds.window_s)
    return MonitorReport(now, since, scopes, devices, sorted(unreferenced), thresholds,
                         retired_scopes(totals, devices, labels), health, health_trends(windows, buckets), buckets,
                         realized, labels_since, performance=judged, performance_thresholds=performance,
                         performance_trend=trend, performance_chart=chart)


def retired_scopes(totals: dict[Scope, WindowTotals], devices: Iterable[dict[str, Any]],
                   labelled: Iterable[Scope] = ()) -> frozenset[Scope]:
    """The scopes whose release no device that sent their windows runs any more: each such device's latest
    ``reported`` state names another release. A device that never reported keeps its version current (nothing
    says it moved on), so telemetry without presence information is never called retired. A fleet-wide scope
    with labels but no windows in the span (``labelled``: late labels of an older version) has no senders to ask;
    it is retired when devices report running its model and none of them runs its version."""
    running = {d["device"]: (d["model"], d["version"]) for d in devices if d.get("model") is not None}

    def senders(key: Scope) -> set[str]:
        if key[2] is not None:
            return {key[2]}
        if key in totals:
            return totals[key].devices
        return {dev for dev, (name, _) in running.items() if name == key[0]}

    return frozenset(key for key in {*totals, *labelled}
                     if (who := senders(key)) and all(running.get(dev, key[:2]) != key[:2] for dev in who))


Slots = dict[str, dict[str, np.ndarray]]    # check point time (ISO) → series name → counts vector


def slot_counts(windows: Iterable[TelemetryWindow], window_s: float) -> dict[Scope, Slots]:
    """Counts per scope, check point and series: windows that end in the same ``window_s`` slot are one check
    point (a device's one window; the fleet's windows of that minute). Vectors of another length than the
    first seen (a device that binned differently) are left out, as sum_windows does."""
    out: dict[Scope, Slots] = {}
    for w in windows:
        end = parse_ts(w.end).timestamp()
        slot = datetime.fromtimestamp(end - end % window_s, UTC).isoformat()
        series = {col: c.vector() for col, c in w.features.items()}
        if w.predictions is not None:
            series[PREDICTION] = w.predictions.vector()
        for key in ((w.model, w.version, w.device), (w.model, w.version, None)):
            point = out.setdefault(key, {}).setdefault(slot, {})
            for col, vec in series.items():
                arr = np.asarray(vec, dtype=np.int64)
                if col not in point:
                    point[col] = arr.copy()
                elif point[col].shape == arr.shape:
                    point[col] += arr
    return out


def judge_scope(total: WindowTotals, slots: Slots, manifest: ReleaseManifest, device: str | None,
                thresholds: DriftThresholds, health: HealthThresholds, labels: LabelTotals | None = None,
                realized: RealizedThresholds | None = None) -> ScopeReport:
    """Every check point of one scope, the episode replayed over them, the latest pooled statistics, and health
    with realized performance judged on ``labels`` against the release's own test metrics."""
    refs = {col: ref.counts.vector() for col, ref in sorted(manifest.reference.items())}
    refs[PREDICTION] = manifest.prediction_reference.counts.vector()
    performance = judge_realized(labels or LabelTotals(), manifest.outputs.task, manifest.metrics,
                                 realized or RealizedThresholds())
    if not slots:   # labels of a version without windows in the span: no drift to judge
        nothing = Timeline((), (), (), False, None, (), thresholds.alpha(len(refs)))
        return ScopeReport(total.model, total.version, device, 0, 0, (), None,
                           assess_health(total, health, performance), nothing)
    times = sorted(slots)
    counts = {col: np.array([_vector(slots[t].get(col), len(ref)) for t in times], dtype=np.int64).reshape(
        len(times), len(ref)) for col, ref in refs.items()}
    numeric = {col for col, ref in manifest.reference.items() if ref.bins.kind == "numeric"}
    if manifest.prediction_reference.bins.kind == "numeric":
        numeric.add(PREDICTION)
    checks = judge(refs, counts, thresholds, numeric)
    state = EpisodeState()
    opened = step(state, checks.rejected, checks.recovered, thresholds.recovery_windows)
    start = opened[-1] if state.active and opened else None
    drifted = sorted({name for t in range(start or 0, len(times)) for name in checks.rejecting(t)}) \
        if start is not None else []
    timeline = Timeline(tuple(times), tuple(tuple(checks.rejecting(t)) for t in range(len(times))),
                        tuple(bool(x) for x in checks.recovered), state.active,
                        times[start] if start is not None else None, tuple(drifted), checks.alpha,
                        checks.names, checks.p.min(axis=2))
    recent = {col: arr[-thresholds.recent_windows:].sum(axis=0) for col, arr in counts.items()}
    results = [compare_counts(col, refs[col], recent[col].tolist(), thresholds, checks.alpha, numeric=col in numeric)
               for col in refs]
    features = tuple(r for r in results if r.name != PREDICTION)
    prediction = next((r for r in results if r.name == PREDICTION), None)
    return ScopeReport(total.model, total.version, device, total.windows, len(total.devices), features, prediction,
                       assess_health(total, health, performance), timeline)


def _vector(vec: np.ndarray | None, size: int) -> np.ndarray:
    return vec if vec is not None and len(vec) == size else np.zeros(size, dtype=np.int64)


def episode_events(store: TelemetryStore, report: MonitorReport) -> list[EventSpec]:
    """``edgeops.drift.detected`` / ``edgeops.health.degraded`` / ``edgeops.performance.degraded`` once per
    episode. Drift: the scope's check points after the last one judged by an earlier run (kept in the store)
    advance its episode; the event marks the first check point that rejected. Health (errors, latency): an event
    when the verdict over the window turns ``degraded``; the episode closes when it is ``ok`` again
    (``insufficient_data`` leaves it as it is). Performance, estimated or realized: performance_events.py.
    Fleet-wide events are about ``edgeops.model.{name}`` — what the retrain trigger matches; per-device ones
    about the device."""
    events: list[EventSpec] = []
    for scope in report.scopes:
        where = scope.device or "*"
        base = {"scope": scope.device or "fleet", "windows": scope.windows, "devices": scope.devices}
        if scope.timeline is not None:
            spec = _advance_drift(store, scope, where, base, report.thresholds, report.generated)
            if spec is not None:
                events.append(spec)
        health = scope.health
        if health.verdict != "insufficient_data":
            detail = {**base, "reason": health.reason, "error_rate": health.error_rate,
                      "latency_p95_ms": health.latency_p95_ms, "accuracy": health.accuracy, "mae": health.mae,
                      "realized": None if health.realized is None else health.realized.to_dict()}
            if store.set_episode("health", scope.model, scope.version, where, health.verdict == "degraded", detail):
                events.append(health_event(scope.model, scope.version, scope.device, detail))
    return events + performance_events(store, report.performance, report.scopes, report.retired)


def _advance_drift(store: TelemetryStore, scope: ScopeReport, where: str, base: dict[str, Any],
                   thresholds: DriftThresholds, now: datetime) -> EventSpec | None:
    """Advance the scope's episode over the check points no earlier run finished judging. The check point still
    in progress (its slot has not ended at ``now``) is judged too, so a shift is seen in the run that first has
    it, but it is not marked as judged: its later windows are judged again by the next run, with the whole slot."""
    timeline = scope.timeline
    assert timeline is not None
    row = store.episode("drift", scope.model, scope.version, where)
    detail = dict((row or {}).get("detail") or {})
    state = EpisodeState(bool(row and row["active"]), int(detail.get("quiet", 0)), detail.get("checked_until"))
    new = [i for i, t in enumerate(timeline.checks) if state.checked_until is None or t > state.checked_until]
    if not new:
        return None
    was_active = state.active
    opened = step(state, [bool(timeline.rejecting[i]) for i in new], [timeline.recovered[i] for i in new],
                  thresholds.recovery_windows)
    ended = [i for i in new if datetime.fromisoformat(timeline.checks[i]).timestamp() + thresholds.window_s
             <= now.timestamp()]
    keep = {"checked_until": timeline.checks[ended[-1]] if ended else state.checked_until, "quiet": state.quiet}
    if not opened:
        store.set_episode("drift", scope.model, scope.version, where, state.active, {**detail, **keep})
        return None
    first = new[opened[-1]]
    results = {r.name: r for r in (*scope.features, *([scope.prediction] if scope.prediction else []))}
    drifted = sorted({name for i in new[opened[-1]:] for name in timeline.rejecting[i]})
    payload = {**base, "drifted": drifted, "window": timeline.checks[first], "alpha": timeline.alpha,
               "p_value": {n: results[n].p_value for n in drifted if n in results},
               "psi": {n: round(psi, 4) for n in drifted if n in results and (psi := results[n].psi) is not None},
               "js": {n: round(js, 4) for n in drifted if n in results and (js := results[n].js) is not None}}
    if was_active:     # the old episode closed and a new one opened within this run
        store.set_episode("drift", scope.model, scope.version, where, False, {**detail, **keep})
    if store.set_episode("drift", scope.model, scope.version, where, True, {**payload, **keep}):
        if not state.active:   # it opened and closed again within this run: record that it is over
            store.set_episode("drift", scope.model, scope.version, where, False, {**payload, **keep})
        return drift_event(scope.model, scope.version, scope.device, payload)
    return None

"""Trends for the Prefect UI: drift evidence and health over time, and which devices drift on what.

Plain functions on what one monitoring pass already computed (no second way of testing): the drift evidence
is the check points' own p-values (``Timeline.p``, from drift_checks.judge), the device × feature view counts
the check points that rejected (``Timeline.rejecting``), and health is summed from the windows the pass read.

A chart has at most ``MAX_POINTS`` points in time: a day of 1-minute check points (1,440) is shown in buckets of
several check points, each showing the *strongest* evidence in it, so bucketing never hides a rejection.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from edge_agent.protocol import TelemetryWindow
from edgeops.telemetry.drift import ScopeReport, Timeline, parse_ts

MAX_POINTS = 240           # points in time per chart
MAX_DEVICE_ROWS = 20       # rows of the device × feature view
MAX_SERIES = 12            # features (and predictions) charted / tabled per model version
QUANTILES = ("p50", "p95", "p99")
P_FLOOR = 1e-300           # p-values round to 0 for large shifts; -log10 stays finite


@dataclass(frozen=True)
class Buckets:
    """The charts' steps in time: ``width`` seconds each, counted from ``origin`` (the first check point)."""

    origin: datetime
    width: float

    def start(self, ts: datetime) -> datetime:
        offset = (ts - self.origin).total_seconds()
        return self.origin + timedelta(seconds=offset - offset % self.width)


def chart_buckets(first: datetime, last: datetime, window_s: float, max_points: int = MAX_POINTS) -> Buckets:
    """Steps for check points from ``first`` to ``last``: one check point (``window_s``) while there are at most
    ``max_points`` of them, else the fewest whole check points a step that keep the chart within ``max_points``."""
    t = first.timestamp()
    origin = datetime.fromtimestamp(t - t % window_s, UTC)
    slots = math.floor((last - origin).total_seconds() / window_s) + 1      # slot starts in [origin, last]
    return Buckets(origin, window_s * max(1, math.ceil(slots / max_points)))


@dataclass
class HealthPoint:
    """Health of one model version (all devices) in one bucket of time. Quantiles cannot be merged exactly from
    window quantiles; as for the report's p95 (drift.WindowTotals), each is the count-weighted mean of the
    windows' quantile, and ``latency_max`` the largest window maximum."""

    start: datetime
    windows: int = 0
    count: int = 0
    errors: int = 0
    latency_max: float | None = None
    _sums: dict[str, float] = field(default_factory=dict)
    _weights: dict[str, int] = field(default_factory=dict)

    def add(self, window: TelemetryWindow) -> None:
        self.windows += 1
        self.count += window.count
        self.errors += sum(window.errors.values())
        if window.count <= 0:
            return
        for q in QUANTILES:
            value = window.latency_ms.get(q)
            if value is not None:
                self._sums[q] = self._sums.get(q, 0.0) + value * window.count
                self._weights[q] = self._weights.get(q, 0) + window.count
        top = window.latency_ms.get("max")
        if top is not None:
            self.latency_max = top if self.latency_max is None else max(self.latency_max, top)

    def latency(self, quantile: str) -> float | None:
        weight = self._weights.get(quantile, 0)
        return self._sums[quantile] / weight if weight else None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.count if self.count else None


def health_trends(windows: Iterable[TelemetryWindow], buckets: Buckets) -> dict[tuple[str, int], list[HealthPoint]]:
    """Health per model version and bucket (by window end), oldest first; buckets without windows are absent."""
    points: dict[tuple[str, int], dict[datetime, HealthPoint]] = {}
    for w in windows:
        start = buckets.start(parse_ts(w.end))
        per_version = points.setdefault((w.model, w.version), {})
        point = per_version.get(start)
        if point is None:
            point = per_version[start] = HealthPoint(start)
        point.add(w)
    return {key: [per_version[t] for t in sorted(per_version)] for key, per_version in points.items()}


@dataclass(frozen=True)
class EvidenceTrend:
    """Drift evidence of one scope per bucket: ``evidence[b, s]`` is the largest −log10 p of series ``s`` among
    the check points of bucket ``b``; the series rejected there when it is above ``decision`` (−log10 alpha)."""

    times: tuple[datetime, ...]
    series: tuple[str, ...]
    evidence: np.ndarray
    decision: float
    opened: datetime | None           # start of the drift episode still open at the end, if any
    drifted: tuple[str, ...] = ()     # the series that episode holds

    @property
    def rejected(self) -> np.ndarray:
        return self.evidence > self.decision


def evidence_trend(timeline: Timeline, buckets: Buckets) -> EvidenceTrend | None:
    """The check points' p-values as evidence per bucket; None when the timeline has none."""
    if timeline.p is None or not timeline.checks or not timeline.series:
        return None
    starts = [buckets.start(datetime.fromisoformat(t)) for t in timeline.checks]
    times = sorted(set(starts))
    index = {t: i for i, t in enumerate(times)}
    evidence = np.zeros((len(times), len(timeline.series)))
    per_check = -np.log10(np.maximum(np.asarray(timeline.p, dtype=float), P_FLOOR))
    np.maximum.at(evidence, [index[t] for t in starts], per_check)
    opened = datetime.fromisoformat(timeline.opened) if timeline.active and timeline.opened else None
    return EvidenceTrend(tuple(times), timeline.series, evidence, -math.log10(timeline.alpha), opened,
                         timeline.drifted if opened is not None else ())


def charted_series(trend: EvidenceTrend, drifted: Sequence[str], limit: int = MAX_SERIES) -> list[int]:
    """Which series to chart when there are more than ``limit``: the open episode's first, then by their
    strongest evidence; otherwise all of them, in the timeline's order."""
    if len(trend.series) <= limit:
        return list(range(len(trend.series)))
    strongest = trend.evidence.max(axis=0)
    order = sorted(range(len(trend.series)), key=lambda i: (trend.series[i] not in drifted, -strongest[i], i))
    return sorted(order[:limit])


@dataclass(frozen=True)
class DeviceDrift:
    """One row of the device × feature view: per series, the check points that rejected it in the span, and
    which series the device's open episode holds."""

    device: str
    checks: int
    rejections: dict[str, int]
    open: tuple[str, ...]
    last_rejected: str | None

    @property
    def order(self) -> tuple[int, int, int, str]:
        return (-len(self.open), -sum(1 for n in self.rejections.values() if n), -sum(self.rejections.values()),
                self.device)


def device_drift(scopes: Iterable[ScopeReport], model: str, version: int) -> list[DeviceDrift]:
    """Every device scope of ``model@version``: open episodes first (most drifted series first), then devices
    whose checks rejected earlier in the span, then the quiet ones; by name within each."""
    rows = []
    for scope in scopes:
        if scope.device is None or (scope.model, scope.version) != (model, version) or scope.timeline is None:
            continue
        t = scope.timeline
        counts = {name: 0 for name in t.series}
        for names in t.rejecting:
            for name in names:
                counts[name] = counts.get(name, 0) + 1
        last = max((c for c, names in zip(t.checks, t.rejecting, strict=True) if names), default=None)
        rows.append(DeviceDrift(scope.device, len(t.checks), counts, tuple(scope.drifted), last))
    return sorted(rows, key=lambda r: r.order)


__all__ = ["Buckets", "DeviceDrift", "EvidenceTrend", "HealthPoint", "chart_buckets", "charted_series", "device_drift",
           "evidence_trend", "health_trends"]

"""Estimated and realized performance over time, per model version: the data of the ``edgeops-performance`` chart.

Plain functions on what one monitoring pass already has, never a second way of computing it: the estimates are
the pass's hourly fleet-wide estimates (performance.estimate_trend), and realized performance is the label credits
summed by the hour of their *predictions* (credits.hourly_label_totals), each bin judged by realized.judge_realized,
so its value and its Wilson / Student t interval are the ones a verdict on those labels would have.

Both series show the metric labels can measure: accuracy for classifiers (also when F1 is the metric judged),
MAE for regressors. Realized points are hourly while labels are plentiful; with few labels an hour's interval
spans most of [0, 1] and says nothing, so hours are pooled into the smallest step of ``REALIZED_STEPS_H`` whose
median bin holds ``min_labels`` labels. A chart covers at most ``MAX_HOURS`` hours, the latest.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from edge_agent.protocol import ReleaseManifest, TelemetryWindow
from edgeops.config.monitor import PerformanceThresholds, RealizedThresholds
from edgeops.telemetry.drift import normalise_feedback, parse_ts
from edgeops.telemetry.performance import Estimate, TrendPoint, estimate_threshold
from edgeops.telemetry.realized import LabelTotals, Realized, judge_realized

MAX_HOURS = 168                          # a week of hours per chart
REALIZED_STEPS_H = (1, 2, 3, 6, 12, 24)  # all divide a day: bins start at the same UTC hours every day

HourlyLabels = dict[tuple[str, int], dict[datetime, LabelTotals]]   # (model, version) → hour → labels


@dataclass(frozen=True)
class EstimatedPoint:
    start: datetime       # the hour's start (UTC)
    estimate: Estimate


@dataclass(frozen=True)
class RealizedPoint:
    start: datetime       # the bin's start (UTC); it lasts PerformanceTrend.step_hours
    realized: Realized    # value, interval, labels and verdict of the bin's labels


@dataclass(frozen=True)
class PerformanceTrend:
    """One model version's chart: the fleet's hourly estimate, realized performance per bin of ``step_hours``,
    the release's test value and the thresholds the two verdicts use."""

    model: str
    version: int
    metric: str                              # "accuracy" or "mae"
    estimated: tuple[EstimatedPoint, ...]
    realized: tuple[RealizedPoint, ...]
    step_hours: int
    reference: float | None                  # the release's own test value (manifest metrics)
    estimate_threshold: float | None
    realized_threshold: float | None
    min_labels: int
    start: datetime                          # the chart's first hour
    left_out: int = 0                        # earlier hours with data, beyond MAX_HOURS


def hour_of(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def add_arrived_feedback(hourly: HourlyLabels, windows: Iterable[TelemetryWindow]) -> HourlyLabels:
    """Add the labels of windows from agents before telemetry 1.2 (``feedback``, counted as they arrived) at the
    hour their window ended, for the window's own version, as the monitor's verdict counts them (drift.sum_windows
    skips a window's ``feedback`` when it carries ``feedback_for``). Changes and returns ``hourly``."""
    for w in windows:
        if w.feedback_for or not w.feedback:
            continue
        hour = hour_of(parse_ts(w.end))
        hourly.setdefault((w.model, w.version), {}).setdefault(hour, LabelTotals()).add_feedback(
            normalise_feedback(w.feedback))
    return hourly


def realized_step(hourly: Mapping[datetime, LabelTotals], min_labels: int) -> int:
    """The smallest step of REALIZED_STEPS_H (hours) whose median bin with labels holds ``min_labels``; the
    largest when none does (and hourly when there are no labels at all)."""
    if not any(t.labelled > 0 for t in hourly.values()):
        return REALIZED_STEPS_H[0]
    for step in REALIZED_STEPS_H:
        bins = _bins(hourly, step)
        if bins and statistics.median(t.labelled for t in bins.values()) >= min_labels:
            return step
    return REALIZED_STEPS_H[-1]


def _bins(hourly: Mapping[datetime, LabelTotals], step: int) -> dict[datetime, LabelTotals]:
    out: dict[datetime, LabelTotals] = {}
    for hour, totals in hourly.items():
        if totals.labelled <= 0:
            continue
        t = hour.timestamp()
        start = datetime.fromtimestamp(t - t % (step * 3600), UTC)
        pooled = out.setdefault(start, LabelTotals())
        pooled.add(totals.labelled, totals.correct, totals.abs_error_sum, totals.abs_error_sq_sum)
        pooled.unspread += totals.unspread
    return out


def performance_trend(manifest: ReleaseManifest, estimates: Iterable[TrendPoint],
                      labels: Mapping[datetime, LabelTotals], performance: PerformanceThresholds,
                      realized: RealizedThresholds, end: datetime,
                      max_hours: int = MAX_HOURS) -> PerformanceTrend | None:
    """The chart of ``manifest``'s version over the ``max_hours`` hours ending at ``end``; None without data."""
    metric = "mae" if manifest.outputs.task == "regression" else "accuracy"
    first = hour_of(end) - timedelta(hours=max_hours - 1)
    points = [(datetime.fromisoformat(slot), e) for slot, scope in estimates if (e := scope.get(metric)) is not None]
    shown = {h: t for h, t in labels.items() if h >= first and t.labelled > 0}
    earlier = {h for h, _ in points if h < first} | {h for h, t in labels.items() if h < first and t.labelled > 0}
    step = realized_step(shown, realized.min_labels)
    bins = sorted(_bins(shown, step).items())
    judged = tuple(RealizedPoint(start, judge_realized(totals, manifest.outputs.task, manifest.metrics, realized))
                   for start, totals in bins)
    estimated = tuple(EstimatedPoint(h, e) for h, e in points if h >= first)
    if not estimated and not judged:
        return None
    reference = manifest.metrics.get(metric)
    return PerformanceTrend(
        manifest.name, manifest.version, metric, estimated, judged, step, reference,
        None if reference is None else estimate_threshold(metric, reference, performance),
        next((p.realized.threshold for p in judged), None), realized.min_labels,
        min([*(p.start for p in estimated), *(p.start for p in judged)]), len(earlier))


def performance_trends(trend: Mapping[tuple[str, int], list[TrendPoint]], labels: HourlyLabels,
                       references: Callable[[str, int], ReleaseManifest | None], performance: PerformanceThresholds,
                       realized: RealizedThresholds, end: datetime) -> dict[tuple[str, int], PerformanceTrend]:
    """Every version with an estimate or labels whose release is known, by (model, version)."""
    out = {}
    for key in sorted({*trend, *labels}):
        manifest = references(*key)
        if manifest is None:
            continue
        chart = performance_trend(manifest, trend.get(key, []), labels.get(key, {}), performance, realized, end)
        if chart is not None:
            out[key] = chart
    return out


__all__ = ["MAX_HOURS", "REALIZED_STEPS_H", "EstimatedPoint", "HourlyLabels", "PerformanceTrend", "RealizedPoint",
           "add_arrived_feedback", "performance_trend", "performance_trends", "realized_step"]

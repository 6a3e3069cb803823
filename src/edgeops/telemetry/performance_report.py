"""Performance, estimated without labels and realized from labels, as markdown for the monitor flow's
``edgeops-performance`` artifact (a table per version, then per version a chart over time and the hourly
estimates), and one line per scope for ``edgeops monitor run``. Kept apart from report.py (drift and fleet status).

The artifact is stored and sent to the browser at every look, so it stays bounded: a chart covers at most
performance_trends.MAX_HOURS hours and at most ``MAX_CHARTS`` versions are charted (current ones first).
"""

from __future__ import annotations

from edgeops.telemetry.drift import ScopeReport
from edgeops.telemetry.monitor import MonitorReport
from edgeops.telemetry.performance import Judged, TrendPoint
from edgeops.telemetry.performance_trends import PerformanceTrend
from edgeops.telemetry.report_charts import performance_chart

MAX_CHARTS = 8

ASSUMPTIONS = ("Estimated: from the predicted probabilities devices count (no labels), read with the calibration "
               "table each release measured on its holdout. It assumes the model's probabilities mean on live "
               "data what they meant on the holdout; a change in what the label means (concept shift) or in the "
               "label mix alone (label shift) does not show there. Realized: from labels, credited to the version "
               "and hour of the predictions they judge; where there are enough of them they are the final word "
               "(docs/monitoring.md).")


def performance_line(judged: Judged) -> str:
    """``churn@3 fleet: estimated accuracy 0.712 [0.688, 0.736] on 1,204 predictions (test 0.830) DEGRADED``."""
    scope = judged.scope
    where = "fleet" if scope.device is None else f"device {scope.device}"
    head = f"{scope.model}@{scope.version} {where}"
    estimate = judged.estimate
    if estimate is None:
        return f"{head}: performance not estimated ({judged.reason})"
    test = "" if estimate.reference is None else f" (test {estimate.reference:.3g})"
    verdict = {"degraded": " DEGRADED", "ok": " ok", "insufficient_data": " (no verdict)"}[judged.verdict]
    others = [e for e in scope.estimates if e.metric != estimate.metric]
    extra = "".join(f", {e.metric} {e.value:.3f}" for e in others)
    reason = f" [{judged.reason}]" if judged.reason else ""
    return (f"{head}: estimated {estimate.metric} {estimate.value:.3g} [{estimate.low:.3g}, {estimate.high:.3g}] "
            f"on {estimate.rows:,} predictions{test}{extra}{verdict}{reason}")


def performance_markdown(report: MonitorReport) -> str:
    level = report.performance_thresholds.confidence
    lines = [f"# Performance, {report.since:%Y-%m-%d %H:%M} → {report.generated:%Y-%m-%d %H:%M} UTC", "",
             ASSUMPTIONS, ""]
    fleet = [j for j in report.performance if j.scope.device is None]
    if not fleet and not report.performance_chart:
        return "\n".join([*lines, "No telemetry or labels with a known release in this window."])
    realized = {(s.model, s.version): s for s in report.fleet}
    if fleet:
        lines += [f"| release | metric | estimate | {level:.0%} interval | release's test value | threshold | "
                  "predictions | verdict | realized from labels |", "|---|---|---|---|---|---|---|---|---|"]
        lines += [_row(judged, realized.get((judged.scope.model, judged.scope.version))) for judged in fleet]
    retired = {(m, v) for m, v, d in report.retired if d is None}
    order = sorted(report.performance_chart, key=lambda key: (key in retired, key[0], -key[1]))
    for key in order[:MAX_CHARTS]:
        lines += _chart(report, report.performance_chart[key], key in retired)
        lines += _trend(f"{key[0]}@{key[1]}", report.performance_trend.get(key, []),
                        report.performance_thresholds.metric, level)
    if order[MAX_CHARTS:]:
        lines += ["", f"Not charted (at most {MAX_CHARTS} versions, current ones first): "
                  + ", ".join(f"{m}@{v}" for m, v in order[MAX_CHARTS:]) + "."]
    devices = [j for j in report.performance if j.scope.device is not None and j.verdict == "degraded"]
    if devices:
        lines += ["", "## Devices whose estimate is degraded", "", "| device | release | metric | estimate | "
                  f"{level:.0%} interval |", "|---|---|---|---|---|"]
        lines += [f"| {j.scope.device} | {j.scope.model}@{j.scope.version} | {j.estimate.metric} | "
                  f"{j.estimate.value:.3f} | {j.estimate.low:.3f}–{j.estimate.high:.3f} |"
                  for j in devices if j.estimate is not None]
    return "\n".join(lines)


def _chart(report: MonitorReport, trend: PerformanceTrend, retired: bool) -> list[str]:
    release = f"{trend.model}@{trend.version}"
    name = "accuracy" if trend.metric == "accuracy" else "MAE"
    png = performance_chart(trend, report.generated)
    step = "hour" if trend.step_hours == 1 else f"{trend.step_hours} hours"
    interval = "Wilson" if trend.metric == "accuracy" else "Student t"
    estimated = (f"Estimated {name} of the whole fleet per hour (line; band: its "
                 f"{report.performance_thresholds.confidence:.0%} interval)" if trend.estimated else
                 "No estimate (see the table)")
    realized = (f"realized {name} from labels per {step}, placed at the time of the predictions they judge (points; "
                f"bars: the {report.realized.confidence:.0%} {interval} interval; hollow: fewer than "
                f"{trend.min_labels} labels, too few for a verdict)" if trend.realized else
                "no labels for these predictions yet")
    parts = [f"{estimated}; {realized}."]
    if trend.reference is not None:
        parts.append(f"Solid line: the release's test {name} ({trend.reference:.3g}); dashed: the threshold the "
                     "estimate is judged against"
                     + (f" ({trend.estimate_threshold:.3g})" if trend.estimate_threshold is not None else "")
                     + "; dotted: the labels' threshold, where it differs.")
    if report.performance_thresholds.metric == "f1" and trend.metric == "accuracy":
        parts.append("The estimate's verdict is on F1 (table above); labels measure accuracy, so accuracy is charted.")
    if trend.left_out:
        parts.append(f"{trend.left_out} earlier hours with data are not charted.")
    head = f"## {release} over time" + (": **retired**, no device runs it any more" if retired else "")
    return ["", head, "", f"![Estimated and realized {name} over time, {release}](data:image/png;base64,{png})", "",
            " ".join(parts)]


def _trend(release: str, points: list[TrendPoint], metric: str, level: float, last: int = 24) -> list[str]:
    """The fleet's estimate per hour (the latest ``last`` hours with an estimate), oldest first."""
    shown = [(slot, e) for slot, scope in points[-last:] if (e := scope.get(metric) or scope.get("mae")) is not None]
    if not shown:
        return []
    lines = ["", f"### {release} per hour", "", f"| hour (UTC) | estimated {shown[0][1].metric} | {level:.0%} interval "
             "| predictions |", "|---|---|---|---|"]
    return lines + [f"| {slot[:16].replace('T', ' ')} | {e.value:.3g} | {e.low:.3g}–{e.high:.3g} | {e.rows:,} |"
                    for slot, e in shown]


def _row(judged: Judged, fleet: ScopeReport | None) -> str:
    scope, e = judged.scope, judged.estimate
    release = f"{scope.model}@{scope.version}"
    realized = fleet.health.realized if fleet is not None else None
    labels = "no labels" if realized is None or realized.value is None else \
        f"{realized.describe()}: {realized.verdict.replace('_', ' ')}"
    if e is None:
        return f"| {release} | – | – | – | – | – | – | not available: {judged.reason} | {labels} |"
    threshold = "–" if judged.threshold is None else f"{judged.threshold:.3g}"
    reference = "–" if e.reference is None else f"{e.reference:.3g}"
    verdict = judged.verdict.replace("_", " ") + (f" ({judged.reason})" if judged.reason else "")
    return (f"| {release} | {e.metric} | {e.value:.3g} | {e.low:.3g}–{e.high:.3g} | {reference} | {threshold} | "
            f"{e.rows:,} | {verdict} | {labels} |")

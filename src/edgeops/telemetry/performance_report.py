"""Performance estimated without labels, as markdown for the monitor flow's ``edgeops-performance`` artifact and
one line per scope for ``edgeops monitor run``. Kept apart from report.py (drift and fleet status)."""

from __future__ import annotations

from edgeops.performance import Judged, TrendPoint
from edgeops.telemetry.monitor import MonitorReport

ASSUMPTIONS = ("Estimated from the predicted probabilities devices count (no labels), read with the calibration "
               "table each release measured on its holdout. It assumes the model's probabilities mean on live "
               "data what they meant on the holdout; a change in what the label means (concept shift) or in the "
               "label mix alone (label shift) does not show here (docs/monitoring.md).")


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
    lines = [f"# Performance without labels, {report.since:%Y-%m-%d %H:%M} → {report.generated:%Y-%m-%d %H:%M} UTC",
             "", ASSUMPTIONS, ""]
    fleet = [j for j in report.performance if j.scope.device is None]
    if not fleet:
        return "\n".join([*lines, "No telemetry with a known release in this window."])
    lines += [f"| release | metric | estimate | {level:.0%} interval | release's test value | threshold | "
              "predictions | verdict |", "|---|---|---|---|---|---|---|---|"]
    for judged in fleet:
        lines.append(_row(judged))
    for (model, version), points in sorted(report.performance_trend.items()):
        lines += _trend(f"{model}@{version}", points, report.performance_thresholds.metric, level)
    devices = [j for j in report.performance if j.scope.device is not None and j.verdict == "degraded"]
    if devices:
        lines += ["", "## Devices whose estimate is degraded", "", "| device | release | metric | estimate | "
                  f"{level:.0%} interval |", "|---|---|---|---|---|"]
        lines += [f"| {j.scope.device} | {j.scope.model}@{j.scope.version} | {j.estimate.metric} | "
                  f"{j.estimate.value:.3f} | {j.estimate.low:.3f}–{j.estimate.high:.3f} |"
                  for j in devices if j.estimate is not None]
    return "\n".join(lines)


def _trend(release: str, points: list[TrendPoint], metric: str, level: float, last: int = 24) -> list[str]:
    """The fleet's estimate per hour (the latest ``last`` hours with an estimate), oldest first."""
    shown = [(slot, e) for slot, scope in points[-last:] if (e := scope.get(metric) or scope.get("mae")) is not None]
    if not shown:
        return []
    lines = ["", f"## {release} per hour", "", f"| hour (UTC) | estimated {shown[0][1].metric} | {level:.0%} interval "
             "| predictions |", "|---|---|---|---|"]
    return lines + [f"| {slot[:16].replace('T', ' ')} | {e.value:.3g} | {e.low:.3g}–{e.high:.3g} | {e.rows:,} |"
                    for slot, e in shown]


def _row(judged: Judged) -> str:
    scope, e = judged.scope, judged.estimate
    release = f"{scope.model}@{scope.version}"
    if e is None:
        return f"| {release} | – | – | – | – | – | – | not available: {judged.reason} |"
    threshold = "–" if judged.threshold is None else f"{judged.threshold:.3g}"
    reference = "–" if e.reference is None else f"{e.reference:.3g}"
    verdict = judged.verdict.replace("_", " ") + (f" ({judged.reason})" if judged.reason else "")
    return (f"| {release} | {e.metric} | {e.value:.3g} | {e.low:.3g}–{e.high:.3g} | {reference} | {threshold} | "
            f"{e.rows:,} | {verdict} |")

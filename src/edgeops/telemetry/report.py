"""Human-readable monitoring output for Prefect artifacts: the fleet status table and the drift report markdown.

The report shows trends, not snapshots: per model version, drift evidence per feature over time and health over
time (charts from report_charts, on data from trends), the latest check point, and a device × feature view.
"""

from __future__ import annotations

from typing import Any

from edgeops.config.monitor import DriftThresholds
from edgeops.telemetry.drift import ScopeReport
from edgeops.telemetry.monitor import MonitorReport
from edgeops.telemetry.realized import Realized
from edgeops.telemetry.report_charts import drift_trend_chart, health_chart, series_label
from edgeops.telemetry.trends import MAX_DEVICE_ROWS, MAX_SERIES, charted_series, device_drift, evidence_trend


def fleet_rows(report: MonitorReport) -> list[dict[str, Any]]:
    """One row per known device: presence, what it runs, and its drift, health and performance verdicts."""
    by_device = {(s.device, s.model, s.version): s for s in report.scopes if s.device is not None}
    estimated = {(j.scope.device, j.scope.model, j.scope.version): j.verdict for j in report.performance
                 if j.scope.device is not None}
    rows = []
    for dev in report.devices:
        key = (dev["device"], dev["model"], dev["version"])
        scope = by_device.get(key)
        rows.append({
            "device": dev["device"], "status": dev["status"] or "unknown", "state": dev["state"] or "",
            "release": f"{dev['model']}@{dev['version']}" if dev["model"] else "",
            "drift": scope.verdict if scope else "no telemetry", "drifted": ", ".join(scope.drifted) if scope else "",
            "health": scope.health.verdict if scope else "",
            "error_rate": _pct(scope.health.error_rate) if scope else "",
            "p95_ms": _num(scope.health.latency_p95_ms) if scope else "",
            "performance": _performance(estimated.get(key), scope.health.realized if scope else None),
        })
    return rows


def _performance(estimated: str | None, realized: Realized | None) -> str:
    """``degraded (realized)``, ``degraded (estimated)``, ``ok``, or empty without a verdict from either source."""
    verdicts = {"estimated": estimated, "realized": None if realized is None else realized.verdict}
    degraded = [source for source, verdict in verdicts.items() if verdict == "degraded"]
    if degraded:
        return f"degraded ({', '.join(degraded)})"
    return "ok" if "ok" in verdicts.values() else ""


def drift_markdown(report: MonitorReport, thresholds: DriftThresholds | None = None) -> str:
    """Per model version: health and drift over time (charts), the latest check point (table), and which devices
    drift on what. Versions no device runs any more come last, marked retired: their history stays readable."""
    thresholds = thresholds or report.thresholds
    series = max((len(s.features) + (s.prediction is not None) for s in report.fleet), default=1)
    lines = [f"# Drift and health, {report.since:%Y-%m-%d %H:%M} → {report.generated:%Y-%m-%d %H:%M} UTC", "",
             f"Drift test: {thresholds.describe(series)}. PSI and JS are effect sizes, shown with the value "
             "expected from sampling noise alone.", ""]
    if not report.fleet:
        lines.append("No telemetry with a known reference in this window.")
    retired = [s for s in report.fleet if report.is_retired(s)]
    for scope in report.current:
        lines += _scope_section(report, scope, thresholds)
    if retired:
        lines += ["# Retired versions", "", "No device that sent their telemetry runs them any more (each now "
                  "reports another release); shown for the record.", ""]
        for scope in retired:
            lines += _scope_section(report, scope, thresholds)
    if report.unreferenced:
        lines += ["", f"Telemetry without a manifest in the registry: {', '.join(report.unreferenced)}"]
    return "\n".join(lines) + "\n"


def _scope_section(report: MonitorReport, scope: ScopeReport, thresholds: DriftThresholds) -> list[str]:
    h = scope.health
    size = f"{scope.devices} devices, {scope.windows} windows"
    head = (f"## {scope.model}@{scope.version}: **retired**, no device runs it any more (at the end of the span: "
            f"{scope.verdict}; {size})" if report.is_retired(scope) else
            f"## {scope.model}@{scope.version}: **{scope.verdict}** ({size})")
    lines = [head, "",
             f"Health **{h.verdict}**: {h.requests} requests, error rate {_pct(h.error_rate)}, p95 latency "
             f"{_num(h.latency_p95_ms)} ms (window max {_num(h.latency_p95_max_ms)}), accuracy {_num(h.accuracy)}, "
             f"MAE {_num(h.mae)}" + (f", realized {h.realized.describe()} ({h.realized.verdict})"
                                     if h.realized is not None and h.realized.value is not None else "")
             + (f" — {h.reason}" if h.reason else ""), ""]
    lines += _drift_trend(report, scope)
    lines += ["Latest check point (last windows pooled):", "",
              "| feature | n | PSI (noise) | JS (noise) | chi-square p | verdict |", "|---|---:|---:|---:|---:|---|"]
    results = [*scope.features, *([scope.prediction] if scope.prediction else [])]
    drifted = set(scope.drifted)          # the open episode's series are "drift" even if the latest point is calm
    for r in results:
        verdict = "drift" if r.name in drifted else r.verdict
        lines.append(f"| {series_label(r.name)} | {r.n} | {_num(r.psi)} ({_num(r.psi_noise)}) | {_num(r.js)} "
                     f"({_num(r.js_noise)}) | {_num(r.p_value, '.2g')} | {verdict} |")
    if scope.timeline is not None and scope.timeline.active:
        lines += ["", f"Drift episode open since {scope.timeline.opened}: "
                  f"{', '.join(series_label(n) for n in scope.timeline.drifted)}."]
    lines += _health_trend(report, scope)
    lines += device_feature_markdown(report, scope)
    return [*lines, ""]


def _drift_trend(report: MonitorReport, scope: ScopeReport) -> list[str]:
    timeline = scope.timeline
    trend = evidence_trend(timeline, report.buckets) if timeline is not None else None
    if timeline is None or trend is None:
        return []
    shown = charted_series(trend, scope.drifted)
    png = drift_trend_chart(trend, shown, (trend.times[0], report.generated))
    step = "each check point" if report.buckets.width <= report.thresholds.window_s else \
        f"the strongest check point of each {_duration(report.buckets.width)}"
    left = len(trend.series) - len(shown)
    return [f"![Drift evidence per feature over time, {scope.model}@{scope.version}](data:image/png;base64,{png})",
            "", f"Drift over time: −log10 p of the two-sample test per feature ({step}); dashed line: the decision "
            f"level p < {timeline.alpha:.2g} (−log10 = {trend.decision:.1f}). Red: a check point rejected the "
            "feature there; ▲: evidence beyond the chart's top; shaded: the open drift episode, on its features."
            + (f" {left} quieter series not charted." if left else ""), ""]


def _health_trend(report: MonitorReport, scope: ScopeReport) -> list[str]:
    points = report.health_trend.get((scope.model, scope.version), [])
    if not points:
        return []
    limit = report.health_limits.max_error_rate
    png = health_chart(points, report.buckets.width, limit, (points[0].start, report.generated))
    return ["", f"![Health over time, {scope.model}@{scope.version}](data:image/png;base64,{png})", "",
            f"Health over time, all devices, per {_duration(report.buckets.width)}: requests, latency p50/p95/p99 "
            "(count-weighted mean of the windows' quantiles) and error rate (dashed: the "
            f"{limit:.0%} limit)."]


def device_feature_markdown(report: MonitorReport, scope: ScopeReport, max_rows: int = MAX_DEVICE_ROWS) -> list[str]:
    """Which devices drift on what: per device, the check points that rejected each series in the span (**drift**:
    in the device's open episode); devices with drift first, at most ``max_rows`` rows."""
    rows = device_drift(report.scopes, scope.model, scope.version)
    if not rows:
        return []
    names = list(scope.timeline.series) if scope.timeline is not None else []
    if len(names) > MAX_SERIES:       # keep the series some device rejected, most rejected first
        hits = {n: sum(r.rejections.get(n, 0) for r in rows) for n in names}
        keep = set(sorted((n for n in names if hits[n]), key=lambda n: -hits[n])[:MAX_SERIES])
        quiet = len(names) - len(keep)
        names = [n for n in names if n in keep]
    else:
        quiet = 0
    lines = ["", f"### Devices × features, {scope.model}@{scope.version}", "",
             "Check points that rejected each feature in the span; **drift**: part of the device's open episode.", "",
             "| device | verdict | check points | " + " | ".join(series_label(n) for n in names) + " |",
             "|---|---|---:|" + "---:|" * len(names)]
    by_scope = {s.device: s for s in report.scopes if (s.model, s.version) == (scope.model, scope.version)}
    for row in rows[:max_rows]:
        device_scope = by_scope[row.device]
        verdict = "moved on" if report.is_retired(device_scope) else device_scope.verdict
        cells = [(f"**drift** {row.rejections.get(n, 0)}" if n in row.open else str(row.rejections.get(n, 0) or "·"))
                 for n in names]
        lines.append(f"| {row.device} | {'**drift**' if verdict == 'drift' else verdict} | {row.checks} | "
                     + " | ".join(cells) + " |")
    rest = rows[max_rows:]
    if rest:
        drifting = sum(1 for r in rest if r.open)
        earlier = sum(1 for r in rest if not r.open and any(r.rejections.values()))
        lines += ["", f"{len(rest)} more devices not shown ({drifting} with an open episode, {earlier} with earlier "
                  "rejections, the rest quiet)."]
    if quiet:
        lines += ["", f"{quiet} series no device's check rejected in the span are not shown."]
    return lines


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:g} h" if seconds >= 3600 and seconds % 3600 == 0 else \
        f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.2%}"


def _num(value: float | None, spec: str = ".3f") -> str:
    return "–" if value is None else format(value, spec)

"""Human-readable monitoring output: the fleet status table and the drift report markdown (for Prefect artifacts).

The chart is a PNG embedded as a ``data:image/png;base64,`` image: Prefect's UI renders markdown images but not
inline ``<svg>``. matplotlib runs on the Agg backend (no display needed).
"""

from __future__ import annotations

import base64
import io
from typing import Any

from edgeops.drift import PREDICTION, ScopeReport
from edgeops.drift_checks import DriftThresholds
from edgeops.telemetry.monitor import MonitorReport


def fleet_rows(report: MonitorReport) -> list[dict[str, Any]]:
    """One row per known device: presence, what it runs, and its drift and health verdicts."""
    by_device = {(s.device, s.model, s.version): s for s in report.scopes if s.device is not None}
    rows = []
    for dev in report.devices:
        scope = by_device.get((dev["device"], dev["model"], dev["version"]))
        rows.append({
            "device": dev["device"], "status": dev["status"] or "unknown", "state": dev["state"] or "",
            "release": f"{dev['model']}@{dev['version']}" if dev["model"] else "",
            "drift": scope.verdict if scope else "no telemetry", "drifted": ", ".join(scope.drifted) if scope else "",
            "health": scope.health.verdict if scope else "",
            "error_rate": _pct(scope.health.error_rate) if scope else "",
            "p95_ms": _num(scope.health.latency_p95_ms) if scope else "",
        })
    return rows


def drift_markdown(report: MonitorReport, thresholds: DriftThresholds | None = None) -> str:
    thresholds = thresholds or report.thresholds
    series = max((len(s.features) + (s.prediction is not None) for s in report.fleet), default=1)
    lines = [f"# Drift and health, {report.since:%Y-%m-%d %H:%M} → {report.generated:%Y-%m-%d %H:%M} UTC", "",
             f"Drift test: {thresholds.describe(series)}. PSI and JS are effect sizes, shown with the value "
             "expected from sampling noise alone.", ""]
    if not report.fleet:
        lines.append("No telemetry with a known reference in this window.")
    for scope in report.fleet:
        lines += _scope_section(scope, thresholds)
    if report.unreferenced:
        lines += ["", f"Telemetry without a manifest in the registry: {', '.join(report.unreferenced)}"]
    drifting = [s for s in report.scopes if s.device is not None and s.verdict == "drift"]
    if drifting:
        lines += ["", "## Devices with drift", "", "| device | release | drifted |", "|---|---|---|"]
        lines += [f"| {s.device} | {s.model}@{s.version} | {', '.join(s.drifted)} |" for s in drifting]
    return "\n".join(lines) + "\n"


def _scope_section(scope: ScopeReport, thresholds: DriftThresholds) -> list[str]:
    h = scope.health
    lines = [f"## {scope.model}@{scope.version}: **{scope.verdict}** ({scope.devices} devices, {scope.windows} "
             "windows)", "",
             f"Health **{h.verdict}**: {h.requests} requests, error rate {_pct(h.error_rate)}, p95 latency "
             f"{_num(h.latency_p95_ms)} ms (window max {_num(h.latency_p95_max_ms)}), accuracy {_num(h.accuracy)}, "
             f"MAE {_num(h.mae)}" + (f", realized {h.realized.describe()} ({h.realized.verdict})"
                                     if h.realized is not None and h.realized.value is not None else "")
             + (f" — {h.reason}" if h.reason else ""), "",
             "Latest check point (last windows pooled):", "",
             "| feature | n | PSI (noise) | JS (noise) | chi-square p | verdict |", "|---|---:|---:|---:|---:|---|"]
    results = [*scope.features, *([scope.prediction] if scope.prediction else [])]
    drifted = set(scope.drifted)          # the open episode's series are "drift" even if the latest point is calm
    for r in results:
        name = "predictions" if r.name == PREDICTION else r.name
        lines.append(f"| {name} | {r.n} | {_num(r.psi)} ({_num(r.psi_noise)}) | {_num(r.js)} ({_num(r.js_noise)}) | "
                     f"{_num(r.p_value, '.2g')} | {'drift' if r.name in drifted else r.verdict} |")
    if scope.timeline is not None and scope.timeline.active:
        lines += ["", f"Drift episode open since {scope.timeline.opened}: {', '.join(scope.timeline.drifted)}."]
    png = psi_chart(scope, thresholds)
    if png:
        lines += ["", f"![PSI per feature, {scope.model}@{scope.version}](data:image/png;base64,{png})"]
    return [*lines, ""]


def psi_chart(scope: ScopeReport, thresholds: DriftThresholds) -> str | None:
    """A horizontal bar chart of PSI per feature (threshold marked), as base64 PNG; None without statistics."""
    results = [r for r in (*scope.features, *([scope.prediction] if scope.prediction else [])) if r.psi is not None]
    if not results:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    names = ["predictions" if r.name == PREDICTION else r.name for r in results]
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(results) + 1.2), dpi=80)
    drifted = set(scope.drifted)
    ax.barh(names, [r.psi or 0.0 for r in results],
            color=["#d62728" if r.verdict == "drift" or r.name in drifted else "#1f77b4" for r in results])
    ax.scatter([r.psi_noise or 0.0 for r in results], names, color="#444", marker="|", s=200, zorder=3)
    ax.set_xlabel("PSI of the latest check point (tick: expected from noise alone)")
    ax.invert_yaxis()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.2%}"


def _num(value: float | None, spec: str = ".3f") -> str:
    return "–" if value is None else format(value, spec)

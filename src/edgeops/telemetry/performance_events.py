"""``edgeops.performance.degraded``: one event per episode of a model version performing below its release's own
test metric, found by the estimate (no labels, performance.py) or by realized performance (labels, realized.py).

One episode per (model, version, scope) for both sources, so the retrain trigger starts one retrain for one
problem: when the estimate has already opened the episode, the labels that confirm it later raise nothing new.
The episode is open while either source says ``degraded`` and closes when neither does and at least one says
``ok`` (labels are the final word, but they cover a week and the estimate the last hours, so either one seeing the
problem keeps it open); ``insufficient_data`` from both leaves it as it is. The payload's ``source`` says which
found it (``realized`` when both did), its flat fields are that source's figures, and ``estimated`` / ``realized``
hold both sources' figures.

A version no device runs any more (MonitorReport.retired) raises no new event and its episode is left as it is:
retraining a model nobody serves fixes nothing, and its late labels still show in the report.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from typing import Any

from edgeops.telemetry.drift import Scope, ScopeReport
from edgeops.telemetry.events import EventSpec, performance_event
from edgeops.telemetry.performance import Judged
from edgeops.telemetry.realized import Realized
from edgeops.telemetry.store import TelemetryStore


def _estimated(judged: Judged | None) -> dict[str, Any] | None:
    if judged is None or judged.estimate is None:
        return None
    return {**judged.estimate.to_dict(), "threshold": judged.threshold, "verdict": judged.verdict,
            "reason": judged.reason}


def _findings(judged: Judged | None, realized: Realized | None) -> dict[str, str]:
    """Each source's verdict, for the sources that have one."""
    out: dict[str, str] = {}
    if judged is not None and judged.estimate is not None and judged.verdict != "insufficient_data":
        out["estimated"] = judged.verdict
    if realized is not None and realized.verdict != "insufficient_data":
        out["realized"] = realized.verdict
    return out


def performance_events(store: TelemetryStore, performance: Iterable[Judged], reports: Iterable[ScopeReport],
                       retired: Container[Scope]) -> list[EventSpec]:
    """Advance every current scope's performance episode; an event for each that opens (the monitor's report
    in parts, so this module needs nothing of monitor.py, which calls it)."""
    estimated: dict[Scope, Judged] = {(j.scope.model, j.scope.version, j.scope.device): j for j in performance}
    scopes: dict[Scope, ScopeReport] = {(s.model, s.version, s.device): s for s in reports}
    events = []
    for key in sorted({*estimated, *scopes}, key=lambda k: (k[0], k[1], k[2] or "")):
        if key in retired:
            continue
        model, version, device = key
        judged, scope = estimated.get(key), scopes.get(key)
        realized = scope.health.realized if scope is not None else None
        findings = _findings(judged, realized)
        if not findings:
            continue
        degraded = [source for source, verdict in findings.items() if verdict == "degraded"]
        source = "realized" if "realized" in degraded else "estimated" if degraded else None
        figures = {"estimated": _estimated(judged), "realized": None if realized is None else realized.to_dict()}
        flat = figures[source] if source is not None else {}
        windows = scope.windows if scope is not None else judged.scope.windows if judged is not None else 0
        detail = {"scope": device or "fleet", "windows": windows, **(flat or {}), "source": source,
                  "sources": degraded, **figures}
        if store.set_episode("performance", model, version, device or "*", bool(degraded), detail):
            events.append(performance_event(model, version, device, detail))
    return events


__all__ = ["performance_events"]

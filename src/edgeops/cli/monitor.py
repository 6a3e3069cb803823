"""``edgeops monitor run``: drift and health of every deployed model version, fleet-wide and per device.

Exit codes a script can branch on (docs/cli.md): 0 judged (whatever the verdicts, unless ``--fail-on``),
5 drift and 6 degraded (health, or performance estimated or realized) when asked for with ``--fail-on`` (7 when
both were found), 1 error, 2 usage error.
"""

from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edgeops.cli.common import (
    EXIT_DEGRADED,
    EXIT_DRIFT,
    ConfigOption,
    DbOption,
    JsonOption,
    load_project_config,
    plural,
    print_json,
    user_errors,
)

if TYPE_CHECKING:
    from edgeops.config.monitor import DriftThresholds
    from edgeops.telemetry.drift import HealthThresholds, ScopeReport

app = typer.Typer(no_args_is_help=True)  # its help: SUBCOMMANDS in cli/__init__.py


@app.callback()
def monitor() -> None:
    """Drift and health from stored telemetry (a group, so ``monitor run`` keeps its name)."""


class FailOn(StrEnum):
    drift = "drift"
    degraded = "degraded"
    performance = "performance"


@app.command("run")
def run(
    model: Annotated[str | None, typer.Option(help="Only this model (default: every model with telemetry).")] = None,
    db: DbOption = None,
    hours: Annotated[float | None, typer.Option(
        min=0.01, help="Telemetry of the last N hours (default: monitor.hours of the config, else 24).")] = None,
    manifest: Annotated[list[Path] | None, typer.Option(
        help="Reference manifest file(s) instead of the registry (repeatable).")] = None,
    devices: Annotated[bool, typer.Option("--devices/--fleet-only", help="Also report each device.")] = True,
    false_alarms: Annotated[float | None, typer.Option(
        help="Expected false drift episodes per device (and fleet) per 30 days (default: 0.5).")] = None,
    window_s: Annotated[float | None, typer.Option(
        help="Check-point length in seconds: windows ending in one such slot are judged together "
             "(default: 60).")] = None,
    recent_windows: Annotated[int | None, typer.Option(
        help="Also test the last N check points pooled (default: 3).")] = None,
    recovery_windows: Annotated[int | None, typer.Option(
        help="A drift episode ends after N quiet check points in a row (default: 10).")] = None,
    label_hours: Annotated[float | None, typer.Option(
        min=0.01, help="Labels count for the predictions of the last N hours (default: monitor.labels.hours, 168).")
    ] = None,
    min_labels: Annotated[int | None, typer.Option(
        min=1, help="No accuracy / MAE verdict before N labels per version and scope (default: 50).")] = None,
    confidence: Annotated[float | None, typer.Option(
        min=0.5, max=0.9999, help="Confidence level of the accuracy / MAE interval (default: 0.95).")] = None,
    accuracy_tolerance: Annotated[float | None, typer.Option(
        min=0.0, max=1.0, help="Degraded when accuracy is surely below test accuracy minus this (default: 0.05).")
    ] = None,
    mae_tolerance: Annotated[float | None, typer.Option(
        min=0.0, help="Degraded when MAE is surely above test MAE × (1 + this) (default: 0.25).")] = None,
    min_accuracy: Annotated[float | None, typer.Option(
        min=0.0, max=1.0, help="An absolute minimum accuracy instead of the relative one.")] = None,
    max_mae: Annotated[float | None, typer.Option(
        min=0.0, help="An absolute maximum MAE instead of the relative one.")] = None,
    fail_on: Annotated[list[FailOn] | None, typer.Option(
        help="Exit 5 when a fleet-wide scope of a version some device runs drifted, 6 when its health (errors, "
             "latency) or its performance (estimated without labels, or realized from labels) is degraded "
             "(7: both); repeatable: drift, degraded, performance.")] = None,
    json_out: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Judge every check point of the stored telemetry against each release's reference (two-sample chi-square,
    false alarms budgeted per month; PSI and JS as effect sizes) and check health, with realized accuracy / MAE
    from labels (an interval, a verdict only with enough labels, against the release's test metrics), and estimate
    performance without labels (edgeops.yaml ``monitor.performance``). Defaults come from edgeops.yaml
    ``monitor``; options override them."""
    from edgeops.telemetry.drift import HealthThresholds
    from edgeops.telemetry.monitor import (
        drift_thresholds,
        manifest_references,
        performance_thresholds,
        realized_thresholds,
        registry_references,
        run_monitor,
    )
    from edgeops.telemetry.performance_report import performance_line
    from edgeops.telemetry.store import TelemetryStore

    cfg = load_project_config(config)
    health = HealthThresholds()
    with user_errors():
        thresholds = drift_thresholds(cfg.monitor.drift, false_alarms=false_alarms, window_s=window_s,
                                      recent_windows=recent_windows, recovery_windows=recovery_windows)
        realized = realized_thresholds(cfg.monitor.labels, min_labels=min_labels, confidence=confidence,
                                       accuracy_tolerance=accuracy_tolerance, mae_tolerance=mae_tolerance,
                                       min_accuracy=min_accuracy, max_mae=max_mae)
        performance = performance_thresholds(cfg.monitor.performance)
        span = hours if hours is not None else cfg.monitor.hours
        label_span = label_hours if label_hours is not None else cfg.monitor.labels.hours
        references = manifest_references(manifest) if manifest else registry_references(cfg.registry)
        store = TelemetryStore(db or cfg.telemetry.url)
        try:
            report = run_monitor(store, references, model=model, window=timedelta(hours=span), per_device=devices,
                                 thresholds=thresholds, health=health, realized=realized,
                                 label_window=timedelta(hours=label_span), performance=performance)
        finally:
            store.close()
    if json_out:
        print_json(report.to_dict())
    else:
        if not report.scopes:
            typer.echo(f"no telemetry with a known reference in the last {span:g} h")
        for scope in report.scopes:
            typer.echo(scope_line(scope, thresholds, health, retired=report.is_retired(scope)))
        for judged in report.performance:
            typer.echo(performance_line(judged))
        for ref in report.unreferenced:
            typer.echo(f"{ref}: telemetry but no manifest (not in the registry; pass --manifest)", err=True)
        series = max((len(s.features) + (s.prediction is not None) for s in report.scopes), default=1)
        typer.echo(f"thresholds: last {span:g} h; drift: {thresholds.describe(series)}; a feature is tested once "
                   f"two of its bins expect >= {thresholds.min_expected:g} values; health: error rate > "
                   f"{health.max_error_rate:.0%}, judged from {health.min_requests} requests; labels of the last "
                   f"{label_span:g} h: {realized.describe()}")
    wanted = {f.value for f in fail_on or []}
    failing = {
        "drift": [f"{s.model}@{s.version}" for s in report.current if "drift" in wanted and s.verdict == "drift"],
        "degraded": [f"{s.model}@{s.version}" for s in report.current
                     if "degraded" in wanted and s.health.verdict == "degraded"],
        "performance": [f"{j.scope.model}@{j.scope.version} (estimated performance)" for j in report.performance
                        if "performance" in wanted and j.scope.device is None and j.verdict == "degraded"
                        and (j.scope.model, j.scope.version, None) not in report.retired]
        + [f"{s.model}@{s.version} (realized performance)" for s in report.current if "performance" in wanted
           and s.health.realized is not None and s.health.realized.verdict == "degraded"],
    }
    for what, refs in failing.items():
        if refs:
            typer.echo(f"failing (--fail-on {what}): " + ", ".join(refs), err=True)
    code = (EXIT_DRIFT if failing["drift"] else 0) | \
        (EXIT_DEGRADED if failing["degraded"] or failing["performance"] else 0)
    if code:
        raise typer.Exit(code)


def scope_line(scope: "ScopeReport", thresholds: "DriftThresholds", health_thresholds: "HealthThresholds",
               retired: bool = False) -> str:
    """One readable line per model version and scope, e.g.
    ``churn@3 fleet (4 devices, 96 windows): DRIFT in tenure, __prediction__ | errors 0.4% p95 12.0 ms``;
    ``retired``: no device that sent the scope's windows runs that version any more (MonitorReport.retired)."""
    where = "fleet" if scope.device is None else f"device {scope.device}"
    head = f"{scope.model}@{scope.version} {where} ({plural(scope.devices, 'device')}, " \
           f"{plural(scope.windows, 'window')})"
    if retired:
        head += " — RETIRED (no device runs it any more)" if scope.device is None else \
            " — MOVED ON (the device runs another release)"
    results = [*scope.features, *([scope.prediction] if scope.prediction else [])]
    by_name = {r.name: r for r in results}
    if scope.verdict == "drift":
        opened = f" since {scope.timeline.opened}" if scope.timeline is not None and scope.timeline.opened else ""
        drift = f"DRIFT{opened} in " + ", ".join(
            _name(n) + (f" (PSI {by_name[n].psi:.2f}, JS {by_name[n].js:.2f})"
                        if n in by_name and by_name[n].psi is not None and by_name[n].js is not None else "")
            for n in scope.drifted)
    elif scope.verdict == "ok":
        judged = [r for r in results if r.p_value is not None]
        worst = min(judged, key=lambda r: r.p_value or 1.0)
        drift = f"no drift (lowest p {worst.p_value:.2g} in {_name(worst.name)}, PSI {worst.psi:.3f})"
    else:
        most = max((r.n for r in results), default=0)
        drift = (f"not enough data for drift (at most {plural(most, 'observation')} per feature; a test needs two "
                 f"bins expected to hold >= {thresholds.min_expected:g} values each)")
    h = scope.health
    if h.verdict == "insufficient_data":
        health = f"health: not enough data ({plural(h.requests, 'request')}, judged from " \
                 f"{health_thresholds.min_requests})"
    else:
        health = f"health {h.verdict}: {plural(h.requests, 'request')}"
    if h.error_rate is not None:
        health += f", errors {h.error_rate:.1%}"
    if h.latency_p95_ms is not None:
        health += f", p95 {h.latency_p95_ms:.1f} ms (max {h.latency_p95_max_ms:.1f})"
    labels = ""
    if h.realized is not None and h.realized.value is not None:   # realized performance: judged apart from health
        labels = f" | realized {h.realized.describe()}"
        if h.realized.threshold is not None:
            labels += f" (threshold {h.realized.threshold:.3g})"
        labels += {"degraded": " DEGRADED", "ok": " ok"}.get(h.realized.verdict, " (no verdict)")
    elif h.accuracy is not None:
        health += f", accuracy {h.accuracy:.3f}"
    elif h.mae is not None:
        health += f", MAE {h.mae:.3g}"
    reason = f" [{h.reason}]" if h.reason and h.verdict != "insufficient_data" else ""
    return f"{head}: {drift} | {health}{reason}" + labels


def _name(name: str) -> str:
    from edgeops.telemetry.drift import PREDICTION

    return "predictions" if name == PREDICTION else name

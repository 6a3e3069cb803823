"""``edgeops monitor run``: drift and health of every deployed model version, fleet-wide and per device."""

from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from ..drift import PREDICTION, ScopeReport
from ..telemetry.monitor import manifest_references, registry_references, run_monitor
from ..telemetry.store import DEFAULT_DB_URL, TelemetryStore
from .common import ConfigOption, JsonOption, load_project_config, print_json, user_errors

app = typer.Typer(help="Drift and health from stored telemetry.", no_args_is_help=True)


@app.callback()
def monitor() -> None:
    """Drift and health from stored telemetry (a group, so ``monitor run`` keeps its name)."""


@app.command("run")
def run(
    model: Annotated[str | None, typer.Option(help="Only this model (default: every model with telemetry).")] = None,
    db: Annotated[str, typer.Option("--db", help="Telemetry store URL.")] = DEFAULT_DB_URL,
    hours: Annotated[float, typer.Option(min=0.01, help="Sliding window: telemetry of the last N hours.")] = 24.0,
    manifest: Annotated[list[Path] | None, typer.Option(
        help="Reference manifest file(s) instead of the registry (repeatable).")] = None,
    devices: Annotated[bool, typer.Option("--devices/--fleet-only", help="Also report each device.")] = True,
    json_out: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Compare summed telemetry with each release's reference bins (PSI, JS, chi-square) and check health."""
    cfg = load_project_config(config)
    with user_errors():
        references = manifest_references(manifest) if manifest else registry_references(cfg.registry.root)
        store = TelemetryStore(db)
        report = run_monitor(store, references, model=model, window=timedelta(hours=hours), per_device=devices)
        store.close()
    if json_out:
        print_json(report.to_dict())
        return
    if not report.scopes:
        typer.echo(f"no telemetry with a known reference in the last {hours:g} h")
    for scope in report.scopes:
        typer.echo(scope_line(scope))
    for ref in report.unreferenced:
        typer.echo(f"{ref}: telemetry but no manifest (not in the registry; pass --manifest)", err=True)


def scope_line(scope: ScopeReport) -> str:
    """One readable line per model version and scope, e.g.
    ``churn@3 fleet (4 devices, 96 windows): DRIFT in tenure, __prediction__ | errors 0.4% p95 12.0 ms``."""
    where = "fleet" if scope.device is None else f"device {scope.device}"
    head = f"{scope.model}@{scope.version} {where} ({scope.devices} devices, {scope.windows} windows)"
    results = [*scope.features, *([scope.prediction] if scope.prediction else [])]
    if scope.verdict == "drift":
        drift = "DRIFT in " + ", ".join(
            f"{r.name} (PSI {r.psi:.2f}, JS {r.js:.2f})" for r in results if r.verdict == "drift")
    elif scope.verdict == "ok":
        worst = max((r for r in results if r.psi is not None), key=lambda r: r.psi or 0.0)
        drift = f"no drift (max PSI {worst.psi:.3f} in {worst.name if worst.name != PREDICTION else 'predictions'})"
    else:
        drift = "not enough data for drift"
    h = scope.health
    health = f"health {h.verdict}: {h.requests} requests"
    if h.error_rate is not None:
        health += f", errors {h.error_rate:.1%}"
    if h.latency_p95_ms is not None:
        health += f", p95 {h.latency_p95_ms:.1f} ms (max {h.latency_p95_max_ms:.1f})"
    if h.accuracy is not None:
        health += f", accuracy {h.accuracy:.3f}"
    if h.mae is not None:
        health += f", MAE {h.mae:.3g}"
    return f"{head}: {drift} | {health}" + (f" [{h.reason}]" if h.reason else "")

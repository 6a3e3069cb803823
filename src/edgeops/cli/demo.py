"""``edgeops demo``: the continuous-training loop end to end on this machine, in one command (docs/demo.md)."""

import json
import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from edgeops.cli.common import EXIT_ERROR, JsonOption, fail, user_errors

EXIT_NOT_CLOSED = 4
"""The services ran but the loop did not close (timeout, failed retrain): distinct from a start-up error."""


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def summary_lines(result: Any) -> list[str]:
    drift = result.drift or {}
    psi = (drift.get("psi") or {}).get(result.drift_feature) if result.drift_feature else None
    devices = ", ".join(f"{d}@{v}" for d, v in result.devices.items()) or "-"
    on_new = sum(v == result.version_after and v is not None for v in result.devices.values())
    lines = [
        "",
        f"{'LOOP CLOSED' if result.closed else 'LOOP NOT CLOSED'} in {result.seconds:.1f} s",
        f"  drift:        '{result.drift_feature or '-'}'" + (f" (fleet PSI {psi})" if psi is not None else ""),
        f"  model:        churn@{result.version_before or '-'} → churn@{result.version_after or '-'} "
        f"(champion {result.champion or '-'}; retrain run {result.retrain_run or '-'})",
        f"  agents on v{result.version_after or '?'}: {on_new}/{len(result.devices) or '?'} ({devices})",
        f"  Prefect UI:   {result.prefect_ui or '-'}",
        f"  work dir:     {result.work_dir} (logs/ holds every process's log)",
        "  milestones:   " + ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items()),
    ]
    if not result.closed:
        lines.append(f"  reason:       {result.reason}")
    return lines


def demo(agents: Annotated[int, typer.Option("--agents", min=1, max=20, help="Edge agents to start.")] = 3,
         timeout: Annotated[float, typer.Option("--timeout", min=30, help="Seconds the loop may take.")] = 240.0,
         keep_running: Annotated[bool, typer.Option(
             "--keep-running", help="Leave everything up after the loop (look around in the Prefect UI); "
                                    "Ctrl-C stops it.")] = False,
         work_dir: Annotated[Path, typer.Option("--work-dir", help="Where keys, registry, data, agents and logs "
                                                "go (wiped at the start when it is a previous demo's).")]
         = Path(".edgeops/demo"),
         json_out: JsonOption = False) -> None:
    """Start a broker, Prefect and N agents; ship v1; shift a feature; watch drift trigger a retrain and the
    canary rollout of v2. Exit 0 only when every agent runs v2 within --timeout."""
    from edgeops.demo.parts import DemoOptions
    from edgeops.demo.run import run_demo

    def say(line: str) -> None:
        typer.echo(line, err=json_out)

    def when_done(result: Any) -> None:
        for line in summary_lines(result):
            say(line)
        if json_out:
            typer.echo(json.dumps(result.to_json(), indent=2, default=str))
        if keep_running and result.prefect_ui:
            say(f"\neverything keeps running: open {result.prefect_ui} (flow runs, artifacts, events, "
                "automations); Ctrl-C stops it all")
            with_stop = threading.Event()
            try:
                while not with_stop.wait(3600):
                    pass
            except KeyboardInterrupt:
                say("stopping ...")

    previous = signal.signal(signal.SIGTERM, _interrupt)
    # Ctrl-C must stop the demo even when it was started with SIGINT ignored (a background job of a script).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with user_errors():
            result = run_demo(DemoOptions(work_dir=work_dir, agents=agents, timeout_s=timeout), say,
                              stop_when_done=when_done)
    except KeyboardInterrupt:
        fail("demo: interrupted; every process it started has been stopped", EXIT_ERROR)
    finally:
        signal.signal(signal.SIGTERM, previous)
    say("stopped every process the demo started")
    if not result.closed:
        fail(f"demo: {result.reason}", EXIT_NOT_CLOSED)

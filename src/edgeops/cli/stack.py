"""``edgeops up`` / ``edgeops down`` / ``edgeops status``: the project's local control plane (docs/cli.md).

The stack's modules (paho, httpx, the Prefect helpers) are imported inside the commands, so registering these
commands costs the CLI nothing. Progress goes to stderr; the summary (or ``--json``) to stdout.
"""

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from edgeops.cli.common import ConfigOption, JsonOption, load_project_config, print_json, user_errors

if TYPE_CHECKING:
    from edgeops.stack.probe import ServiceStatus
    from edgeops.stack.state import StackState

EXIT_DOWN = 3
"""``status``: no stack runs in this project (no state file, or none of its processes runs)."""
EXIT_PARTLY_DOWN = 4
"""``status``: the stack runs, but a service has stopped or does not answer (``edgeops up`` restarts it)."""


def _say(line: str) -> None:
    typer.echo(line, err=True)


def _rows(state: "StackState", statuses: list["ServiceStatus"] | None = None) -> list[str]:
    if statuses is None:
        from edgeops.stack.probe import ServiceStatus

        statuses = [ServiceStatus(s.name, s.pid, True, s.url, True, "", s.log) for s in state.services]
    cells = [("SERVICE", "PID", "RUNNING", "ANSWERING", "URL", "DETAIL")]
    for s in statuses:
        running = "-" if s.running is None else "yes" if s.running else "NO"
        cells.append((s.name, "-" if s.pid is None else str(s.pid), running, "yes" if s.answering else "NO",
                      s.url or "-", s.detail))
    widths = [max(len(row[i]) for row in cells) for i in range(5)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row[:5], widths, strict=True)) + "  " + row[5]
            for row in cells]


def _overrides(state: "StackState") -> list[str]:
    """Variables of this shell that send commands elsewhere than to the stack."""
    import os

    notes = []
    for var, ours in (("EDGEOPS_MQTT_URL", state.broker_url), ("PREFECT_API_URL", state.prefect_api_url)):
        if os.environ.get(var) and os.environ[var] != ours:
            notes.append(f"note: {var}={os.environ[var]} is set in this shell: commands use it, not the stack's "
                         f"{ours}")
    return notes


def up(broker: Annotated[str | None, typer.Option(
           "--broker", help="Use this broker when it answers (a local one that does not is started on its port). "
                            "Default: $EDGEOPS_MQTT_URL, else mqtt.url written in the config, else an own Mosquitto "
                            "on a free port.")] = None,
       prefect_port: Annotated[int | None, typer.Option(
           "--prefect-port", min=1, max=65535, help="Port of the Prefect server and UI [default: a free one, the "
                                                    "same as last time when it is free].")] = None,
       monitor_every: Annotated[float, typer.Option(
           "--monitor-every", min=10, help="Seconds between scheduled monitor runs.")] = 900.0,
       timeout: Annotated[float, typer.Option("--timeout", min=10, help="Seconds every service has to answer.")]
       = 180.0,
       config: ConfigOption = None, json_out: JsonOption = False) -> None:
    """Start the local control plane in the background (broker, Prefect server, telemetry ingest, scheduled
    monitor) and return once every service answers. Every later command in this directory uses it."""
    from edgeops.stack.up import UpOptions, bring_up

    load_project_config(config)  # a bad config is a one-line error before anything starts
    with user_errors():
        result = bring_up(UpOptions(project=Path.cwd(), config=config, broker=broker, prefect_port=prefect_port,
                                    monitor_every_s=monitor_every, timeout_s=timeout), _say)
    state = result.state
    if json_out:
        print_json({"already_up": result.already_up, "seconds": result.seconds, "ui_url": state.ui_url,
                    **state.to_json()})
        return
    head = (f"the stack is already up (since {state.created})" if result.already_up
            else f"stack up in {result.seconds:.1f} s")
    typer.echo(f"{head}; project {state.project}")
    for line in _rows(state):
        typer.echo(f"  {line}")
    typer.echo(f"Prefect UI: {state.ui_url}")
    typer.echo("Commands run in this directory use this stack ($EDGEOPS_MQTT_URL and $PREFECT_API_URL override "
               "it); `edgeops status` shows it, `edgeops down` stops it.")
    for note in _overrides(state):
        typer.echo(note, err=True)


def down(grace: Annotated[float, typer.Option(
             "--grace", min=0, help="Seconds each service has to stop after SIGTERM before SIGKILL.")] = 15.0,
         json_out: JsonOption = False) -> None:
    """Stop every process of the local control plane and forget it. Safe when it is already down."""
    from edgeops.stack.down import tear_down
    from edgeops.stack.state import read_state, remove_state, state_path
    from edgeops.stack.up import stack_lock

    project = Path.cwd()
    begin = time.monotonic()
    with user_errors(), stack_lock(project):
        state = read_state(project)
        if state is None:
            report = None
        else:
            report = tear_down(state, grace)
            if report.clean:
                remove_state(project)
    seconds = round(time.monotonic() - begin, 2)
    if json_out:
        print_json({"was_up": state is not None, "seconds": seconds,
                    **({} if report is None else vars(report))})
    elif report is None:
        typer.echo("no stack runs in this project; nothing to stop")
    else:
        typer.echo(f"stopped {', '.join(report.stopped) or 'nothing'} in {seconds:.1f} s" +
                   (f"; already gone: {', '.join(report.already_gone)}" if report.already_gone else ""))
        for name in report.not_ours:
            typer.echo(f"left alone: the pid of {name} now belongs to another program", err=True)
        for name in report.external:
            typer.echo(f"left running: {name} (the stack did not start it)")
    if report is not None and not report.clean:
        typer.echo(f"edgeops: still running after SIGKILL: {', '.join(report.left)}; state kept in "
                   f"{state_path(project)}", err=True)
        raise typer.Exit(1)


def status(config: ConfigOption = None, json_out: JsonOption = False) -> None:
    """What the local control plane runs, where, and whether each service answers. Exit 0 when all of it
    runs, 3 when it is down, 4 when it is partly down."""
    from edgeops.stack.probe import probe_stack
    from edgeops.stack.state import read_state

    cfg = load_project_config(config)
    with user_errors():
        state = read_state(Path.cwd())
        statuses = [] if state is None else probe_stack(state, cfg.mqtt)
    code = _status_code(statuses)
    if json_out:
        body: dict[str, Any] = {"up": code == 0, "state": ["up", "", "", "down", "partly down"][code],
                                "services": [s.to_json() for s in statuses]}
        if state is not None:
            body.update(project=state.project, ui_url=state.ui_url, broker_url=state.broker_url,
                        prefect_api_url=state.prefect_api_url, telemetry_db=state.telemetry_db,
                        created=state.created)
        print_json(body)
        raise typer.Exit(code)
    if state is None:
        typer.echo("no stack runs in this project (`edgeops up` starts one)")
        raise typer.Exit(code)
    typer.echo({0: "up", EXIT_DOWN: "DOWN", EXIT_PARTLY_DOWN: "PARTLY DOWN"}[code] +
               f" since {state.created}; project {state.project}")
    for line in _rows(state, statuses):
        typer.echo(f"  {line}")
    typer.echo(f"Prefect UI: {state.ui_url}")
    for note in _overrides(state):
        typer.echo(note, err=True)
    if code == EXIT_PARTLY_DOWN:
        typer.echo("`edgeops up` restarts it; the logs are in .edgeops/stack/logs/", err=True)
    raise typer.Exit(code)


def _status_code(statuses: list["ServiceStatus"]) -> int:
    if not statuses or not any(s.running for s in statuses):
        return EXIT_DOWN
    return 0 if all(s.ok for s in statuses) else EXIT_PARTLY_DOWN

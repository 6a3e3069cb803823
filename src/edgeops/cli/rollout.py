"""``edgeops rollout``: staged rollouts of a release to the devices matching a label selector.

Design (docs/rollout.md): ``start`` plans the rollout, then runs the controller *in the foreground* as a
Prefect flow run in this process, with a live progress bar on a terminal and a line per change when piped
(``--wait`` is accepted and changes nothing: ``start`` always waits for the end). ``status``
and ``abort`` work from any other shell through the rollout database (abort sets a flag the controller
polls). A controller that died is taken over by ``resume``; ``abort`` rolls back itself when none is alive.

Exit codes a script can branch on: 0 completed, 3 aborted (rolled back), 1 error, 2 usage error.
"""

import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edgeops.cli.common import (
    EXIT_REJECTED,
    BrokerOption,
    ConfigOption,
    JsonOption,
    TargetOption,
    fail,
    load_project_config,
    on_terminal,
    plural,
    print_json,
    print_table,
    user_errors,
    warn,
)
from edgeops.cli.fleet import broker_origin, control_client

if TYPE_CHECKING:
    from edgeops.config import ProjectConfig
    from edgeops.rollout.state import RolloutRecord, RolloutStore

app = typer.Typer(no_args_is_help=True)  # its help: SUBCOMMANDS in cli/__init__.py

EXIT_COMPLETED = 0
EXIT_ERROR = 1
EXIT_ABORTED = EXIT_REJECTED
IdArgument = Annotated[str, typer.Argument(help="Rollout id (see `edgeops rollout status`).")]
WaitOption = Annotated[bool, typer.Option("--wait", hidden=True, help="Accepted for old scripts; the command "
                                                                    "always runs the rollout to its end.")]


def rollouts_db(cfg: "ProjectConfig") -> Path | str:
    """``rollout.state_url``, else ``rollouts.db`` beside the registry directory (``.edgeops/rollouts.db``)."""
    from edgeops.rollout.state import state_location

    return state_location(cfg)


def rollout_store(cfg: "ProjectConfig") -> "RolloutStore":
    from edgeops.rollout.state import RolloutStore

    return RolloutStore(rollouts_db(cfg))


def existing_store(cfg: "ProjectConfig", rollout_id: str) -> "RolloutStore":
    """The rollout database for commands that only read or change existing rollouts (none is created)."""
    from edgeops.errors import RolloutError
    from edgeops.rollout.state import state_exists

    if not state_exists(rollouts_db(cfg)):
        raise RolloutError(f"no rollout {rollout_id!r}: there is no rollout database at {rollouts_db(cfg)}")
    return rollout_store(cfg)


def _summary(rec: "RolloutRecord") -> str:
    t = rec.tally()
    return (f"{rec.id} {rec.release} {rec.status} wave {min(rec.wave + 1, rec.waves)}/{rec.waves}: "
            f"{t['succeeded']} succeeded, {t.failures} failed, {t['offline']} offline, {t['updating']} updating, "
            f"{t['pending']} pending" + (f" — {rec.reason}" if rec.reason and rec.status != "completed" else ""))


def _watch(store: "RolloutStore", rollout_id: str, live: bool, stop: threading.Event) -> None:
    """Render progress from the database, exactly as another shell's ``status`` would see it."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if not live:
        last = ""
        while not stop.wait(2.0):
            line = _summary(store.get(rollout_id))
            if line != last:
                typer.echo(line, err=True)
                last = line
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        rec = store.get(rollout_id)
        task = bar.add_task(rec.release, total=len(rec.devices))
        while True:
            rec = store.get(rollout_id)
            done = sum(d.outcome not in ("pending", "updating") for d in rec.devices.values())
            t = rec.tally()
            bar.update(task, completed=done, description=f"{rec.release} {rec.status} wave "
                       f"{min(rec.wave + 1, rec.waves)}/{rec.waves} ok={t['succeeded']} failed={t.failures}")
            if stop.wait(0.25):
                break


def run_in_flow(config: Path | None, url: str, prefix: str, store: "RolloutStore", rollout_id: str
                ) -> "RolloutRecord":
    """Run the controller as a Prefect flow run in this process, with progress shown from the database. The
    health gate comes from the rollout's stored policy, so ``resume`` applies the gate ``start`` was given.
    The flow reads the key and the broker's credentials from ``config`` itself: none is a flow parameter."""
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if not os.environ.get("PREFECT_API_URL"):
        typer.echo("starting a temporary Prefect server for this run (`edgeops up` or PREFECT_API_URL avoid it)",
                   err=True)
    from edgeops.flows.rollout import rollout_flow

    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(store, rollout_id, on_terminal(), stop), daemon=True)
    watcher.start()
    try:
        rollout_flow(broker_url=url, db_path=store.url, prefix=prefix, rollout_id=rollout_id,
                     config_path=None if config is None else str(config))
    finally:
        stop.set()
        watcher.join(5)
    return store.get(rollout_id)


def warn_interrupted(store: "RolloutStore") -> None:
    """Start-up detection: say which rollouts lost their controller (they still hold their devices)."""
    for rec in store.records(active_only=True):
        if not rec.controller_alive():
            typer.echo(f"edgeops: warning: rollout {rec.id} ({rec.release}, {rec.status}) has no running "
                       f"controller; continue it with `edgeops rollout resume {rec.id}` or abort it", err=True)


def _finish(rec: "RolloutRecord", json_out: bool) -> None:
    if json_out:
        print_json(rec.to_json())
    else:
        typer.echo(_summary(rec))
        for dev in sorted(rec.devices.values(), key=lambda d: d.device):
            if dev.outcome in ("failed", "timed_out", "offline"):
                typer.echo(f"  {dev.device}: {dev.outcome} {dev.detail}")
    raise typer.Exit(EXIT_COMPLETED if rec.status == "completed" else EXIT_ABORTED if rec.status == "aborted"
                     else EXIT_ERROR)


@app.command("start")
def start(release: Annotated[str, typer.Argument(help="churn@4, churn@champion, or churn.")],
          target: TargetOption = None,
          canary: Annotated[str, typer.Option(help="Canary wave size, e.g. 10% (at least one device).")] = "10%",
          waves: Annotated[int, typer.Option(help="Waves after the canary.", min=1)] = 3,
          max_failure: Annotated[str, typer.Option("--max-failure", help="Abort above this failure rate.")] = "5%",
          min_executed: Annotated[int | None, typer.Option(
              "--min-executed", help="Judge the failure rate only after this many devices finished "
                                     "(default: the canary size).", min=1)] = None,
          device_timeout: Annotated[float, typer.Option(
              "--device-timeout", help="Seconds a device has to report the new version.")] = 300.0,
          health_db: Annotated[str | None, typer.Option(
              "--health-db", help="Telemetry store URL (as for `telemetry serve`): after each wave the new "
                                  "version's model error rate and p95 must not be worse than the previous "
                                  "version's, else the rollout aborts.")] = None,
          wait: WaitOption = False, broker: BrokerOption = None, config: ConfigOption = None,
          json_out: JsonOption = False) -> None:
    """Roll RELEASE out to the devices matching --target: canary, then waves; abort and roll back on failures."""
    from edge_agent.protocol import Topics
    from edgeops.cli.release import publish_record
    from edgeops.release.registry import Registry
    from edgeops.rollout.controller import start_rollout
    from edgeops.rollout.fleet import parse_selector
    from edgeops.rollout.plan import RolloutPolicy, parse_fraction
    from edgeops.rollout.signer import desired_signer

    cfg = load_project_config(config)
    with user_errors():
        selector = parse_selector(target or [])
        policy = RolloutPolicy(canary=parse_fraction(canary, "canary"), waves=waves,
                               max_failure=parse_fraction(max_failure, "max-failure"), min_executed=min_executed,
                               device_timeout_s=device_timeout, health_db=health_db)
        desired_signer(cfg)  # no signing key: fail before anything is published or planned
        record = Registry.from_config(cfg.registry).resolve(release)
        result, url = publish_record(record, cfg, broker)
        if not result.skipped:
            typer.echo(f"published {result.ref} on {url}", err=True)
        store = rollout_store(cfg)
        warn_interrupted(store)
        client = control_client(url, cfg.mqtt, origin=broker_origin(broker))
        try:
            rec = start_rollout(store, client, Topics(cfg.mqtt.prefix), model=record.model, version=record.version,
                                selector=selector, policy=policy)
        finally:
            client.close()
        typer.echo(f"rollout {rec.id}: {rec.release} to {plural(len(rec.devices), 'device')} in "
                   f"{plural(rec.waves, 'wave')} (canary {len(rec.wave_devices(0))})", err=True)
        asked = waves + (1 if policy.canary > 0 else 0)
        if rec.waves < asked:
            wanted = f"a canary and {plural(waves, 'wave')} after it" if policy.canary > 0 else plural(waves, "wave")
            fill = "fills" if len(rec.devices) == 1 else "fill"
            warn(f"--waves: asked for {wanted}, but {plural(len(rec.devices), 'device')} {fill} only "
                 f"{plural(rec.waves, 'wave')} (a wave needs at least one device)")
        final = run_in_flow(config, url, cfg.mqtt.prefix, store, rec.id)
    _finish(final, json_out)


@app.command("resume")
def resume(rollout_id: IdArgument, wait: WaitOption = False, broker: BrokerOption = None,
           config: ConfigOption = None, json_out: JsonOption = False) -> None:
    """Take over an interrupted rollout (its controller died) and run it to its end."""
    cfg = load_project_config(config)
    with user_errors():
        store = existing_store(cfg, rollout_id)
        url, prefix = _rollout_scope(store.get(rollout_id), broker)
        final = run_in_flow(config, url, prefix, store, rollout_id)
    _finish(final, json_out)


def _rollout_scope(rec: "RolloutRecord", flag: str | None) -> tuple[str, str]:
    """The broker and prefix a rollout runs on are part of it; a different --broker would address another
    fleet, so it is refused rather than obeyed."""
    from edgeops.mqtt import broker_address

    url, _, prefix = rec.scope.rpartition("|")
    if flag and broker_address(flag) != broker_address(url):
        fail(f"rollout {rec.id} runs on {url}, not on {flag}")
    return url, prefix


@app.command("status")
def status(rollout_id: Annotated[str | None, typer.Argument(help="A rollout id; all rollouts when omitted.")] = None,
           config: ConfigOption = None, json_out: JsonOption = False) -> None:
    """Show one rollout (per-device outcomes) or all of them; reads the rollout database, not the broker."""
    from edgeops.rollout.state import state_exists

    cfg = load_project_config(config)
    with user_errors():
        if rollout_id:
            records = [existing_store(cfg, rollout_id).get(rollout_id)]
        else:
            records = rollout_store(cfg).records() if state_exists(rollouts_db(cfg)) else []
    if json_out:
        print_json(records[0].to_json() if rollout_id else [r.to_json() for r in records])
        return
    if not records:
        typer.echo("no rollouts yet")
        return
    for rec in records:
        alive = " (controller alive)" if rec.controller_alive() else (
            " (no controller: `edgeops rollout resume " + rec.id + "`)" if rec.status not in ("completed", "aborted")
            else "")
        typer.echo(_summary(rec) + alive)
    if rollout_id:
        _device_table(records[0])


def _device_table(rec: "RolloutRecord") -> None:
    """Waves numbered from 1, as in the summary line's ``wave 1/3`` (the database counts from 0)."""
    print_table(["DEVICE", "WAVE", "OUTCOME", "ONLINE", "RESTORED", "DETAIL"],
                ([d.device, f"{d.wave + 1}/{rec.waves}", d.outcome, "no" if d.offline else "yes",
                  "yes" if d.restored else "no", d.detail or "-"]
                 for d in sorted(rec.devices.values(), key=lambda d: (d.wave, d.device))),
                styles={"succeeded": "green", "failed": "red", "timed_out": "red", "offline": "yellow"})


@app.command("abort")
def abort(rollout_id: IdArgument, reason: Annotated[str, typer.Option(help="Recorded with the rollout.")] =
          "aborted by operator", timeout: Annotated[float, typer.Option(help="Seconds to wait for the rollback.")]
          = 60.0, broker: BrokerOption = None, config: ConfigOption = None, json_out: JsonOption = False) -> None:
    """Abort a rollout: its controller restores the previous desired state of every device it changed. When no
    controller is alive, this command does the rollback itself."""
    from edge_agent.protocol import Topics
    from edgeops.rollout.controller import RolloutController
    from edgeops.rollout.signer import desired_signer

    cfg = load_project_config(config)
    with user_errors():
        store = existing_store(cfg, rollout_id)
        rec = store.request_abort(rollout_id, reason)
        if rec.controller_alive():
            typer.echo(f"abort requested; controller {rec.controller} is rolling back", err=True)
            deadline = time.monotonic() + timeout
            while rec.status != "aborted" and time.monotonic() < deadline:
                time.sleep(0.2)
                rec = store.get(rollout_id)
        else:
            url, prefix = _rollout_scope(rec, broker)
            client = control_client(url, cfg.mqtt, origin=f"rollout {rec.id}'s record")
            try:
                rec = RolloutController(store, client, Topics(prefix), signer=desired_signer(cfg)).run(rollout_id)
            finally:
                client.close()
    _finish(rec, json_out)


if __name__ == "__main__":
    app()

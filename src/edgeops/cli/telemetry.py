"""``edgeops telemetry``: run the ingest service, and look at what it stored."""

import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edgeops.cli.common import (
    PRESENCE_STYLES,
    BrokerOption,
    ConfigOption,
    DbOption,
    JsonOption,
    load_project_config,
    plural,
    print_json,
    print_table,
    user_errors,
)

if TYPE_CHECKING:
    from edgeops.telemetry.ingest import IngestStats

app = typer.Typer(no_args_is_help=True)  # its help: SUBCOMMANDS in cli/__init__.py


@app.command()
def serve(
    db: DbOption = None,
    broker: BrokerOption = None,
    group: Annotated[str, typer.Option(help="Shared-subscription group: instances in one group split the load.")]
    = "edgeops-ingest",
    instance: Annotated[str, typer.Option(help="Instance name, part of the fixed MQTT client id.")] = "0",
    prefix: Annotated[str | None, typer.Option(help="Topic prefix (default: config mqtt.prefix).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Commit after this many messages...")] = 500,
    flush_ms: Annotated[int, typer.Option(min=1, help="...or this many ms after a batch's first message.")] = 200,
    events: Annotated[bool | None, typer.Option(
        "--events/--no-events", help="Emit Prefect events (default: when PREFECT_API_URL is set).")] = None,
    stats_every: Annotated[float, typer.Option(
        min=0.05, help="Seconds between checks of the counters; a line is logged only when they changed.")] = 30.0,
    config: ConfigOption = None,
    ready_file: Annotated[Path | None, typer.Option(
        "--ready-file", help="Keep this file saying whether the ingest is subscribed (for `edgeops up`).")] = None,
) -> None:
    """Run the ingest until SIGINT/SIGTERM. Messages are acknowledged only after they are committed."""
    from edge_agent.shutdown import StopSignals
    from edgeops.credentials import mqtt_settings
    from edgeops.telemetry.events import discard, emit_to_prefect
    from edgeops.telemetry.ingest import IngestConfig, IngestService

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    cfg = load_project_config(config)
    db = db or cfg.telemetry.url  # the store the monitor reads: one setting for both
    emit_events = bool(os.environ.get("PREFECT_API_URL")) if events is None else events
    with user_errors():
        mqtt = mqtt_settings(cfg.mqtt, broker, prefix)
    ingest_cfg = IngestConfig(broker_url=mqtt.url, db_url=db, prefix=mqtt.prefix,
                              group=group, instance=instance, batch_size=batch_size, flush_ms=flush_ms,
                              username=mqtt.username, password=mqtt.password, ca_file=mqtt.ca_file)
    # Not Event.set() from a signal handler: it can deadlock against the main thread's own Event.wait (see
    # edge_agent/shutdown.py, where an agent hung that way). Signals are caught from here on, start-up included.
    with StopSignals() as signals:
        with user_errors():
            service = IngestService(ingest_cfg, emit=emit_to_prefect if emit_events else discard).start(wait_s=None)
        typer.echo(f"ingest {ingest_cfg.mqtt_client_id}: {ingest_cfg.broker_url} → {db} "
                   f"(group {group}, events {'on' if emit_events else 'off'}); Ctrl-C to stop", err=True)
        subscribed: bool | None = None
        last = service.stats
        next_stats = time.monotonic() + stats_every
        while signals.wait(min(0.2, stats_every) if ready_file is not None else stats_every) is None:
            if ready_file is not None and service.connected != subscribed:
                subscribed = service.connected
                write_ready(ready_file, subscribed)
            if time.monotonic() >= next_stats:
                next_stats = time.monotonic() + stats_every
                now = service.stats
                if now != last:  # an idle service stays quiet in the log
                    logging.getLogger("edgeops.telemetry").info("ingest: %s", stats_line(now))
                    last = now
        service.stop()
        if ready_file is not None:
            ready_file.unlink(missing_ok=True)
    typer.echo(f"stopped: {stats_line(service.stats)}", err=True)


def stats_line(stats: "IngestStats") -> str:
    """``received 12, stored 10, duplicates 2, ...``: the counters as words, not a dataclass repr."""
    return ", ".join(f"{name.replace('_', ' ')} {value}" for name, value in asdict(stats).items())


def write_ready(path: Path, subscribed: bool) -> None:
    """``{"pid": ..., "subscribed": ...}``, replaced atomically: a supervisor reads it while we write. The pid
    tells a stale file of an earlier ingest from ours."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "subscribed": subscribed}), encoding="utf-8")
    os.replace(tmp, path)


@app.command()
def stats(db: DbOption = None, json_out: JsonOption = False, config: ConfigOption = None) -> None:
    """What the store holds: windows per model version, and each device's presence and state."""
    from edgeops.telemetry.store import TelemetryStore

    with user_errors():
        store = TelemetryStore(db or load_project_config(config).telemetry.url)
        windows, models = store.count_windows(), [f"{m}@{v}" for m, v in store.models()]
        devices = [{k: d[k] for k in ("device", "status", "state", "model", "version")} for d in store.devices()]
        store.close()
    if json_out:
        print_json({"windows": windows, "models": models, "devices": devices})
        return
    typer.echo(f"{plural(windows, 'window')}; models: {', '.join(models) or '-'}", err=True)
    print_table(["DEVICE", "STATUS", "STATE", "MODEL@VERSION"],
                ([d["device"], d["status"] or "unknown", d["state"] or "-",
                  f"{d['model']}@{d['version']}" if d["model"] else "-"] for d in devices),
                styles=PRESENCE_STYLES)

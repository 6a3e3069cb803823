"""``edgeops fleet``: the devices the broker knows about, from their retained reported/status messages."""

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from edge_agent.protocol import Topics

from ..config import ProjectConfig
from ..credentials import mqtt_settings
from ..fleet import DeviceView, parse_selector, read_fleet
from ..mqtt import ControlClient
from .common import ConfigOption, JsonOption, broker_url, load_project_config, print_json, user_errors

app = typer.Typer(help="The device fleet as the broker sees it.", no_args_is_help=True)

BrokerOption = Annotated[str | None, typer.Option(
    "--broker", help="Broker URL (default: $EDGEOPS_MQTT_URL, else mqtt.url of the config).")]
TargetOption = Annotated[list[str] | None, typer.Option(
    "--target", "-t", help="Label selector k=v; repeat (or comma-separate) to AND several.")]


@app.callback()
def fleet() -> None:
    """The device fleet as the broker sees it (a callback keeps `ls` a subcommand even when run alone)."""


def control_client(flag: str | None, cfg: ProjectConfig) -> ControlClient:
    """A connected control client for the broker chosen by flag → $EDGEOPS_MQTT_URL → config, with the
    credentials every part of edgeops uses (edgeops.credentials: environment, Secret block, config)."""
    mqtt = mqtt_settings(cfg, broker_url(flag, cfg))
    return ControlClient(mqtt.url, username=mqtt.username, password=mqtt.password, ca_file=mqtt.ca_file).connect()


def _row(d: DeviceView) -> list[str]:
    presence = {True: "[green]online[/]", False: "[red]offline[/]", None: "[dim]unknown[/]"}[d.online]
    labels = ",".join(f"{k}={v}" for k, v in sorted(d.labels.items())) or "-"
    state = d.state or "-"
    if d.desired_version is not None and d.desired_version != d.version and state != "serving":
        state += f" → {d.desired_version}"
    return [d.device, labels, d.release, state, presence, d.last_seen or "-", d.last_error or ""]


@app.command("ls")
def list_devices(target: TargetOption = None, broker: BrokerOption = None, config: ConfigOption = None,
                 json_out: JsonOption = False) -> None:
    """List devices: labels, model@version, lifecycle state, online/offline, last seen, last error."""
    cfg = load_project_config(config)
    with user_errors():
        selector = parse_selector(target or [])
        client = control_client(broker, cfg)
        try:
            snapshot = read_fleet(client, Topics(cfg.mqtt.prefix))
        finally:
            client.close()
    devices = snapshot.select(selector)
    for problem in snapshot.problems:
        typer.echo(f"edgeops: warning: ignored a bad message: {problem}", err=True)
    if json_out:
        print_json([d.to_json() for d in devices])
        return
    if not devices:
        typer.echo("no devices" + (" match the target" if selector else " have reported on this broker/prefix"))
        return
    table = Table("DEVICE", "LABELS", "MODEL@VERSION", "STATE", "STATUS", "LAST SEEN", "LAST ERROR",
                  title=f"{len(devices)} devices", title_justify="left")
    for device in devices:
        table.add_row(*_row(device))
    Console().print(table)


if __name__ == "__main__":
    app()

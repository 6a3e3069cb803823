"""``edgeops fleet``: the devices the broker knows about, from their retained reported/status messages."""

import os
from typing import TYPE_CHECKING, Annotated

import typer

from edgeops.cli.common import (
    PRESENCE_STYLES,
    BrokerOption,
    ConfigOption,
    JsonOption,
    TargetOption,
    fail,
    plural,
    print_json,
    print_table,
    project_mqtt,
    user_errors,
)
from edgeops.cli.heap import long_lived_imports

if TYPE_CHECKING:
    from edgeops.config import MqttConfig
    from edgeops.mqtt import ControlClient
    from edgeops.rollout.fleet import DeviceView

app = typer.Typer(no_args_is_help=True)  # its help: SUBCOMMANDS in cli/__init__.py


@app.callback()
def fleet() -> None:
    """The device fleet as the broker sees it (a callback keeps `ls` a subcommand even when run alone)."""


def broker_origin(flag: str | None) -> str:
    """Where ``mqtt_settings`` found the URL, for error messages: the user asked for one they may not have chosen."""
    if flag:
        return "--broker"
    return "$EDGEOPS_MQTT_URL" if os.environ.get("EDGEOPS_MQTT_URL") else "mqtt.url of the config"


def control_client(flag: str | None, section: "MqttConfig", origin: str | None = None) -> "ControlClient":
    """A connected control client for the broker chosen by flag → $EDGEOPS_MQTT_URL → the ``mqtt`` section.
    ``origin`` says where the URL came from when the caller passes one it did not get from the user (a
    rollout's record)."""
    from edgeops.credentials import mqtt_settings
    from edgeops.errors import BrokerError
    from edgeops.mqtt import ControlClient

    mqtt = mqtt_settings(section, flag)  # URL: flag → environment → config; credentials likewise
    client = ControlClient(mqtt.url, username=mqtt.username, password=mqtt.password, ca_file=mqtt.ca_file)
    try:
        return client.connect()
    except BrokerError as exc:
        hint = "" if flag or origin else "; --broker or $EDGEOPS_MQTT_URL chooses another"
        raise BrokerError(f"{exc} (URL from {origin or broker_origin(flag)}{hint})") from exc


def _row(d: "DeviceView") -> list[str]:
    labels = ",".join(f"{k}={v}" for k, v in sorted(d.labels.items())) or "-"
    state = d.state or "-"
    if d.desired_version is not None and d.desired_version != d.version and state != "serving":
        state += f" → {d.desired_version}"
    return [d.device, labels, d.release, state, d.presence, d.last_seen or "-", d.last_error or "-"]


@app.command("ls")
def list_devices(target: TargetOption = None, broker: BrokerOption = None, config: ConfigOption = None,
                 wait: Annotated[float, typer.Option(
                     "--wait", min=0, metavar="SECONDS",
                     help="Wait up to SECONDS until a device matching --target is online (a device just started); "
                          "exit 1 if none is.")] = 0.0,
                 json_out: JsonOption = False) -> None:
    """List devices: labels, model@version, lifecycle state, online/offline, last seen, last error."""
    import time

    with long_lived_imports():  # paho-mqtt and the wire protocol
        from edge_agent.protocol import Topics
        from edgeops.rollout.fleet import parse_selector, read_fleet

    section = project_mqtt(config)
    with user_errors():
        selector = parse_selector(target or [])
        client = control_client(broker, section)
        deadline = time.monotonic() + wait
        try:
            while True:
                snapshot = read_fleet(client, Topics(section.prefix))
                online = [d for d in snapshot.select(selector) if d.presence == "online"]
                if online or time.monotonic() >= deadline:
                    break
                time.sleep(0.5)
        finally:
            client.close()
    devices = snapshot.select(selector)
    if wait and not online:
        fail(f"no device matching the target came online within {wait:g} s on {client.url} under prefix "
             f"{section.prefix!r}")
    for problem in snapshot.problems:
        typer.echo(f"edgeops: warning: ignored a bad message: {problem}", err=True)
    if json_out:
        print_json([d.to_json() for d in devices])
        return
    if not devices:
        where = f"on {client.url} under prefix {section.prefix!r} (URL from {broker_origin(broker)})"
        typer.echo(f"no devices match the target {where}" if selector else f"no devices have reported {where}")
        return
    print_table(["DEVICE", "LABELS", "MODEL@VERSION", "STATE", "STATUS", "LAST SEEN", "LAST ERROR"],
                (_row(device) for device in devices), title=plural(len(devices), "device"),
                styles=PRESENCE_STYLES)


if __name__ == "__main__":
    app()

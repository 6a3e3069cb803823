"""The shipped Mosquitto config, started for real: client ids are bound to device usernames on the device
listener (no device can kick another off), control-plane clients sharing a username coexist, an agent's
persistent session survives its restart, and message sizes are capped for everyone at the protocol's limit."""

import queue
from collections.abc import Iterator
from pathlib import Path

import pytest
from shipped_broker import TIMEOUT, Client, ShippedBroker, connect_control, connect_device, shipped_broker

from edge_agent.config import AgentConfig
from edge_agent.link import Connected, Disconnected, LinkEvent, Message, MqttLink, Published, client_id_for
from edge_agent.protocol import MAX_MESSAGE_BYTES, Status

pytestmark = pytest.mark.integration

MiB = 1 << 20


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[ShippedBroker]:
    with shipped_broker(tmp_path, ["press-17", "press-18"]) as running:
        yield running


def agent_config(broker: ShippedBroker, device: str, data_dir: Path) -> AgentConfig:
    return AgentConfig(device_id=device, data_dir=data_dir, broker_url=f"mqtts://127.0.0.1:{broker.device_port}",
                       ca_file=broker.ca_file, username=device, password=broker.creds[device])


def next_event(inbox: "queue.Queue[LinkEvent]", kind: type, seen: list[LinkEvent]) -> LinkEvent:
    """The next event of ``kind``; every event on the way is appended to ``seen``."""
    while True:
        event = inbox.get(timeout=TIMEOUT)
        seen.append(event)
        if isinstance(event, kind):
            return event


def settle(control: Client) -> list[tuple[str, bytes]]:
    """Everything the control plane received up to now: a marker it publishes to itself arrives after any
    message the broker produced before (a Will, a status), so nothing is still on its way."""
    assert control.subscribe("edgeops/marker") == "Granted QoS 1"
    assert control.publish("edgeops/marker", b"m") == "ok"
    got: list[tuple[str, bytes]] = []
    while not got or got[-1][0] != "edgeops/marker":
        got.append(control.messages.get(timeout=TIMEOUT))
    return got[:-1]


def test_a_device_cannot_kick_another_off_with_its_client_id(broker: ShippedBroker, tmp_path: Path) -> None:
    """press-18 connects with the client id press-17's agent uses (predictable: edgeops-agent-{device}-{digest})
    and its own credentials. The device listener replaces the id by the username, so press-18 gets a session
    of its own: press-17 stays connected and no ``offline`` Will is published for it. With client ids unbound
    the broker closed press-17's connection and published its Will."""
    control = connect_control(broker)
    assert control.subscribe("edgeops/devices/+/status") == "Granted QoS 1"
    config = agent_config(broker, "press-17", tmp_path / "press-17")
    inbox: queue.Queue[LinkEvent] = queue.Queue()
    link = MqttLink(config, inbox)
    link.start()
    seen: list[LinkEvent] = []
    intruder = None
    try:
        next_event(inbox, Connected, seen)
        next_event(inbox, Published, seen)  # the online status: acknowledged, so already sent on to the control
        assert [Status.parse(p).status for _, p in settle(control)] == ["online"]

        intruder = connect_device(broker, "press-18", client_id=client_id_for(config))
        statuses = [(t, Status.parse(p).status) for t, p in settle(control)]
        assert statuses == [], f"press-17 was kicked off: {statuses}"
        mid = link.publish("edgeops/devices/press-17/telemetry", b"{}")
        while not (isinstance(event := next_event(inbox, Published, seen), Published) and event.mid == mid):
            pass
        assert not [e for e in seen if isinstance(e, Disconnected)], seen
        assert link.connected
        # the intruder is press-18 for the ACL as before: it cannot speak for press-17
        assert intruder.publish("edgeops/devices/press-17/status", Status("press-17", "offline").to_bytes(),
                                retain=True) == "Not authorized"
        assert intruder.disconnects.empty()
    finally:
        if intruder is not None:
            intruder.close()
        link.stop()
        control.close()


def test_control_plane_clients_sharing_a_username_do_not_kick_each_other(broker: ShippedBroker) -> None:
    """Ingest instances, the rollout controller and the CLI all log in as edgeops-control with client ids of
    their own; the control listener must not bind ids to the username."""
    first = connect_control(broker, "edgeops-ingest-host-0")
    second = connect_control(broker, "edgeops-ctl-0123456789ab")
    try:
        assert first.subscribe("edgeops/devices/+/telemetry") == "Granted QoS 1"
        assert second.publish("edgeops/devices/press-17/telemetry", b"{}") == "ok"
        assert [t for t, _ in first.take(1)] == ["edgeops/devices/press-17/telemetry"]
        assert first.publish("edgeops/devices/press-17/desired", b"") == "ok"
        assert first.disconnects.empty() and second.disconnects.empty()
    finally:
        first.close()
        second.close()


def test_an_agents_persistent_session_survives_its_restart(broker: ShippedBroker, tmp_path: Path) -> None:
    """The session is keyed by the client id, which the device listener sets to the device id: the same for
    every connection of the device, so a restarted agent finds its session and what was queued while away."""
    config = agent_config(broker, "press-17", tmp_path / "press-17")
    desired = config.topics.device("press-17", "desired")
    control = connect_control(broker)
    seen: list[LinkEvent] = []
    try:
        # a retained message arrives once the subscription is in place (a live one could overtake it)
        assert control.publish(desired, b"before", retain=True) == "ok"
        inbox: queue.Queue[LinkEvent] = queue.Queue()
        link = MqttLink(config, inbox)
        link.subscribe(desired)
        link.start()
        assert next_event(inbox, Connected, seen) == Connected(session_present=False)
        assert next_event(inbox, Message, seen) == Message(desired, b"before", retained=True)
        assert control.publish(desired, b"", retain=True) == "ok"  # cleared, so only the session can deliver
        assert next_event(inbox, Message, seen) == Message(desired, b"", retained=False)
        link.stop()

        assert control.publish(desired, b"while away") == "ok"  # not retained: only a session keeps it

        inbox = queue.Queue()
        link = MqttLink(config, inbox)
        link.subscribe(desired)
        link.start()
        assert next_event(inbox, Connected, seen) == Connected(session_present=True)
        assert next_event(inbox, Message, seen) == Message(desired, b"while away", retained=False)
        link.stop()
    finally:
        control.close()


def test_devices_cannot_send_big_messages_and_the_control_plane_still_publishes_releases(
        broker: ShippedBroker) -> None:
    """Mosquitto 2.0 has one size limit for every listener, set at the protocol's MAX_MESSAGE_BYTES (1 MiB):
    what a receiver parses at most, and at least a manifest and an artifact chunk (export.chunk_size)."""
    control = connect_control(broker)
    device = connect_device(broker, "press-17")
    try:
        assert control.subscribe("edgeops/devices/+/telemetry") == "Granted QoS 1"
        assert device.subscribe("edgeops/releases/#") == "Granted QoS 1"
        # the control plane: a default-sized artifact chunk and a manifest of the largest size a device accepts
        assert control.publish("edgeops/releases/churn/1/artifact/0", b"a" * (256 * 1024), retain=True) == "ok"
        assert control.publish("edgeops/releases/churn/1/manifest", b"m" * MAX_MESSAGE_BYTES, retain=True) == "ok"
        assert [(t, len(p)) for t, p in device.take(2)] == [
            ("edgeops/releases/churn/1/artifact/0", 256 * 1024),
            ("edgeops/releases/churn/1/manifest", MAX_MESSAGE_BYTES)]

        telemetry = "edgeops/devices/press-17/telemetry"
        assert device.publish(telemetry, b"t" * MAX_MESSAGE_BYTES) == "ok"  # the largest a receiver parses
        # One byte more is dropped (QoS 0 here: at QoS 1 Mosquitto answers with a PUBACK reason paho cannot
        # parse, and paho drops the connection). The device's next message, acknowledged, is the only one after.
        device.client.publish(telemetry, b"t" * (MAX_MESSAGE_BYTES + 1), qos=0)
        assert device.publish(telemetry, b"next") == "ok"
        assert device.disconnects.empty()
        # 20 MiB: not even read; the device is disconnected (QoS 0, so paho does not send it again)
        device.client.publish(telemetry, b"t" * (20 * MiB), qos=0)
        assert device.disconnects.get(timeout=TIMEOUT)
        assert [(t, len(p)) for t, p in settle(control)] == [(telemetry, MAX_MESSAGE_BYTES), (telemetry, 4)]
    finally:
        device.close()
        control.close()

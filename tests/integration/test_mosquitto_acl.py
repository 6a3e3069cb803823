"""The shipped Mosquitto config and ACL, started for real: a device can do its own job and nothing else."""

import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from shipped_broker import (
    CONTROL_USER,
    TIMEOUT,
    ShippedBroker,
    connect,
    connect_control,
    connect_device,
    shipped_broker,
)

from edge_agent.config import AgentConfig
from edge_agent.link import Connected, MqttLink, Published

pytestmark = pytest.mark.integration


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[ShippedBroker]:
    with shipped_broker(tmp_path, ["press-17", "press-18"]) as running:
        yield running


def test_only_known_users_with_the_right_password_get_in(broker: ShippedBroker) -> None:
    device, control = broker.device_port, broker.control_port
    assert connect(device, None, None, ca_file=broker.ca_file)[0] is None
    _, reason = connect(device, "press-17", "wrong", ca_file=broker.ca_file)
    assert reason in ("Bad user name or password", "Not authorized")
    # each listener knows only its own users: device credentials are useless on the control listener (which
    # does not bind client ids), the control plane's on the device listener (which would)
    _, reason = connect(control, "press-17", broker.creds["press-17"])
    assert reason in ("Bad user name or password", "Not authorized")
    _, reason = connect(device, CONTROL_USER, broker.creds[CONTROL_USER], ca_file=broker.ca_file)
    assert reason in ("Bad user name or password", "Not authorized")
    assert connect(device, "press-17", broker.creds["press-17"])[0] is None  # no TLS: no connection
    connect_device(broker, "press-17").close()
    connect_control(broker).close()


def test_a_device_does_its_own_job_and_nothing_else(broker: ShippedBroker) -> None:
    control, device = connect_control(broker), connect_device(broker, "press-17")
    try:
        assert control.subscribe("$share/ingest/edgeops/devices/+/telemetry") == "Granted QoS 1"
        for channel in ("status", "reported", "events"):
            assert control.subscribe(f"edgeops/devices/+/{channel}") == "Granted QoS 1"
        assert control.subscribe("edgeops/releases/#") == "Granted QoS 1"
        # its own topics: allowed, and the control plane receives them
        for channel in ("telemetry", "status", "reported", "events"):
            assert device.publish(f"edgeops/devices/press-17/{channel}") == "ok"
        assert sorted(control.received()) == [f"edgeops/devices/press-17/{c}"
                                              for c in ("events", "reported", "status", "telemetry")]
        # another device's topics and the releases: refused with a reason, nothing arrives
        for topic in ("edgeops/devices/press-18/telemetry", "edgeops/devices/press-18/status",
                      "edgeops/devices/press-17/desired", "edgeops/releases/churn/1/manifest",
                      "edgeops/releases/churn/1/artifact", "other/topic"):
            assert device.publish(topic) == "Not authorized", topic
        assert control.received() == []
        # reading: its own desired state and the releases; not another device's desired state
        assert control.publish("edgeops/devices/press-17/desired", b"mine", retain=True) == "ok"
        assert control.publish("edgeops/devices/press-18/desired", b"theirs", retain=True) == "ok"
        assert control.publish("edgeops/releases/churn/1/manifest", b"m", retain=True) == "ok"
        assert device.subscribe("edgeops/devices/press-17/desired") == "Granted QoS 1"
        assert device.subscribe("edgeops/releases/churn/1/#") == "Granted QoS 1"
        assert sorted(device.received()) == ["edgeops/devices/press-17/desired", "edgeops/releases/churn/1/manifest"]
        # Mosquitto 2.0 may grant a subscription the ACL does not cover; it then checks read access on every
        # delivery, so nothing of another device (nor its telemetry) ever arrives.
        for topic in ("edgeops/devices/press-18/desired", "edgeops/devices/+/desired", "edgeops/devices/#"):
            device.subscribe(topic)
        assert control.publish("edgeops/devices/press-18/telemetry", b"t") == "ok"
        assert control.publish("edgeops/devices/press-18/desired", b"again", retain=True) == "ok"
        assert set(device.received()) == {"edgeops/devices/press-17/desired"}  # its own, via the wildcards
    finally:
        control.close()
        device.close()


def agent_config(broker: ShippedBroker, device: str, data_dir: Path) -> AgentConfig:
    return AgentConfig(device_id=device, data_dir=data_dir, broker_url=f"mqtts://127.0.0.1:{broker.device_port}",
                       ca_file=broker.ca_file, username=device, password=broker.creds[device])


def test_the_agent_link_works_under_the_acl_and_sees_refusals(broker: ShippedBroker, tmp_path: Path) -> None:
    """The real MqttLink with credentials, over TLS: online status and Will pass the ACL; a refused publish is
    reported (MQTT 5 PUBACK reason), so the outbox would not mistake it for delivery."""
    control = connect_control(broker)
    control.subscribe("edgeops/devices/press-17/status")
    config = agent_config(broker, "press-17", tmp_path / "agent")
    inbox: queue.Queue[Any] = queue.Queue()
    link = MqttLink(config, inbox)
    link.start()
    try:
        assert isinstance(inbox.get(timeout=TIMEOUT), Connected)
        assert control.received() == ["edgeops/devices/press-17/status"]  # online
        ok = link.publish("edgeops/devices/press-17/telemetry", b"{}")
        refused = link.publish("edgeops/devices/press-18/telemetry", b"{}")
        acks = {}
        while len(acks) < 3:  # the online status, and our two
            event = inbox.get(timeout=TIMEOUT)
            if isinstance(event, Published):
                acks[event.mid] = event.reason
        assert acks[ok] is None
        assert acks[refused] == "Not authorized"
    finally:
        link.stop(clean=False)  # the broker sends the Will: allowed by the ACL
    assert control.received() == ["edgeops/devices/press-17/status"]
    control.close()

"""The shipped Mosquitto config and ACL, started for real: a device can do its own job and nothing else."""

import os
import queue
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from services import free_port, mosquitto_binary, wait_port

from edge_agent.config import AgentConfig
from edge_agent.link import Connected, MqttLink, Published

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).parents[2] / "deployments" / "mosquitto"
TIMEOUT = 10.0


@dataclass
class Broker:
    port: int
    creds: dict[str, str]
    proc: subprocess.Popen[bytes]
    log: Path


def shipped_config(tmp_path: Path, port: int) -> Path:
    """The shipped mosquitto.conf with only port and file locations changed (each exactly once)."""
    text = (DEPLOY / "mosquitto.conf").read_text()
    shutil.copy(DEPLOY / "acl", tmp_path / "acl")
    for old, new in [("listener 1883 127.0.0.1", f"listener {port} 127.0.0.1"),
                     ("/etc/mosquitto/edgeops.passwd", str(tmp_path / "passwd")),
                     ("/etc/mosquitto/edgeops.acl", str(tmp_path / "acl")),
                     ("persistence_location /var/lib/mosquitto/", f"persistence_location {tmp_path}/"),
                     ("log_dest syslog", f"log_dest file {tmp_path}/mosquitto.log")]:
        assert text.count(old) == 1, f"shipped mosquitto.conf changed: {old!r} not found once"
        text = text.replace(old, new)
    if os.geteuid() == 0:  # as root Mosquitto drops to user "mosquitto", who cannot read pytest's 0700 tmp dir
        text += "\nuser root\n"
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(text)
    return conf


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    users = ["press-17", "press-18", "edgeops-control"]
    subprocess.run([str(DEPLOY / "make-passwd.sh"), str(tmp_path / "passwd"), str(tmp_path / "creds"), *users],
                   check=True, capture_output=True)
    creds = {u: (tmp_path / "creds" / f"{u}.env").read_text().strip().split("=", 1)[1] for u in users}
    port = free_port()
    proc = subprocess.Popen([mosquitto_binary(), "-c", str(shipped_config(tmp_path, port))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_port("127.0.0.1", port)
        yield Broker(port, creds, proc, tmp_path / "mosquitto.log")
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr:
            proc.stderr.close()


@dataclass
class Client:
    """A blocking MQTT 5 test client that records reason codes and received messages."""

    client: mqtt.Client
    messages: "queue.Queue[tuple[str, bytes]]" = field(default_factory=queue.Queue)
    acks: dict[int, Any] = field(default_factory=dict)
    acked: threading.Condition = field(default_factory=threading.Condition)

    def publish(self, topic: str, payload: bytes = b"x", retain: bool = False) -> str:
        """'ok' when the broker accepted it ('No matching subscribers' is a success too), else the reason."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        reason = self._wait(info.mid)
        return str(reason) if reason.is_failure else "ok"

    def subscribe(self, topic: str) -> str:
        _rc, mid = self.client.subscribe(topic, qos=1)
        return str(self._wait(mid)[0])

    def _wait(self, mid: int) -> Any:
        with self.acked:
            assert self.acked.wait_for(lambda: mid in self.acks, TIMEOUT), f"no ack for mid {mid}"
            return self.acks.pop(mid)

    def received(self, timeout: float = 1.0) -> list[str]:
        topics = []
        try:
            while True:
                topics.append(self.messages.get(timeout=timeout)[0])
                timeout = 0.2
        except queue.Empty:
            return topics

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def connect(port: int, user: str | None, password: str | None) -> tuple[Client | None, str]:
    raw = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client = Client(raw)
    result: queue.Queue[str] = queue.Queue()
    if user is not None:
        raw.username_pw_set(user, password)

    def on_ack(_c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        with client.acked:
            client.acks[mid] = reason
            client.acked.notify_all()

    raw.on_connect = lambda _c, _u, _f, reason, _p: result.put(str(reason))
    raw.on_publish = on_ack
    raw.on_subscribe = on_ack
    raw.on_message = lambda _c, _u, msg: client.messages.put((msg.topic, msg.payload))
    raw.connect("127.0.0.1", port)
    raw.loop_start()
    reason = result.get(timeout=TIMEOUT)
    if reason != "Success":
        raw.loop_stop()
        return None, reason
    return client, reason


def test_only_known_users_with_the_right_password_get_in(broker: Broker) -> None:
    assert connect(broker.port, None, None)[0] is None
    _, reason = connect(broker.port, "press-17", "wrong")
    assert reason in ("Bad user name or password", "Not authorized")
    client, _ = connect(broker.port, "press-17", broker.creds["press-17"])
    assert client is not None
    client.close()


def test_a_device_does_its_own_job_and_nothing_else(broker: Broker) -> None:
    control, _ = connect(broker.port, "edgeops-control", broker.creds["edgeops-control"])
    device, _ = connect(broker.port, "press-17", broker.creds["press-17"])
    assert control is not None and device is not None
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


def test_the_agent_link_works_under_the_acl_and_sees_refusals(broker: Broker, tmp_path: Path) -> None:
    """The real MqttLink with credentials: online status and Will pass the ACL; a refused publish is
    reported (MQTT 5 PUBACK reason), so the outbox would not mistake it for delivery."""
    control, _ = connect(broker.port, "edgeops-control", broker.creds["edgeops-control"])
    assert control is not None
    control.subscribe("edgeops/devices/press-17/status")
    config = AgentConfig(device_id="press-17", data_dir=tmp_path / "agent", broker_url=f"mqtt://127.0.0.1:{broker.port}",
                         username="press-17", password=broker.creds["press-17"])
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

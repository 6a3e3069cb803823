"""Telemetry survives broker outages and agent restarts: every seq arrives, no window is counted twice.

The agent side here is exactly the agent's own delivery path (MqttLink + Outbox + TelemetryPump) driven by a
small owner loop like the Agent's, so the test does not depend on model lifecycle details.
"""

import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from releases import build_release, new_key
from services import Mosquitto, running_mosquitto

from edge_agent.config import AgentConfig
from edge_agent.link import Connected, MqttLink, Published
from edge_agent.outbox import Outbox
from edge_agent.protocol import ReleaseManifest, TelemetryWindow
from edge_agent.telemetry_pump import TelemetryPump

pytestmark = pytest.mark.integration
TIMEOUT = 30.0
DEVICE = "press-17"


class AgentSide:
    """Link + outbox + pump with an owner thread that handles link events and ticks the pump."""

    def __init__(self, config: AgentConfig, manifest: ReleaseManifest) -> None:
        self.inbox: queue.Queue[Any] = queue.Queue()
        self.link = MqttLink(config, self.inbox)
        self.outbox = Outbox(config.data_dir / "outbox.sqlite3", config.outbox_max_windows)
        self.pump = TelemetryPump(self.outbox, self.link, config.topics, DEVICE,
                                  interval_s=config.telemetry_interval_s,
                                  max_predictions=config.telemetry_max_predictions)
        self.pump.on_model_changed(manifest)
        self.calls: queue.Queue[tuple[Callable[[], Any], queue.Queue[Any]]] = queue.Queue()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.recorded = 0

    def start(self) -> "AgentSide":
        self.link.start()
        self.thread.start()
        return self

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                event = self.inbox.get(timeout=0.01)
            except queue.Empty:
                event = None
            if isinstance(event, Published):
                self.pump.on_published(event.mid, event.reason, event.no_subscribers)
            elif isinstance(event, Connected):
                self.pump.on_connected()
            while not self.calls.empty():
                fn, result = self.calls.get()
                result.put(fn())
            self.pump.tick()

    def call(self, fn: Callable[[], Any]) -> Any:
        result: queue.Queue[Any] = queue.Queue()
        self.calls.put((fn, result))
        return result.get(timeout=TIMEOUT)

    def predict(self, n: int = 1) -> None:
        for i in range(n):
            self.pump.record({"age in years": 20.0 + i % 50, "income": 5.0, "plan": "pro"},
                             SimpleNamespace(label=i % 2), 1.0)
            self.recorded += 1

    def drain(self) -> None:
        """Close the open window and wait until the broker has acknowledged everything."""
        self.call(self.pump.flush)
        deadline = time.monotonic() + TIMEOUT
        while self.call(self.outbox.count):
            assert time.monotonic() < deadline, f"{self.call(self.outbox.count)} windows never acknowledged"
            time.sleep(0.05)

    def stop(self, clean: bool = True) -> None:
        self.stopping.set()
        self.thread.join(TIMEOUT)
        self.link.stop(clean=clean)
        self.outbox.close()


class Receiver:
    """The ingest side: a persistent MQTT 5 session, so windows published while it reconnects wait for it."""

    def __init__(self, url: str, topic: str) -> None:
        self.windows: list[TelemetryWindow] = []
        self.lock = threading.Lock()
        self.connected = threading.Event()
        host, port = url.split("://", 1)[1].rsplit(":", 1)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"receiver-{os.getpid()}",
                                  protocol=mqtt.MQTTv5)
        self.client.reconnect_delay_set(0.1, 1)  # type: ignore[arg-type]
        self.client.on_connect = lambda c, _u, _f, _r, _p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda _c, _u, _m, _r, _p: self.connected.set()  # SUBACK: now it receives
        self.client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect(host, int(port), clean_start=False, properties=props)
        self.client.loop_start()
        assert self.connected.wait(TIMEOUT)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.windows.append(TelemetryWindow.parse(msg.payload))

    def unique(self) -> dict[int, TelemetryWindow]:
        """Dedupe on seq, as the ingest service does on (device, epoch, seq): one device, one outbox here, so
        one epoch (asserted); a duplicate must be identical."""
        seen: dict[int, TelemetryWindow] = {}
        with self.lock:
            assert len({w.epoch for w in self.windows}) <= 1, "one outbox, one epoch"
            for window in self.windows:
                assert seen.setdefault(window.seq, window) == window, f"seq {window.seq} reused for other data"
        return seen

    def wait_for_seqs(self, expected: set[int]) -> dict[int, TelemetryWindow]:
        deadline = time.monotonic() + TIMEOUT
        while not expected <= set(self.unique()):
            assert time.monotonic() < deadline, f"missing seqs {sorted(expected - set(self.unique()))}"
            time.sleep(0.05)
        return self.unique()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="module")
def manifest() -> ReleaseManifest:
    return build_release("churn", 1, new_key()).manifest


@pytest.fixture
def durable_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """own_broker with persistence that really works (as root Mosquitto would drop to a user that cannot
    write pytest's tmp dir) and an autosave every second, so the receiver's session survives a kill."""
    extra = "autosave_interval 1\n" + ("user root\n" if os.geteuid() == 0 else "")
    with running_mosquitto(tmp_path / "broker", extra) as broker:
        yield broker


def agent_config(url: str, data_dir: Path, **extra: Any) -> AgentConfig:
    return AgentConfig(device_id=DEVICE, data_dir=data_dir, broker_url=url, **{"telemetry_interval_s": 0.1, **extra})


def wait_for_autosave(broker: Mosquitto) -> None:
    db, since, deadline = broker.workdir / "mosquitto.db", time.time(), time.monotonic() + TIMEOUT
    while not (db.exists() and db.stat().st_mtime > since):
        assert time.monotonic() < deadline, "the broker did not save its database"
        time.sleep(0.1)


def test_broker_killed_during_telemetry_loses_no_window(durable_broker: Mosquitto, tmp_path: Path,
                                                       manifest: ReleaseManifest) -> None:
    receiver = Receiver(durable_broker.url, f"edgeops/devices/{DEVICE}/telemetry")
    wait_for_autosave(durable_broker)  # the receiver's session is on disk before the kill
    agent = AgentSide(agent_config(durable_broker.url, tmp_path / "agent"), manifest).start()
    feeding = threading.Event()
    feeding.set()

    def feed() -> None:
        while feeding.is_set():
            agent.predict(5)
            time.sleep(0.005)

    feeder = threading.Thread(target=feed)
    feeder.start()
    time.sleep(1.0)
    durable_broker.restart(down_for=3.0)  # kill -9 while windows are being closed and published
    time.sleep(1.0)
    feeding.clear()
    feeder.join()
    agent.drain()
    sent = agent.call(agent.outbox.next_seq)
    windows = receiver.wait_for_seqs(set(range(sent)))
    duplicates = len(receiver.windows) - len(windows)
    print(f"\n{sent} windows, {agent.recorded} predictions, {duplicates} duplicate deliveries (deduped)")
    assert set(windows) == set(range(sent))
    assert sum(w.count for w in windows.values()) == agent.recorded  # none lost, none counted twice
    assert all(w.dropped == 0 for w in windows.values())
    agent.stop()
    receiver.close()


def test_pending_windows_are_delivered_after_an_agent_restart(own_broker: Mosquitto, tmp_path: Path,
                                                               manifest: ReleaseManifest) -> None:
    own_broker.stop()  # the agent runs without a broker: windows pile up in the outbox
    config = agent_config(own_broker.url, tmp_path / "agent")
    agent = AgentSide(config, manifest).start()
    for _ in range(4):
        agent.predict(3)
        agent.call(agent.pump.flush)
    assert agent.call(agent.outbox.count) == 4
    agent.stop(clean=False)  # the process ends with 4 windows pending

    own_broker.start()
    receiver = Receiver(own_broker.url, f"edgeops/devices/{DEVICE}/telemetry")
    agent = AgentSide(config, manifest).start()  # a new process on the same data dir
    agent.predict(2)
    agent.drain()
    windows = receiver.wait_for_seqs({0, 1, 2, 3, 4})
    assert [windows[s].count for s in range(5)] == [3, 3, 3, 3, 2]  # seq continued at 4 after the restart
    agent.stop()
    receiver.close()


def test_a_full_outbox_reports_the_windows_it_dropped(own_broker: Mosquitto, tmp_path: Path,
                                                      manifest: ReleaseManifest) -> None:
    own_broker.stop()
    config = agent_config(own_broker.url, tmp_path / "agent", outbox_max_windows=3)
    agent = AgentSide(config, manifest).start()
    for _ in range(7):
        agent.predict(1)
        agent.call(agent.pump.flush)
    own_broker.start()
    receiver = Receiver(own_broker.url, f"edgeops/devices/{DEVICE}/telemetry")
    agent.drain()
    agent.predict(1)
    agent.drain()  # one more window after the outage carries what is still uncounted
    windows = receiver.wait_for_seqs({4, 5, 6, 7})
    assert set(windows) == {4, 5, 6, 7}  # 0..3 were dropped while the broker was away ...
    assert sum(w.dropped for w in windows.values()) == 4  # ... and the windows that arrived say so
    agent.stop()
    receiver.close()


def test_the_real_agent_reports_its_predictions_after_an_offline_restart(own_broker: Mosquitto, tmp_path: Path) -> None:
    """The whole agent: predictions and feedback while the broker is down, a restart, then delivery."""
    from releases import public_pem

    from edge_agent.agent import Agent
    from edge_agent.store import ModelStore, Pointer

    key = new_key()
    release = build_release("churn", 2, key)
    (tmp_path / "release.pub").write_bytes(public_pem(key))
    store = ModelStore(tmp_path / "agent")
    store.write_pointer(Pointer(store.install(release.manifest, release.data), None))
    config = agent_config(own_broker.url, tmp_path / "agent", public_keys=(tmp_path / "release.pub",),
                          telemetry_interval_s=3600.0, telemetry_max_predictions=10)
    own_broker.stop()
    agent = Agent(config).start()
    rows = [{"age in years": 30.0 + i, "income": 4.0 + i % 3, "plan": "basic"} for i in range(25)]
    predictions = []
    for row in rows:
        predictions.append(agent.predict(row))
        time.sleep(0.02)  # gives the owner thread ticks to close windows of 10 (how many is not asserted)
    for p in predictions[:4]:
        agent.feedback(p.id, p.label)
    agent.stop()  # closes the open window into the outbox too
    pending = Outbox(agent.outbox.path, 100)
    stored = [seq for seq, _ in pending.pending()]
    pending.close()
    assert stored and stored == list(range(len(stored)))  # all pending, gapless from seq 0

    own_broker.start()
    receiver = Receiver(own_broker.url, f"edgeops/devices/{DEVICE}/telemetry")
    agent = Agent(config).start()
    try:
        windows = receiver.wait_for_seqs(set(stored))
    finally:
        agent.stop()
        receiver.close()
    assert sum(w.count for w in windows.values()) == 25
    assert all((w.model, w.version) == ("churn", 2) for w in windows.values())
    assert sum(w.features["plan"].counts[0] for w in windows.values()) == 25  # all "basic"
    assert sum(w.predictions.total for w in windows.values() if w.predictions) == 25
    assert sum(w.feedback.get("labelled", 0) for w in windows.values()) == 4
    assert all(w.feedback["accuracy"] == 1.0 for w in windows.values() if w.feedback)

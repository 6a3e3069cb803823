"""The ingest service against a real Mosquitto: exactly-once storage under redelivery, broker and ingest
crashes, malformed input, and a shared subscription split between two instances."""

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from services import Mosquitto, wait_until

from edge_agent.protocol import AgentEvent, Counts, Status, TelemetryWindow, Topics
from edgeops.mqtt import BrokerAddress
from edgeops.telemetry.events import EventSpec
from edgeops.telemetry.ingest import IngestConfig, IngestService
from edgeops.telemetry.store import TelemetryStore

pytestmark = pytest.mark.integration
WAIT_S = 30.0


def window(device: str, seq: int) -> TelemetryWindow:
    return TelemetryWindow(device=device, seq=seq, model="churn", version=1, start="2026-01-01T00:00:00Z",
                           end="2026-01-01T00:01:00Z", count=10, latency_ms={"p95": 3.0},
                           features={"x": Counts((3, 4, 3))}, predictions=Counts((6, 4)), ts="2026-01-01T00:01:00Z")


class Publisher:
    """A device-like sender: QoS 1, and it keeps every message until its PUBACK (like the agent's outbox), so
    after a broker restart it re-sends what was not acknowledged."""

    def __init__(self, url: str) -> None:
        address = BrokerAddress.parse(url)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_publish = self._on_publish
        self.pending: dict[int, tuple[str, bytes]] = {}
        self.early: set[int] = set()    # PUBACKs that arrived before publish() returned
        self.lock = threading.Lock()
        self.client.reconnect_delay_set(1, 2)
        self.client.connect(address.host, address.port)
        self.client.loop_start()

    def _on_publish(self, _c: object, _u: object, mid: int, _rc: object, _p: object) -> None:
        with self.lock:
            if self.pending.pop(mid, None) is None:
                self.early.add(mid)

    def publish(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)   # not under our lock: paho may call back inside
        with self.lock:
            if info.mid in self.early:
                self.early.discard(info.mid)
            else:
                self.pending[info.mid] = (topic, payload)

    def resend_unacked(self) -> None:
        with self.lock:
            unacked, self.pending = list(self.pending.values()), {}
        for topic, payload in unacked:
            self.publish(topic, payload)

    def wait_acked(self, timeout: float = WAIT_S) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if not self.pending:
                    return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher(session_broker: str) -> Iterator[Publisher]:
    p = Publisher(session_broker)
    yield p
    p.close()


def wait_for(predicate: Callable[[], object], timeout: float = WAIT_S) -> bool:
    return wait_until(predicate, timeout)


def config(url: str, prefix: str, **kw: object) -> IngestConfig:
    return IngestConfig(broker_url=url, prefix=prefix, group=kw.pop("group", "ingest"),  # type: ignore[arg-type]
                        instance=kw.pop("instance", "0"), client_id=kw.pop("client_id", None),  # type: ignore[arg-type]
                        batch_size=kw.pop("batch_size", 50), flush_ms=kw.pop("flush_ms", 50))  # type: ignore[arg-type]


def unique_client_id(prefix: str, instance: str = "0") -> str:
    return f"ingest-{prefix.replace('/', '-')}-{instance}"


@pytest.mark.parametrize("writer_process", [True, False], ids=["writer-process", "writer-thread"])
def test_duplicate_deliveries_are_stored_once(session_broker: str, topic_prefix: str, store: TelemetryStore,
                                              publisher: Publisher, writer_process: bool) -> None:
    topics = Topics(topic_prefix)
    cfg = replace(config(session_broker, topic_prefix, client_id=unique_client_id(topic_prefix)),
                  writer_process=writer_process)
    with IngestService(cfg, store) as ingest:
        for repeat in range(3):
            for dev in ("dev-a", "dev-b"):
                for seq in range(20) if repeat % 2 == 0 else reversed(range(20)):
                    publisher.publish(topics.device(dev, "telemetry"), window(dev, seq).to_bytes())
        assert publisher.wait_acked()
        assert ingest.wait_until(lambda s: s.stored + s.duplicates == 120, WAIT_S)
        stats = ingest.stats
    assert sorted(store.window_keys()) == sorted((d, s) for d in ("dev-a", "dev-b") for s in range(20))
    assert (stats.stored, stats.duplicates, stats.malformed) == (40, 80, 0)
    assert store.windows(device="dev-a")[0] == window("dev-a", 0)


@pytest.mark.parametrize("writer_process", [True, False], ids=["writer-process", "writer-thread"])
def test_malformed_messages_are_counted_and_skipped(session_broker: str, topic_prefix: str,
                                                    store: TelemetryStore, publisher: Publisher,
                                                    writer_process: bool) -> None:
    topics = Topics(topic_prefix)
    good = window("dev-a", 1).to_json()
    bad: list[bytes] = [b"{not json", b"\xff\xfe", b"[]",
                        b'{"schema": {"name": "edgeops.telemetry", "version": "9.0"}}',
                        window("dev-b", 1).to_bytes(),      # names another device than its topic
                        window("dev-a", 2).to_bytes().replace(b'"seq":2', b'"seq":-2'),
                        window("dev-a", 3).to_bytes().replace(b'"end":"2026-01-01T00:01:00Z"', b'"end":"soon"'),
                        window("dev-a", 4).to_bytes().replace(b'"p95":3.0', b'"p95":1' + b'0' * 400)]   # no float
    cfg = replace(config(session_broker, topic_prefix, client_id=unique_client_id(topic_prefix)),
                  writer_process=writer_process)
    with IngestService(cfg, store) as ingest:
        for payload in bad:
            publisher.publish(topics.device("dev-a", "telemetry"), payload)
        publisher.publish(topics.device("dev-a", "events"), b'{"schema": 1}')
        publisher.publish(topics.device("dev-a", "telemetry"), TelemetryWindow.from_json(good).to_bytes())
        assert publisher.wait_acked()
        assert ingest.wait_until(lambda s: s.stored == 1 and s.malformed == len(bad) + 1, WAIT_S), ingest.stats
        assert ingest.stats.acked == len(bad) + 2   # malformed ones are acknowledged too: no redelivery loop
    assert store.window_keys() == [("dev-a", 1)]


def test_presence_and_agent_events_are_stored_and_emitted_once(session_broker: str, topic_prefix: str,
                                                               store: TelemetryStore, publisher: Publisher) -> None:
    topics = Topics(topic_prefix)
    emitted: list[EventSpec] = []
    installed = AgentEvent(device="dev-a", event="installed", model="churn", version=2, rollout_id="r1")
    cfg = config(session_broker, topic_prefix, client_id=unique_client_id(topic_prefix))
    with IngestService(cfg, store, emit=emitted.append) as ingest:
        for status in ("online", "online", "offline", "online"):
            publisher.publish(topics.device("dev-a", "status"), Status(device="dev-a", status=status).to_bytes())
        for _ in range(3):
            publisher.publish(topics.device("dev-a", "events"), installed.to_bytes())
        assert publisher.wait_acked()
        assert ingest.wait_until(lambda s: s.other == 7, WAIT_S), ingest.stats
    names = [e.event for e in emitted]
    assert names.count("edgeops.model.installed") == 1
    assert [n for n in names if n.startswith("edgeops.device.")] == [
        "edgeops.device.online", "edgeops.device.offline", "edgeops.device.online"]
    model_event = next(e for e in emitted if e.event == "edgeops.model.installed")
    assert model_event.resource["prefect.resource.id"] == "edgeops.device.dev-a"
    assert model_event.related[0]["prefect.resource.id"] == "edgeops.model.churn"
    assert store.devices()[0]["status"] == "online"
    assert len(store.agent_events("dev-a")) == 1


@pytest.mark.parametrize("kill", [True, False], ids=["sigkill", "sigterm"])
def test_broker_restart_mid_stream_every_window_stored_once(tmp_path: Path, topic_prefix: str,
                                                            store: TelemetryStore, kill: bool) -> None:
    """The broker goes down while the ingest holds 150 received but uncommitted, unacknowledged windows.
    SIGTERM: Mosquitto saves the session and redelivers them (duplicates the store ignores). SIGKILL: the session
    is gone, but the ingest still stores what it had queued and re-subscribes. Either way: 300 windows, once.
    (Our own broker config: ``user root`` keeps Mosquitto from dropping to a user that cannot write its
    persistence file in a root-owned temp dir.)"""
    topics = Topics(topic_prefix)
    broker = Mosquitto(tmp_path / "mosquitto", extra_config="user root\n").start()
    publisher = Publisher(broker.url)
    try:
        cfg = replace(config(broker.url, topic_prefix), batch_size=1000, flush_ms=1500)
        with IngestService(cfg, store) as ingest:
            for seq in range(150):
                publisher.publish(topics.device("dev-a", "telemetry"), window("dev-a", seq).to_bytes())
            assert publisher.wait_acked()
            assert ingest.wait_until(lambda s: s.received >= 150, WAIT_S)
            assert ingest.stats.acked == 0
            broker.restart(kill=kill)
            assert ingest.wait_until(lambda s: s.subscribed == 2, WAIT_S)
            for seq in range(150, 300):
                publisher.publish(topics.device("dev-a", "telemetry"), window("dev-a", seq).to_bytes())
            assert publisher.wait_acked()
            assert wait_for(lambda: store.count_windows() >= 300), sorted(set(range(300)) - {
                s for _, s in store.window_keys()})
    finally:
        publisher.close()
        broker.stop()
    keys = store.window_keys()
    assert len(keys) == len(set(keys)) == 300
    assert sorted(s for _, s in keys) == list(range(300))


INGEST_CHILD = """
import sys, time
from edgeops.telemetry.ingest import IngestConfig, IngestService
from edgeops.telemetry.store import TelemetryStore
cfg = IngestConfig(broker_url=sys.argv[1], prefix=sys.argv[2], client_id=sys.argv[3], batch_size=100000,
                   flush_ms=600000)
service = IngestService(cfg, TelemetryStore(sys.argv[4])).start()
print("ready", flush=True)
time.sleep(600)
"""


def test_ingest_killed_before_commit_loses_nothing(own_broker: Mosquitto, topic_prefix: str,
                                                   store: TelemetryStore, tmp_path: Path) -> None:
    """Messages received but not yet committed when the ingest dies are redelivered, because the PUBACK is
    only sent after the commit (manual ack) and the session outlives the process."""
    topics = Topics(topic_prefix)
    client_id = unique_client_id(topic_prefix)
    child = subprocess.Popen([sys.executable, "-c", INGEST_CHILD, own_broker.url, topic_prefix, client_id,
                              store.url], stdout=subprocess.PIPE, text=True, env={**os.environ})
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        publisher = Publisher(own_broker.url)
        for seq in range(50):
            publisher.publish(topics.device("dev-a", "telemetry"), window("dev-a", seq).to_bytes())
        assert publisher.wait_acked()
        publisher.close()
        time.sleep(0.5)                      # let the child receive them into its (never flushed) queue
        assert store.count_windows() == 0
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    with IngestService(config(own_broker.url, topic_prefix, client_id=client_id), store) as ingest:
        assert ingest.wait_until(lambda s: s.stored == 50, WAIT_S), ingest.stats
    assert sorted(s for _, s in store.window_keys()) == list(range(50))


def test_a_killed_writer_process_is_replaced_and_nothing_is_lost(session_broker: str, topic_prefix: str,
                                                                 store: TelemetryStore, publisher: Publisher) -> None:
    """The writer process dies (SIGKILL) with batches in flight: the service starts a new one and sends it every
    batch not yet reported; those messages were not acknowledged, so nothing is lost and nothing is stored twice."""
    topics = Topics(topic_prefix)
    cfg = replace(config(session_broker, topic_prefix, client_id=unique_client_id(topic_prefix)), batch_size=20,
                  flush_ms=20)
    with IngestService(cfg, store) as ingest:
        first = ingest.writer_pid
        assert first is not None
        for seq in range(100):
            publisher.publish(topics.device("dev-a", "telemetry"), window("dev-a", seq).to_bytes())
        assert ingest.wait_until(lambda s: s.stored >= 20, WAIT_S)
        os.kill(first, signal.SIGKILL)
        for seq in range(100, 200):
            publisher.publish(topics.device("dev-a", "telemetry"), window("dev-a", seq).to_bytes())
        assert publisher.wait_acked()
        assert ingest.wait_until(lambda s: s.acked == 200, WAIT_S), ingest.stats
        assert ingest.writer_pid not in (None, first)
        stats = ingest.stats
    assert stats.stored + stats.duplicates == 200 and stats.malformed == 0, stats
    keys = store.window_keys()
    assert len(keys) == len(set(keys)) == 200


def test_two_instances_split_the_load_and_store_everything_once(session_broker: str, topic_prefix: str,
                                                                store: TelemetryStore,
                                                                publisher: Publisher) -> None:
    topics = Topics(topic_prefix)
    group = "g" + topic_prefix.rsplit("/", 1)[-1]
    configs = [config(session_broker, topic_prefix, group=group, client_id=unique_client_id(topic_prefix, i))
               for i in ("0", "1")]
    with IngestService(configs[0], store) as first, IngestService(configs[1], store) as second:
        for seq in range(200):
            dev = f"dev-{seq % 7}"
            publisher.publish(topics.device(dev, "telemetry"), window(dev, seq).to_bytes())
        assert publisher.wait_acked()
        assert wait_for(lambda: first.stats.stored + second.stats.stored == 200)
        split = (first.stats.stored, second.stats.stored)
    assert min(split) > 0, split
    keys = store.window_keys()
    assert len(keys) == len(set(keys)) == 200


def test_events_reach_prefect(session_broker: str, topic_prefix: str, store: TelemetryStore,
                              publisher: Publisher, prefect_harness: None) -> None:
    """Through Prefect's test harness: the ingest emits, and the events API gives the event back."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventResourceFilter
    from prefect.events.worker import EventsWorker

    from edgeops.telemetry.events import emit_to_prefect

    topics = Topics(topic_prefix)
    device = "dev-" + topic_prefix.rsplit("/", 1)[-1]
    cfg = config(session_broker, topic_prefix, client_id=unique_client_id(topic_prefix))
    with IngestService(cfg, store, emit=emit_to_prefect) as ingest:
        event = AgentEvent(device=device, event="rolled_back", model="churn", version=5, reason="probation")
        publisher.publish(topics.device(device, "events"), event.to_bytes())
        assert ingest.wait_until(lambda s: s.other == 1, WAIT_S)
    EventsWorker.drain_all()
    wanted = EventFilter(resource=EventResourceFilter(id=[f"edgeops.device.{device}"]))
    with get_client(sync_client=True) as client:
        assert wait_for(lambda: client.read_events(wanted, limit=50).events)
        (received,) = client.read_events(wanted, limit=50).events
    assert received.event == "edgeops.model.rolled_back"
    assert received.payload["reason"] == "probation"
    # the model; Prefect adds the flow run in whose context a process last ran a flow (other tests' runs)
    assert [r.id for r in received.related if r.id.startswith("edgeops.")] == ["edgeops.model.churn"]


def test_serve_command_runs_until_sigterm(session_broker: str, topic_prefix: str, tmp_path: Path,
                                          publisher: Publisher) -> None:
    """``edgeops telemetry serve`` as a process: stores what arrives, stops cleanly on SIGTERM."""
    db = f"sqlite:///{tmp_path / 'serve.db'}"
    code = "from edgeops.cli.telemetry import app; app()"
    child = subprocess.Popen(
        [sys.executable, "-c", code, "serve", "--db", db, "--broker", session_broker, "--prefix", topic_prefix,
         "--group", "g" + topic_prefix.rsplit("/", 1)[-1], "--flush-ms", "50", "--no-events"],
        stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert child.stderr is not None
        assert "Ctrl-C to stop" in child.stderr.readline() or "Ctrl-C to stop" in child.stderr.readline()
        store = TelemetryStore(db)
        topics = Topics(topic_prefix)
        deadline = time.monotonic() + WAIT_S
        while store.count_windows() == 0 and time.monotonic() < deadline:   # until its subscription is live
            publisher.publish(topics.device("dev-a", "telemetry"), window("dev-a", 0).to_bytes())
            time.sleep(0.2)
        for seq in range(1, 20):
            publisher.publish(topics.device("dev-a", "telemetry"), window("dev-a", seq).to_bytes())
        assert publisher.wait_acked()
        assert wait_for(lambda: store.count_windows() == 20)
        store.close()
    finally:
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    assert "stopped:" in err


def test_a_device_whose_outbox_was_replaced_is_not_taken_for_a_redelivery(
        session_broker: str, topic_prefix: str, store: TelemetryStore, tmp_path: Path) -> None:
    """The real agent: its outbox wiped (a reflash keeping the device id) restarts seq at 0, under a new epoch."""
    from releases import agent_config as real_agent_config
    from releases import build_release, new_key, preinstall

    from edge_agent.agent import Agent

    key = new_key()
    preinstall(tmp_path / "data", build_release("churn", 1, key))
    agent_cfg = real_agent_config(tmp_path, session_broker, topic_prefix, key, "dev-w", telemetry_max_predictions=5)
    row = {"age in years": 40.0, "income": 3.0, "plan": "pro"}
    epochs = []
    with IngestService(config(session_broker, topic_prefix, client_id=unique_client_id(topic_prefix)), store):
        for life in (1, 2):
            agent = Agent(agent_cfg).start()
            epochs.append(agent.outbox.epoch)
            for window_no in (1, 2):  # two windows of 5 predictions: seq 0 and 1
                for _ in range(5):
                    agent.predict(row)
                stored = 2 * (life - 1) + window_no
                assert wait_for(lambda n=stored: store.count_windows() == n), store.window_keys()
            agent.stop()
            for path in (tmp_path / "data").glob("outbox.sqlite*"):
                path.unlink()  # the reflash: the next life starts a new outbox
    assert sorted(store.window_keys()) == [("dev-w", 0), ("dev-w", 0), ("dev-w", 1), ("dev-w", 1)]
    assert epochs[0] != epochs[1] and sorted({w.epoch for w in store.windows(device="dev-w")}) == sorted(epochs)
    assert sum(w.count for w in store.windows(device="dev-w")) == 20

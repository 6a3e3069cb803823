"""Nobody subscribes (the ingest is not running, or not subscribed yet): Mosquitto answers each publish with
PUBACK 0x10 "no matching subscribers". The real agent keeps its telemetry windows and its events, retries on a
growing delay (no flood), and delivers everything once a subscriber is there.

What the broker answered is read from the broker's own log (``log_type all``), not from the agent: the tests
wait for Mosquitto to have said 0x10 ("rc16") before a subscriber comes, so they also fail on an agent that
took 0x10 for delivery."""

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from releases import Control, agent_config, build_release, new_key, preinstall, tampered_artifact
from services import Mosquitto

from edge_agent.agent import Agent
from edge_agent.protocol import TelemetryWindow, Topics
from edgeops.telemetry.ingest import IngestConfig, IngestService
from edgeops.telemetry.store import TelemetryStore

pytestmark = pytest.mark.integration
DEVICE = "press-alone"
WAIT_S = 30.0
ROW = {"age in years": 41.0, "income": 3.0, "plan": "pro"}


PUBLISH = re.compile(r"Received PUBLISH from (\S+) \(d\d, q1, r\d, m(\d+), '([^']*)'")
PUBACK = re.compile(r"Sending PUBACK to (\S+) \(m(\d+), rc(\d+)\)")
NO_MATCHING_SUBSCRIBERS = 16


def broker_answers(broker: Mosquitto, topic: str) -> list[int]:
    """The reason codes of the broker's PUBACKs to QoS 1 publishes on ``topic``, in order, from its log."""
    asked: set[tuple[str, str]] = set()
    codes = []
    for line in broker.log().splitlines():
        if (publish := PUBLISH.search(line)) is not None:
            if publish[3] == topic:
                asked.add((publish[1], publish[2]))
        elif (puback := PUBACK.search(line)) is not None and (puback[1], puback[2]) in asked:
            asked.discard((puback[1], puback[2]))
            codes.append(int(puback[3]))
    return codes


def wait_for(predicate: Any, timeout: float = WAIT_S) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


class Subscriber:
    """A plain subscriber that records what arrives, in arrival order."""

    def __init__(self, url: str, topic: str) -> None:
        host, port = url.split("://", 1)[1].rsplit(":", 1)
        self.windows: list[TelemetryWindow] = []
        self.subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = lambda _c, _u, msg: self.windows.append(TelemetryWindow.parse(msg.payload))
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.connect(host, int(port))
        self.client.loop_start()
        self.client.subscribe(topic, qos=1)
        assert self.subscribed.wait(WAIT_S)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path / "mosquitto", extra_config="log_type all\n").start()
    yield broker
    broker.stop()


@pytest.fixture
def key() -> Any:
    return new_key()


@pytest.fixture
def agent(broker: Mosquitto, tmp_path: Path, topic_prefix: str, key: Any) -> Iterator[Agent]:
    preinstall(tmp_path / "data", build_release("churn", 1, key))
    agent = Agent(agent_config(tmp_path, broker.url, topic_prefix, key, DEVICE, telemetry_interval_s=3600.0,
                               telemetry_max_predictions=5))
    yield agent
    agent.stop()


def test_windows_wait_for_a_subscriber_without_flooding_the_broker(agent: Agent, broker: Mosquitto,
                                                                    topic_prefix: str) -> None:
    topic = Topics(topic_prefix).device(DEVICE, "telemetry")
    agent.start()
    for window in range(1, 5):  # four windows of five predictions (the owner thread closes a full one)
        for _ in range(5):
            agent.predict(ROW)
        assert wait_for(lambda n=window: agent.outbox.next_seq() == n)
    assert wait_for(lambda: broker_answers(broker, topic).count(NO_MATCHING_SUBSCRIBERS) >= 4), "no 0x10 seen"
    before = len(broker_answers(broker, topic))
    time.sleep(4.0)
    retries = len(broker_answers(broker, topic)) - before
    assert agent.outbox.count() == 4, "windows nobody received were taken for delivered"
    assert retries <= 6, f"{retries} publishes in 4 s while nobody subscribes"  # 0.5 s growing 1.5x: ~4

    subscriber = Subscriber(broker.url, topic)
    try:
        assert wait_for(lambda: agent.outbox.count() == 0), "windows never delivered"
        assert wait_for(lambda: len(subscriber.windows) >= 4)
    finally:
        subscriber.close()
    seqs = [w.seq for w in subscriber.windows]
    print(f"\n4 windows kept while nobody subscribed; {retries} retries in 4 s; arrived as {seqs}")
    assert seqs == [0, 1, 2, 3]  # each once, in seq order
    assert sum(w.count for w in subscriber.windows) == 20 and not any(w.dropped for w in subscriber.windows)
    assert not agent.pump.backoff.waiting


def test_an_event_nobody_subscribed_to_reaches_the_ingest_when_it_comes(agent: Agent, broker: Mosquitto,
                                                                         topic_prefix: str, tmp_path: Path,
                                                                         key: Any) -> None:
    agent.start()
    control = Control(broker.url, topic_prefix, key)
    topic = Topics(topic_prefix).device(DEVICE, "events")
    store = TelemetryStore(f"sqlite:///{tmp_path / 'telemetry.db'}")
    try:
        control.publish_release(tampered_artifact(build_release("churn", 2, key, seed=1)))
        control.set_desired(DEVICE, "churn", 2)
        assert wait_for(lambda: NO_MATCHING_SUBSCRIBERS in broker_answers(broker, topic)), "no 0x10 seen"
        with IngestService(IngestConfig(broker_url=broker.url, prefix=topic_prefix, flush_ms=20,
                                        client_id=f"ingest-{DEVICE}"), store):
            assert wait_for(lambda: store.agent_events(DEVICE)), "the event never arrived"
    finally:
        control.close()
        store_events = store.agent_events(DEVICE)
        store.close()
    assert [(e["event"], e["version"]) for e in store_events] == [("rejected", 2)]

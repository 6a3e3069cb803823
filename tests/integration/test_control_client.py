"""The control plane's MQTT client through a broker outage (its own Mosquitto, stopped and started)."""

import time
from pathlib import Path

import pytest
from services import Mosquitto, wait_until

from edgeops.mqtt import ControlClient

pytestmark = pytest.mark.integration


def test_a_publish_made_while_the_broker_is_away_is_acknowledged_after_it_returns(
    own_broker: Mosquitto, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}/state"
    with ControlClient(own_broker.url, timeout_s=30) as client:
        own_broker.stop()
        assert not client.wait_connected(time.monotonic() + 0.5)  # the client saw the broker go
        publication = client.publish_many([(topic, b"while-away", True)], wait=False)
        own_broker.start()
        publication.wait()  # raised "client is not currently connected" before the fix
    with ControlClient(own_broker.url) as reader:
        assert reader.collect_retained(topic) == {topic: b"while-away"}


def test_collect_retained_reads_a_large_state_and_keeps_other_messages(session_broker: str,
                                                                        topic_prefix: str) -> None:
    state = {f"{topic_prefix}/devices/d{i:04d}/reported": f"r{i}".encode() for i in range(2000)}
    other = f"{topic_prefix}/other"
    with ControlClient(session_broker, timeout_s=30) as client:
        client.publish_many((t, p, True) for t, p in state.items())
        client.subscribe(other)
        client.publish(other, b"live")  # another reader's message, arriving while the state is read
        try:
            assert client.collect_retained(f"{topic_prefix}/devices/+/reported", sync_root=topic_prefix) == state
            kept = client.next_message(5)
            assert kept is not None and (kept.topic, kept.payload) == (other, b"live")
        finally:
            client.publish_many((t, b"", True) for t in state)


def test_collect_retained_ends_when_an_acl_drops_its_marker(tmp_path: Path, topic_prefix: str) -> None:
    acl = tmp_path / "acl"
    acl.write_text(f"topic readwrite #\ntopic deny {topic_prefix}/control/#\n")
    broker = Mosquitto(tmp_path / "mosquitto", extra_config=f"acl_file {acl}\n").start()
    try:
        state = {f"{topic_prefix}/devices/d{i}/reported": b"x" for i in range(50)}
        with ControlClient(broker.url, timeout_s=30) as client:
            client.publish_many((t, p, True) for t, p in state.items())
            t0 = time.monotonic()
            got = client.collect_retained(f"{topic_prefix}/devices/+/reported", sync_root=topic_prefix)
            waited = time.monotonic() - t0
        assert got == state
        assert 1.5 < waited < 10  # the marker never came: it gave up after a quiet spell, not at the deadline
    finally:
        broker.stop()


def test_the_end_of_state_marker_travels_at_qos_0(session_broker: str, topic_prefix: str) -> None:
    """At QoS 1 the broker wrote a PUBACK and then the marker; without TCP_NODELAY on its side the marker waited
    for our delayed ACK (40 ms on Linux) on every read of the fleet. A watcher subscribed at QoS 1 gets each
    message at the QoS it was published with, so it sees which one the marker had."""
    with ControlClient(session_broker) as watcher, ControlClient(session_broker) as client:
        watcher._client.subscribe(f"{topic_prefix}/control/#", qos=1)
        watcher.subscribe(f"{topic_prefix}/control/+/other")  # its SUBACK: the first subscription is in place
        seen: list[int] = []
        watcher._client.on_message = lambda _c, _u, msg: seen.append(msg.qos)
        client.collect_retained(f"{topic_prefix}/devices/+/reported", sync_root=topic_prefix)
        watcher.publish(f"{topic_prefix}/control/x/other", b"after", retain=False)  # ordered behind the marker
        assert wait_until(lambda: len(seen) >= 2, 10)
    assert seen[0] == 0

"""PUBACK 0x10 "no matching subscribers" is not delivery: windows and events are kept and sent again, in order,
one at a time on a growing delay while nobody subscribes, all at once when a subscriber is back.

The link here is a recorder standing in for ``MqttLink`` (what was published, under which mid); the PUBACKs are
fed by hand, so the order of what the pump sends is exact. tests/integration/test_no_subscribers.py does the
same against a real broker.
"""

import json
import logging
from pathlib import Path

import pytest
from releases import build_release, new_key

from edge_agent.outbox import Outbox
from edge_agent.protocol import Topics
from edge_agent.telemetry_pump import MAX_INFLIGHT, TelemetryPump
from edge_agent.uplink import EventCourier, NoSubscriberBackoff

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Link:
    """Records publishes; every message gets a new mid."""

    def __init__(self) -> None:
        self.connected = True
        self.sent: list[tuple[int, str, bytes]] = []

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> int:
        mid = len(self.sent) + 1
        self.sent.append((mid, topic, payload))
        return mid


class Sent:
    """What the link got since the last look, as (mid, payload)."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self.seen = 0

    def __call__(self) -> list[tuple[int, bytes]]:
        new = [(mid, payload) for mid, _, payload in self.link.sent[self.seen:]]
        self.seen = len(self.link.sent)
        return new


def pump_with(tmp_path: Path, clock: Clock, windows: int, max_windows: int = 100) -> tuple[TelemetryPump, Sent]:
    link = Link()
    outbox = Outbox(tmp_path / "outbox.sqlite", max_windows)
    for _ in range(windows):
        outbox.put(outbox.next_seq(), f"w{outbox.next_seq()}".encode())
    pump = TelemetryPump(outbox, link, Topics("edgeops"), "d1",  # type: ignore[arg-type]
                         backoff=NoSubscriberBackoff("telemetry", clock=clock))
    return pump, Sent(link)


def test_the_delay_grows_only_with_answers_to_retries_and_a_delivery_resets_it(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    backoff = NoSubscriberBackoff("telemetry", low=0.5, high=30.0, clock=clock)
    assert backoff.due() and not backoff.waiting
    with caplog.at_level(logging.INFO, logger="edge_agent.uplink"):
        for _ in range(MAX_INFLIGHT):  # a burst: every message that was in flight comes back 0x10
            backoff.missed()
        assert backoff.waiting and not backoff.due()
        clock.now += 0.5 * 1.2  # the first delay, jitter included, is over
        assert backoff.due()
        delays = []
        for _ in range(20):  # each retry is answered 0x10 again, once the delay is over
            start = clock.now
            backoff.missed()
            while not backoff.due():
                clock.now += 0.01
            delays.append(clock.now - start)
        backoff.delivered()
        backoff.delivered()
    for attempt, delay in enumerate(delays, start=1):  # the burst counted as one miss: retries start at 1
        base = min(30.0, 0.5 * 1.5 ** attempt)
        assert base * 0.8 - 0.011 <= delay <= min(30.0, base * 1.2) + 0.011, (attempt, delay)
    assert not backoff.waiting and backoff.due()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and "no matching subscribers" in messages[0] and "delivered again" in messages[1]


def test_windows_nobody_took_stay_and_go_again_oldest_first(tmp_path: Path) -> None:
    clock = Clock()
    pump, sent = pump_with(tmp_path, clock, windows=3)
    pump.on_connected()
    first = sent()
    assert [p for _, p in first] == [b"w0", b"w1", b"w2"]
    for mid, _ in first:
        assert pump.on_published(mid, None, no_subscribers=True)
    assert pump.outbox.count() == 3  # nothing deleted
    pump.outbox.put(3, b"w3")
    pump.tick()
    assert sent() == []  # waiting: nothing goes before the delay is over
    clock.now += 1.0
    pump.tick()
    probe = sent()
    assert [p for _, p in probe] == [b"w0"]  # one window, the oldest
    pump.tick()
    clock.now += 100
    pump.tick()
    assert sent() == []  # not a second one while the first is unanswered
    pump.on_published(probe[0][0], None, no_subscribers=True)
    clock.now += 100
    pump.tick()
    probe = sent()
    assert [p for _, p in probe] == [b"w0"]
    pump.on_published(probe[0][0])  # a subscriber took it
    assert [p for _, p in sent()] == [b"w1", b"w2", b"w3"]  # the pipe is open again, in seq order
    assert [seq for seq, _ in pump.outbox.pending()] == [1, 2, 3]


def test_a_window_evicted_while_it_waited_is_not_sent_again(tmp_path: Path) -> None:
    clock = Clock()
    pump, sent = pump_with(tmp_path, clock, windows=2, max_windows=2)
    pump.on_connected()
    for mid, _ in sent():
        pump.on_published(mid, None, no_subscribers=True)
    pump.outbox.put(2, b"w2")  # the bound evicts w0, and counts it
    clock.now += 100
    pump.tick()
    assert [p for _, p in sent()] == [b"w1"]
    assert pump.outbox.dropped() == 1


def test_a_refused_window_is_still_counted_as_dropped(tmp_path: Path) -> None:
    pump, sent = pump_with(tmp_path, Clock(), windows=1)
    pump.on_connected()
    (mid, _), = sent()
    pump.on_published(mid, "Not authorized")
    assert pump.outbox.count() == 0 and pump.outbox.dropped() == 1
    assert not pump.on_published(999)  # not a window's mid


def test_events_nobody_took_are_sent_again_in_order() -> None:
    clock = Clock()
    link = Link()
    sent = Sent(link)
    courier = EventCourier(link, "edgeops/devices/d1/events",  # type: ignore[arg-type]
                           backoff=NoSubscriberBackoff("events", clock=clock))
    for name in (b"installed", b"rolled_back"):
        courier.publish(name)
    first = sent()
    assert [p for _, p in first] == [b"installed", b"rolled_back"]
    assert courier.on_published(first[1][0], None, no_subscribers=True)
    assert courier.on_published(first[0][0], None, no_subscribers=True)
    courier.publish(b"rejected")
    assert sent() == [] and courier.pending == 3
    clock.now += 100
    courier.tick()
    probe = sent()
    assert [p for _, p in probe] == [b"installed"]
    courier.on_published(probe[0][0])
    assert [p for _, p in sent()] == [b"rolled_back", b"rejected"]
    assert not courier.on_published(12345)


def test_events_waiting_are_bounded() -> None:
    link = Link()
    link.connected = False
    courier = EventCourier(link, "t", max_events=3)  # type: ignore[arg-type]
    for i in range(5):
        courier.publish(str(i).encode())
    link.connected = True
    courier.tick()
    assert [p for _, _, p in link.sent] == [b"2", b"3", b"4"]


def test_a_window_over_the_message_limit_is_dropped_and_counted_not_stored(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The broker caps messages at MAX_MESSAGE_BYTES and disconnects a client over it; a stored oversize window
    would be resent after every reconnect, so it must never reach the outbox."""
    import edge_agent.telemetry_pump as telemetry

    pump, sent = pump_with(tmp_path, Clock(), 0)
    pump.on_model_changed(build_release("churn", 3, new_key()).manifest)
    pump.record({"age in years": 30.0, "income": 2.0, "plan": "basic"}, 0, 1.0)
    monkeypatch.setattr(telemetry, "MAX_MESSAGE_BYTES", 200)
    pump.flush()
    assert pump.outbox.count() == 0 and pump.outbox.dropped() == 1 and sent() == []
    monkeypatch.undo()
    pump.record({"age in years": 30.0, "income": 2.0, "plan": "basic"}, 0, 1.0)
    pump.flush()  # the next window fits, goes out, and reports the loss
    (_, payload), = sent()
    assert json.loads(payload)["dropped"] == 1

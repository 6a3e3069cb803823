"""The telemetry store on the real PostgreSQL (fails, never skips, when it is unreachable). Each test works in a
schema of its own that is dropped afterwards."""

import threading
import uuid
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from services import POSTGRES_URL
from sqlalchemy import create_engine
from store_history import open_at_once, windows_before_epochs

from edge_agent.protocol import AgentEvent, Counts, Reported, Status, TelemetryWindow, Topics
from edgeops.telemetry.events import EventSpec
from edgeops.telemetry.ingest import IngestConfig, IngestService
from edgeops.telemetry.store import TelemetryStore

pytestmark = pytest.mark.integration


def window(device: str, seq: int, end: str = "2026-01-01T00:01:00Z") -> TelemetryWindow:
    return TelemetryWindow(device=device, seq=seq, model="churn", version=3, start="2026-01-01T00:00:00Z", end=end,
                           count=5, errors={"input": 1}, latency_ms={"p95": 2.5},
                           features={"x": Counts((1, 2, 2), missing=1)}, predictions=Counts((3, 2)),
                           feedback={"labelled": 2.0, "correct": 1.0}, ts="2026-01-01T00:01:00Z")


def test_windows_are_idempotent_and_read_back_exactly(pg_store: TelemetryStore) -> None:
    first = pg_store.write([window("a", 1), window("a", 1), window("b", 1)])
    again = pg_store.write([window("a", 1), window("a", 2, end="2026-01-02T00:00:00Z")])
    assert (first.windows, first.duplicates, again.windows, again.duplicates) == (2, 1, 1, 1)
    assert sorted(pg_store.window_keys()) == [("a", 1), ("a", 2), ("b", 1)]
    assert pg_store.windows(device="a")[0] == window("a", 1)
    assert pg_store.windows(since=datetime(2026, 1, 1, 12, tzinfo=UTC)) == [window("a", 2, end="2026-01-02T00:00:00Z")]
    assert pg_store.models() == [("churn", 3)]


def test_a_presence_change_seen_by_two_writers_at_once_raises_one_event(pg_store: TelemetryStore) -> None:
    other = TelemetryStore(pg_store.url, schema=pg_store.schema)   # a second ingest instance's connection
    try:
        for round_no in range(10):
            status = Status(device="a", status="online" if round_no % 2 == 0 else "offline",
                            ts=f"2026-01-01T00:00:{round_no:02d}Z")
            barrier = threading.Barrier(2)
            results: list[list[EventSpec]] = []

            def write(store: TelemetryStore, status: Status = status, barrier: threading.Barrier = barrier,
                      results: list[list[EventSpec]] = results) -> None:
                barrier.wait()
                results.append(store.write([status]).events)

            threads = [threading.Thread(target=write, args=(s,)) for s in (pg_store, other)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert sorted(len(r) for r in results) == [0, 1], round_no
            assert [e.event for r in results for e in r] == [f"edgeops.device.{status.status}"]
    finally:
        other.close()
    assert pg_store.devices()[0]["status"] == "offline"


def test_agent_events_and_reported_state(pg_store: TelemetryStore) -> None:
    rejected = AgentEvent(device="a", event="rejected", model="churn", version=4, reason="bad signature",
                          ts="2026-01-01T00:00:00Z")
    result = pg_store.write([rejected, rejected, Reported(device="a", state="serving", model="churn", version=3,
                                                          labels={"site": "x"})])
    assert [e.event for e in result.events] == ["edgeops.model.rejected"]
    assert pg_store.write([rejected]).events == []
    device = pg_store.devices()[0]
    assert (device["state"], device["model"], device["version"]) == ("serving", "churn", 3)
    assert device["reported"]["labels"] == {"site": "x"}


def test_ingest_into_postgresql(session_broker: str, topic_prefix: str, pg_store: TelemetryStore) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from edgeops.mqtt import BrokerAddress

    topics = Topics(topic_prefix)
    address = BrokerAddress.parse(session_broker)
    cfg = IngestConfig(broker_url=session_broker, prefix=topic_prefix, client_id=f"pg-{uuid.uuid4().hex[:8]}",
                       batch_size=50, flush_ms=50)
    with IngestService(cfg, pg_store) as ingest:
        pub = mqtt.Client(CallbackAPIVersion.VERSION2)
        pub.connect(address.host, address.port)
        pub.loop_start()
        infos = [pub.publish(topics.device("a", "telemetry"), window("a", seq % 40).to_bytes(), qos=1)
                 for seq in range(80)]
        for info in infos:
            info.wait_for_publish(10)
        pub.disconnect()
        pub.loop_stop()
        assert ingest.wait_until(lambda s: s.stored + s.duplicates == 80, 30), ingest.stats
    assert pg_store.count_windows() == 40


def test_windows_of_a_replaced_outbox_are_new_facts(pg_store: TelemetryStore) -> None:
    assert pg_store.write([window("a", 1)]).windows == 1
    result = pg_store.write([replace(window("a", 1), epoch="beef"), window("a", 1)])
    assert (result.windows, result.duplicates) == (1, 1)
    assert sorted(w.epoch for w in pg_store.windows(device="a")) == ["", "beef"]


def test_a_store_from_before_epochs_is_upgraded_and_keeps_its_windows() -> None:
    schema = f"edgeops_test_{uuid.uuid4().hex[:12]}"
    windows_before_epochs(create_engine(POSTGRES_URL), schema)
    store = TelemetryStore(POSTGRES_URL, schema=schema)
    try:
        assert store.window_keys() == [("a", 1)]  # kept, under epoch ""
        assert store.write([window("a", 1)]).duplicates == 1  # a 1.0 redelivery
        assert store.write([replace(window("a", 1), epoch="beef")]).windows == 1  # COPY path, new key
        again = TelemetryStore(POSTGRES_URL, schema=schema)  # opening it again changes nothing
        assert again.window_keys() == [("a", 1), ("a", 1)]
        again.close()
    finally:
        store.drop_schema()
        store.close()


def test_two_stores_opening_an_old_schema_at_once_upgrade_it_once() -> None:
    schema = f"edgeops_test_{uuid.uuid4().hex[:12]}"
    windows_before_epochs(create_engine(POSTGRES_URL), schema)
    opened: list[TelemetryStore] = []
    try:
        opened = open_at_once(lambda: TelemetryStore(POSTGRES_URL, schema=schema))
        assert all(store.window_keys() == [("a", 1)] for store in opened)
    finally:
        for store in opened:
            store.close()
        cleanup = TelemetryStore(POSTGRES_URL, schema=schema)
        cleanup.drop_schema()
        cleanup.close()


def test_label_credits_are_stored_once_and_summed_by_prediction_time_on_postgresql(pg_store: TelemetryStore) -> None:
    from edge_agent.protocol import FeedbackCredit

    credits = (FeedbackCredit("churn", 2, "2025-12-31T23:00:00.000Z", 30, correct=20),
               FeedbackCredit("load", 1, "2026-01-01T00:00:00.000Z", 4, abs_error_sum=6.0, abs_error_sq_sum=10.0))
    late = replace(window("a", 7), feedback_for=credits)
    assert pg_store.write([late, late]).windows == 1
    pg_store.write([replace(late, seq=8, feedback_for=credits[:1])])   # another window, another credit
    pg_store.write([late])                                             # a redelivery credits nothing again
    assert pg_store.add_labels([{"key": "p/churn@2:1:0", "source": "import", "model": "churn", "version": 2,
                                 "device": None, "window_start": datetime(2025, 12, 31, 23), "labelled": 1,
                                 "correct": 1, "abs_error_sum": None, "abs_error_sq_sum": None,
                                 "received_at": datetime(2026, 1, 3)}] * 2) == ["p/churn@2:1:0"]
    totals = pg_store.label_totals(since=datetime(2025, 12, 31, 22, tzinfo=UTC))
    assert (totals["churn", 2, "a"].labelled, totals["churn", 2, "a"].correct) == (60, 40)
    assert (totals["churn", 2, None].labelled, totals["churn", 2, None].correct) == (61, 41)
    assert (totals["load", 1, None].abs_error_sum, totals["load", 1, None].abs_error_sq_sum) == (6.0, 10.0)
    assert set(pg_store.label_totals(since=datetime(2025, 12, 31, 23, 30, tzinfo=UTC))) == {("load", 1, "a"),
                                                                                          ("load", 1, None)}

"""The PostgreSQL window path (binary COPY into a staging table, then INSERT ... SELECT ... ON CONFLICT DO NOTHING)
on the real server: counts of new and duplicate windows, bodies stored byte for byte, the table's own checks on
values a binary COPY could otherwise truncate, and recovery when the connection dies in the middle of a batch."""

import json
import threading
import uuid
from dataclasses import replace
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from services import POSTGRES_URL
from sqlalchemy import create_engine, event, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError

from edge_agent.protocol import Counts, TelemetryWindow, Topics
from edgeops.mqtt import BrokerAddress
from edgeops.telemetry.ingest import IngestConfig, IngestService
from edgeops.telemetry.store import TelemetryStore, WindowRow
from edgeops.telemetry.writer import BatchWriter

pytestmark = pytest.mark.integration


def window(device: str, seq: int, count: int = 5, feature: str = "x") -> TelemetryWindow:
    return TelemetryWindow(device=device, seq=seq, model="churn", version=3, start="2026-01-01T00:00:00Z",
                           end="2026-01-01T00:01:00Z", count=count, errors={"input": 1}, latency_ms={"p95": 2.5},
                           features={feature: Counts((1, 2, 2))}, predictions=Counts((3, 2)),
                           ts="2026-01-01T00:01:00Z")


def bodies(store: TelemetryStore) -> dict[tuple[str, int], str]:
    table = WindowRow.__table__
    with store.engine.connect() as conn:
        return {(d, s): b for d, s, b in conn.execute(select(table.c.device, table.c.seq, table.c.body))}


def writer(store: TelemetryStore, errors: list[str] | None = None) -> BatchWriter:
    return BatchWriter(store, Topics("t"), lambda _delay: False, (errors if errors is not None else []).append)


def test_duplicates_within_and_across_batches_are_counted(pg_store: TelemetryStore) -> None:
    first = [window(f"d{i % 7}", i) for i in range(600)]
    result = pg_store.write(first + first[:50])   # 50 repeated in the same batch
    assert (result.windows, result.duplicates) == (600, 50)
    second = [window(f"d{i % 7}", i) for i in range(550, 900)]   # 50 already stored, 300 new
    result = pg_store.write(second + second[-10:])
    assert (result.windows, result.duplicates) == (300, 60)
    assert pg_store.write(first).windows == 0
    assert pg_store.count_windows() == 900
    assert sorted(pg_store.window_keys()) == sorted((f"d{i % 7}", i) for i in range(900))


def test_bodies_that_copy_would_have_to_escape_are_stored_exactly(session_broker: str, topic_prefix: str,
                                                                   pg_store: TelemetryStore) -> None:
    """Through the real ingest (MQTT, writer process): a device may send pretty-printed JSON (raw tabs and
    newlines between tokens) and names with escapes, backslashes and non-ASCII text."""
    odd = 'tab\there\nnew line \\ back\\slash "quoted" \\N ünïcødé ✓ 温度 \U0001f600'
    sent = {}
    for seq, indent in enumerate(("\t", "\n", None)):
        win = window("dev-1", seq, feature=f"{odd} {seq}")
        sent[("dev-1", seq)] = (win, json.dumps(win.to_json(), indent=indent, ensure_ascii=seq != 1))
    topics = Topics(topic_prefix)
    cfg = IngestConfig(broker_url=session_broker, prefix=topic_prefix, client_id=f"pgcopy-{uuid.uuid4().hex[:8]}",
                       batch_size=50, flush_ms=50)
    address = BrokerAddress.parse(session_broker)
    with IngestService(cfg, pg_store) as ingest:
        pub = mqtt.Client(CallbackAPIVersion.VERSION2)
        pub.connect(address.host, address.port)
        pub.loop_start()
        infos = [pub.publish(topics.device("dev-1", "telemetry"), body.encode(), qos=1) for _w, body in sent.values()]
        for info in infos:
            info.wait_for_publish(10)
        pub.disconnect()
        pub.loop_stop()
        assert ingest.wait_until(lambda s: s.stored == len(sent), 30), ingest.stats
    assert bodies(pg_store) == {key: body for key, (_w, body) in sent.items()}
    assert "\t" in sent[("dev-1", 0)][1] and "ü" in sent[("dev-1", 1)][1]   # the payloads do hold raw ones
    assert pg_store.windows(device="dev-1") == [w for w, _b in sent.values()]


@pytest.mark.parametrize(("bad", "reason"), [
    ({"count": 2**31}, "integer out of range"),         # the table's INTEGER: binary COPY into one would wrap it
    ({"seq": 2**63}, "too big"),                         # beyond BIGINT: psycopg refuses it before the server
])
def test_a_window_the_table_rejects_is_skipped_and_the_rest_stored(pg_store: TelemetryStore, bad: dict[str, Any],
                                                                   reason: str) -> None:
    good = [window("a", seq) for seq in range(5)]
    wrong = replace(window("a", 99), **bad)
    batch = [(Topics("t").device("a", "telemetry"), w.to_bytes()) for w in [*good[:2], wrong, *good[2:]]]
    result = writer(pg_store).write(batch)
    assert result is not None
    assert (result.windows, result.malformed) == (5, 1)
    assert reason in result.problems[0]
    assert sorted(pg_store.window_keys()) == [("a", seq) for seq in range(5)]
    assert pg_store.windows(device="a")[0].count == 5


def test_a_connection_killed_during_a_batch_is_retried(pg_store: TelemetryStore) -> None:
    """The server ends the session after the staging table is created and before the COPY: the writer must see
    an OperationalError (and retry on a new connection), not a rejected batch."""
    killed = threading.Event()
    admin = create_engine(make_url(pg_store.url))

    def kill_own_session(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.startswith("CREATE TEMPORARY TABLE") and not killed.is_set():
            killed.set()
            pid = conn.connection.dbapi_connection.info.backend_pid
            with admin.connect() as other:
                assert other.execute(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid}).scalar_one()

    event.listen(pg_store.engine, "after_cursor_execute", kill_own_session)
    errors: list[str] = []
    try:
        result = writer(pg_store, errors).write([(Topics("t").device("a", "telemetry"), window("a", s).to_bytes())
                                                 for s in range(20)])
    finally:
        event.remove(pg_store.engine, "after_cursor_execute", kill_own_session)
        admin.dispose()
    assert killed.is_set()
    assert result is not None
    assert (result.windows, result.malformed) == (20, 0)
    assert len(errors) == 1 and "unavailable" in errors[0]
    assert pg_store.count_windows() == 20


def test_a_role_that_may_not_create_temporary_tables_stores_windows_too() -> None:
    """A hardened database may revoke TEMPORARY from PUBLIC: the store then inserts row by row (prepared,
    pipelined) instead of failing every batch. A throw-away database and role (a superuser passes every check)."""
    tag = uuid.uuid4().hex[:10]
    role, database = f"edgeops_notemp_{tag}", f"edgeops_notemp_{tag}"
    admin = create_engine(make_url(POSTGRES_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
        conn.exec_driver_sql(f"CREATE DATABASE {database}")
        conn.exec_driver_sql(f"REVOKE TEMPORARY ON DATABASE {database} FROM PUBLIC")
        conn.exec_driver_sql(f"GRANT CREATE ON DATABASE {database} TO {role}")
    url = make_url(POSTGRES_URL).set(username=role, database=database).render_as_string(hide_password=False)
    try:
        store = TelemetryStore(url, schema="telemetry")
        try:
            assert not store.pg_copy
            first = store.write([window("a", 1), window("a", 1), window("a", 2)])
            again = store.write([window("a", 2), window("a", 3)])
            assert (first.windows, first.duplicates, again.windows, again.duplicates) == (2, 1, 1, 1)
            store.pg_copy = True   # what the COPY path would meet here
            with pytest.raises(ProgrammingError, match="temporary"):
                store.write([window("a", 4)])
        finally:
            store.close()
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
            conn.exec_driver_sql(f"DROP ROLE IF EXISTS {role}")
        admin.dispose()

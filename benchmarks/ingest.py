"""Ingest throughput and drift cost, as ratios against baselines measured in the same rounds.

    .venv/bin/python benchmarks/ingest.py [--windows 10000] [--rounds 5] [--db sqlite|postgres]

1. windows/s drained by one ingest instance vs a raw paho QoS 1 subscriber (same broker, same backlog, same
   receive maximum) — target ≥ 0.5×;
2. two ingest instances (separate processes, one share group, one database) vs one — target ≥ 1.7× (on a
   2-core machine the broker, the database and the instances share two cores, so expect less);
3. drift computation (sum windows + statistics) as the number of windows grows — linear: the summing cost per
   window at 16,000 windows within 1.5× of that at 1,000.

Method for 1 and 2: interleaved rounds (benchmarks/rounds.py). Every round measures all three consumers (raw,
ingest ×1, ingest ×2), rotating which goes first, each on a backlog of its own; each round gives one ratio per
target, and the table shows their median with the min–max spread. Each consumer first connects once (so the
broker holds its persistent session), goes offline, the backlog is published, then the clock runs from "go"
until every window is received / stored. Publisher speed and process start-up (an ingest instance's writer
process included) are thus outside the measurement. Beside each wall ratio, the same ratio of the consumers'
CPU seconds (windows per CPU second): the raw subscriber's process, the ingest instances with their writer
processes (/proc); the broker's, the same work for every consumer, is left out. A Mosquitto of our own on a
free port. Each instance reports how many windows it stored (the shared subscription must split the load) and
the run reports how busy the machine's cores were meanwhile.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from rounds import Ratio, in_turn, load_average, print_table, spread, tree_cpu_seconds
from services import POSTGRES_URL, running_mosquitto

from edge_agent.protocol import Counts, NumericBins, Reference, TelemetryWindow, Topics
from edgeops.telemetry.drift import assess_scope, sum_windows
from edgeops.telemetry.ingest import IngestConfig, IngestService
from edgeops.telemetry.store import TelemetryStore

PREFIX = "bench"
FEATURES, BINS, DEVICES = 8, 10, 50
BATCH = 500


def make_window(seq: int, rng: np.random.Generator, end: datetime | None = None) -> TelemetryWindow:
    device = f"dev-{seq % DEVICES}"
    ts = (end or datetime(2026, 1, 1, tzinfo=UTC)).isoformat()
    features = {f"f{i}": Counts(tuple(int(v) for v in rng.multinomial(200, np.full(BINS, 1 / BINS))))
                for i in range(FEATURES)}
    return TelemetryWindow(device=device, seq=seq, model="bench", version=1, start=ts, end=ts, count=200,
                           errors={"input": 1}, latency_ms={"p50": 1.0, "p95": 3.0}, features=features,
                           predictions=Counts((120, 80)), feedback={"labelled": 10, "correct": 8})


def publish_backlog(host: str, port: int, n: int) -> None:
    rng = np.random.default_rng(0)
    topics = Topics(PREFIX)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.connect(host, port)
    client.loop_start()
    infos = [client.publish(topics.device(f"dev-{s % DEVICES}", "telemetry"), make_window(s, rng).to_bytes(), qos=1)
             for s in range(n)]
    for info in infos:
        info.wait_for_publish(60)
    client.disconnect()
    client.loop_stop()


def drop_session(host: str, port: int, client_id: str) -> None:
    """End a consumer's persistent session: otherwise its share group keeps a copy of every later backlog
    queued in the broker, which would slow every later measurement."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0
    client.connect(host, port, clean_start=True, properties=props)
    client.loop_start()
    client.disconnect()
    client.loop_stop()


def raw_subscriber(host: str, port: int, n: int, client_id: str) -> tuple[float, float]:
    """Seconds for a plain paho QoS 1 subscriber (auto-ack) to drain ``n`` queued messages, and the CPU seconds
    this process (the subscriber's paho thread) spent meanwhile."""
    received = 0
    done = mp.Event()

    def on_message(_c: object, _u: object, _m: object) -> None:
        nonlocal received
        received += 1
        if received >= n:
            done.set()

    def connect() -> mqtt.Client:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        client.on_message = on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval, props.ReceiveMaximum = 3600, 2 * BATCH
        client.connect(host, port, clean_start=False, properties=props)
        client.loop_start()
        client.subscribe(Topics(PREFIX).shared(client_id, Topics(PREFIX).all_devices("telemetry")), qos=1)
        return client

    client = connect()
    time.sleep(0.5)
    client.disconnect()
    client.loop_stop()
    publish_backlog(host, port, n)
    cpu, start = time.process_time(), time.perf_counter()
    client = connect()
    if not done.wait(120):
        raise SystemExit(f"the raw subscriber received {received} of {n} windows")
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    client.disconnect()
    client.loop_stop()
    drop_session(host, port, client_id)
    return elapsed, cpu


def ingest_worker(url: str, db: str, schema: str | None, instance: str, group: str, ready: object, go: object,
                  finished: object, stored: object) -> None:
    """One ingest instance in its own process: register the session, wait for "go", then run, publishing how many
    windows it has committed (so the clock needs no COUNT(*) on the database, which costs PostgreSQL ~2 ms a
    poll on the shared cores)."""
    store = TelemetryStore(db, schema=schema)
    cfg = IngestConfig(broker_url=url, db_url=db, prefix=PREFIX, group=group, instance=instance,
                       client_id=f"{group}-{instance}", batch_size=BATCH, flush_ms=100)
    IngestService(cfg, store).start().stop()
    service = IngestService(cfg, store).prepare()   # its writer process is up before the clock starts
    ready.set()  # type: ignore[attr-defined]
    go.wait()  # type: ignore[attr-defined]
    service.start()
    while not finished.wait(0.01):  # type: ignore[attr-defined]
        stored.value = service.stats.stored  # type: ignore[attr-defined]
    service.stop()


def busy_cores() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat (Linux), to show how saturated the
    cores are while the clock runs."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0.0, 0.0
    idle = fields[3] + fields[4]   # idle + iowait
    return (sum(fields) - idle) / 100, sum(fields) / 100


def ingest_run(url: str, host: str, port: int, n: int, instances: int, db: str, schema: str | None
               ) -> tuple[float, float, list[int], float]:
    """Seconds for ``instances`` ingest processes to store ``n`` queued windows, the CPU seconds those processes
    (and their writer processes) spent meanwhile, the windows each one stored, and the machine's CPU use
    meanwhile (busy cores, of ``cpu_count``)."""
    ctx = mp.get_context("spawn")
    group = f"ingest{uuid.uuid4().hex[:6]}"
    store = TelemetryStore(db, schema=schema)
    base = store.count_windows()
    go, finished = ctx.Event(), ctx.Event()
    readies = [ctx.Event() for _ in range(instances)]
    stored = [ctx.Value("q", 0) for _ in range(instances)]
    procs = [ctx.Process(target=ingest_worker,
                         args=(url, db, schema, str(i), group, readies[i], go, finished, stored[i]))
             for i in range(instances)]
    for p in procs:
        p.start()
    for r in readies:
        r.wait(120)
    publish_backlog(host, port, n)
    cpu_start = busy_cores()
    own = sum(tree_cpu_seconds(p.pid) for p in procs if p.pid is not None)
    start = time.perf_counter()
    go.set()
    while sum(v.value for v in stored) < n:
        if time.perf_counter() - start > 300:
            finished.set()
            raise SystemExit(f"ingest x{instances} stored {sum(v.value for v in stored)} of {n} windows in 300 s")
        time.sleep(0.01)
    elapsed = time.perf_counter() - start
    own = sum(tree_cpu_seconds(p.pid) for p in procs if p.pid is not None) - own
    cpu_end = busy_cores()
    split = [v.value for v in stored]
    finished.set()
    for p in procs:
        p.join(60)
    for i in range(instances):
        drop_session(host, port, f"{group}-{i}")
    windows = store.count_windows() - base
    store.close()
    if windows != n:
        raise SystemExit(f"the instances report {n} windows stored but the database holds {windows}")
    busy = (cpu_end[0] - cpu_start[0]) / (cpu_end[1] - cpu_start[1]) * mp.cpu_count() if cpu_end[1] else 0.0
    return elapsed, own, split, busy


def drift_cost(sizes: list[int]) -> list[tuple[int, float, float]]:
    """(windows, seconds to sum them per device and fleet, seconds for the statistics of every scope)."""
    rng = np.random.default_rng(1)
    ref = {f"f{i}": Reference(NumericBins(tuple(float(e) for e in range(BINS + 1))), Counts((1000,) * BINS))
           for i in range(FEATURES)}
    pred = Reference(NumericBins((0.0, 1.0, 2.0)), Counts((600, 400)))
    pool = [make_window(s, rng) for s in range(max(sizes))]
    out = []
    for size in sizes:
        start = time.perf_counter()
        totals = sum_windows(pool[:size])
        summed = time.perf_counter()
        for (_m, _v, device), total in totals.items():
            assess_scope(total, ref, pred, device)
        out.append((size, summed - start, time.perf_counter() - summed))
    return out


def drift_round(sizes: list[int]) -> float:
    """One round of the drift cost: summing cost per window at the largest size / at the smallest."""
    costs = drift_cost(sizes)
    for size, summing, stats in costs:
        print(f"  drift over {size:6d} windows: sum {summing * 1000:7.1f} ms ({summing / size * 1e6:5.1f} us/window), "
              f"statistics for {DEVICES + 1} scopes {stats * 1000:6.1f} ms", flush=True)
    return (costs[-1][1] / costs[-1][0]) / (costs[0][1] / costs[0][0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (each: raw, ingest x1, x2)")
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    args = parser.parse_args()
    n = args.windows
    load_start = load_average()
    seconds: dict[str, list[float]] = {"raw": [], "x1": [], "x2": []}
    cpu: dict[str, list[float]] = {"raw": [], "x1": [], "x2": []}
    busy: dict[str, list[float]] = {"x1": [], "x2": []}
    with tempfile.TemporaryDirectory() as tmp, running_mosquitto(Path(tmp) / "mosquitto") as broker:
        if args.db == "postgres":
            make_db = lambda tag: (POSTGRES_URL, f"bench_{tag}_{uuid.uuid4().hex[:8]}")  # noqa: E731
        else:
            make_db = lambda tag: (f"sqlite:///{tmp}/{tag}.db", None)  # noqa: E731
        print(f"backlog of {n} windows ({FEATURES} features x {BINS} bins, "
              f"~{len(make_window(0, np.random.default_rng(0)).to_bytes())} bytes each), store: {args.db}; "
              f"{args.rounds} rounds", flush=True)
        sides = ["raw", "x1", "x2"]
        for r in range(args.rounds):
            line = []
            for side in in_turn(sides, r):
                if side == "raw":
                    elapsed, spent = raw_subscriber(broker.host, broker.port, n, f"raw-bench-{r}")
                    line.append(f"raw {n / elapsed:,.0f}/s")
                else:
                    instances = int(side[1])
                    db, schema = make_db(f"r{r}{side}")
                    elapsed, spent, split, machine = ingest_run(broker.url, broker.host, broker.port, n, instances,
                                                                db, schema)
                    busy[side].append(machine)
                    line.append(f"ingest {side} {n / elapsed:,.0f}/s (split {split}, machine busy {machine:.1f} "
                                f"of {os.cpu_count()} cores)")
                    if schema:
                        TelemetryStore(db, schema=schema).drop_schema()
                seconds[side].append(elapsed)
                cpu[side].append(spent)
            print(f"  round {r + 1}: " + "; ".join(line), flush=True)
    per = {side: [n / s for s in values] for side, values in seconds.items()}
    results = [
        Ratio("ingest x1 / raw paho subscriber, windows/s", [x / w for x, w in zip(per["x1"], per["raw"], strict=True)],
              0.5, higher_is_better=True,
              detail=f"{statistics.median(per['x1']):,.0f} vs {statistics.median(per['raw']):,.0f} windows/s; windows "
                     f"per CPU s {spread([r / i for r, i in zip(cpu['raw'], cpu['x1'], strict=True)])}"),
        Ratio("ingest x2 / x1, windows/s", [b / a for a, b in zip(per["x1"], per["x2"], strict=True)], 1.7,
              higher_is_better=True,
              detail=f"{statistics.median(per['x2']):,.0f} windows/s; windows per CPU s "
                     f"{spread([a / b for a, b in zip(cpu['x1'], cpu['x2'], strict=True)])}; machine busy "
                     f"{statistics.median(busy['x1']):.1f} (x1) and {statistics.median(busy['x2']):.1f} (x2) of "
                     f"{os.cpu_count()} cores"),
    ]
    for result in results:
        print(result.line(), flush=True)
    sizes = [1_000, 4_000, 16_000]
    drift = []
    for r in range(args.rounds):
        print(f"drift, round {r + 1}:")
        drift.append(drift_round(sizes))
    results.append(Ratio(f"drift: summing cost per window, {sizes[-1]:,} / {sizes[0]:,} windows", drift, 1.5,
                         detail="~1 = linear; the statistics cost depends on scopes and bins, not on windows"))
    print_table(results, load_start, f"store {args.db}, {n} windows a backlog")


if __name__ == "__main__":
    main()

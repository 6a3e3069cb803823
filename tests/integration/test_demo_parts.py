"""Pieces of ``edgeops demo`` on their own: reading the monitor's real drift report, and the traffic driver
against a real HTTP server (rows swapped while it runs, NaN sent as null, failures counted not raised)."""

import json
import math
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from releases import build_release

from edge_agent.protocol import Counts, Reference, TelemetryWindow, now_iso
from edgeops.demo.prefect_api import parse_drift_report
from edgeops.demo.traffic import TrafficDriver, records_of
from edgeops.stack.supervisor import free_port
from edgeops.telemetry.monitor import manifest_references, run_monitor
from edgeops.telemetry.report import drift_markdown
from edgeops.telemetry.store import TelemetryStore

pytestmark = pytest.mark.integration


def drawn(ref: Reference, n: int, rng: np.random.Generator, shift: int) -> Counts:
    vec = np.asarray(ref.counts.vector(), dtype=float)
    counts = rng.multinomial(n, np.roll(vec / vec.sum(), shift)).tolist()
    k = len(ref.counts.counts)
    return Counts(tuple(counts[:k]), *counts[k:])


def test_drift_report_of_the_monitor_is_read_back(tmp_path: Path) -> None:
    manifest = build_release("churn", 1, Ed25519PrivateKey.generate()).manifest
    (tmp_path / "m.json").write_bytes(manifest.to_bytes())
    rng = np.random.default_rng(5)
    store = TelemetryStore(f"sqlite:///{tmp_path / 't.db'}")
    try:
        store.write([TelemetryWindow(
            device="d1", seq=seq, model="churn", version=1, start=now_iso(), end=now_iso(), count=400,
            features={c: drawn(r, 400, rng, 3 if c == "income" else 0) for c, r in manifest.reference.items()},
            predictions=drawn(manifest.prediction_reference, 400, rng, 0)) for seq in range(5)])
        markdown = drift_markdown(run_monitor(store, manifest_references([tmp_path / "m.json"]), per_device=False))
    finally:
        store.close()
    (scope,) = parse_drift_report(markdown)
    assert (scope.release, scope.verdict, scope.drifted) == ("churn@1", "drift", ["income"])
    assert len(scope.rows) == len(manifest.reference) + 1  # every feature and the predictions
    (row,) = [r for r in scope.rows if r.startswith("| income |")]
    assert row.endswith("| drift |") and "| 2000 |" in row


@pytest.fixture
def server() -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """Answers 200 and keeps every record; a record with "fail" is answered 400."""
    seen: list[dict[str, Any]] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_: Any) -> None:
            pass

        def do_POST(self) -> None:
            records = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["records"]
            with lock:
                seen.extend(records)
            status = 400 if any("fail" in r for r in records) else 200
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

    port = free_port()
    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield port, seen
    httpd.shutdown()
    httpd.server_close()


def wait_for(check: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_traffic_swaps_rows_while_running_and_counts_failures(server: tuple[int, list[dict[str, Any]]]) -> None:
    port, seen = server
    before = records_of([{"x": 1.0, "y": math.nan, "target": 0}], drop=["target"])
    assert before == [{"x": 1.0, "y": None}]
    dead = free_port()  # nothing listens here: every batch fails, the thread goes on
    driver = TrafficDriver({"a": port, "b": dead}, before, batch=4, interval_s=0.01).start()
    try:
        wait_for(lambda: driver.counts["a"].ok >= 8 and driver.counts["b"].failed >= 8)
        driver.use([{"x": 3.0, "y": 2.0}])
        mark = len(seen)
        wait_for(lambda: len(seen) >= mark + 12)
        driver.use([{"fail": 1}])
        wait_for(lambda: driver.counts["a"].failed >= 4)
    finally:
        driver.stop()
    assert all(r == {"x": 1.0, "y": None} for r in seen[:8])
    assert {"x": 3.0, "y": 2.0} in seen[mark:]
    assert driver.counts["a"].last_error.startswith("HTTP 400")
    assert driver.counts["b"].ok == 0 and driver.counts["b"].last_error
    total = driver.total()
    assert total.sent == total.ok + total.failed

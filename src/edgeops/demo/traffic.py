"""Inference traffic for local agents over their HTTP endpoint (``POST /v1/predict``), from a table of rows.

The demo uses it to make agents produce telemetry: one thread per agent sends batches at a steady rate; the
rows can be swapped while it runs (``use``), which is how the demo shifts a feature. Answers are counted, not
checked: a refused request (an agent restarting its model, say) is a count, and the thread goes on.
"""

import http.client
import json
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


def records_of(rows: Iterable[Mapping[Any, Any]], drop: Sequence[str] = ()) -> list[dict[str, Any]]:
    """JSON-ready records: ``drop`` columns removed, NaN → null (what the agent reads as *missing*). Rows are
    typed loosely because a frame's ``to_dict("records")`` keys them by Hashable; ours are column names."""
    out = []
    for row in rows:
        out.append({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()
                    if k not in drop})
    return out


@dataclass
class Counts:
    sent: int = 0
    ok: int = 0
    failed: int = 0
    last_error: str = ""


class TrafficDriver:
    """Batches of ``batch`` records every ``interval_s`` to each ``127.0.0.1:port`` until ``stop``."""

    def __init__(self, ports: Mapping[str, int], records: list[dict[str, Any]], *, batch: int = 20,
                 interval_s: float = 0.2) -> None:
        if not records:
            raise ValueError("traffic needs at least one record")
        self.ports = dict(ports)
        self.batch = batch
        self.interval_s = interval_s
        self._records = records
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.counts: dict[str, Counts] = {device: Counts() for device in self.ports}
        self._threads = [threading.Thread(target=self._run, args=(device, port, i), daemon=True,
                                          name=f"traffic-{device}") for i, (device, port) in
                         enumerate(self.ports.items())]

    def start(self) -> "TrafficDriver":
        for thread in self._threads:
            thread.start()
        return self

    def use(self, records: list[dict[str, Any]]) -> None:
        """Send these rows from the next batch on."""
        if not records:
            raise ValueError("traffic needs at least one record")
        with self._lock:
            self._records = records

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def total(self) -> Counts:
        total = Counts()
        for c in self.counts.values():
            total.sent, total.ok, total.failed = total.sent + c.sent, total.ok + c.ok, total.failed + c.failed
            total.last_error = c.last_error or total.last_error
        return total

    def _next(self, offset: int) -> tuple[list[dict[str, Any]], int]:
        with self._lock:
            records = self._records
        start = offset % len(records)
        chunk = (records[start:] + records[:start])[: self.batch]
        return chunk, start + len(chunk)

    def _run(self, device: str, port: int, index: int) -> None:
        counts = self.counts[device]
        offset = index * 997  # agents see different rows of the same distribution
        conn: http.client.HTTPConnection | None = None
        while not self._stop.wait(self.interval_s):
            chunk, offset = self._next(offset)
            body = json.dumps({"records": chunk}).encode()
            counts.sent += len(chunk)
            try:
                conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("POST", "/v1/predict", body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                text = response.read()
                if response.status == 200:
                    counts.ok += len(chunk)
                else:
                    counts.failed += len(chunk)
                    counts.last_error = f"HTTP {response.status}: {text[:200]!r}"
            except (OSError, http.client.HTTPException) as exc:
                counts.failed += len(chunk)
                counts.last_error = str(exc) or type(exc).__name__
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()


__all__ = ["Counts", "TrafficDriver", "records_of"]

"""Concurrent HTTP load: N keep-alive clients POSTing one body for a fixed time; requests/s, failures, latency.

``wrk`` drives the load when it is installed (``-t2 -c8``, ``--latency``). Otherwise a Python load generator:
``--procs`` worker processes (this file run as a script, so the GIL of one process is not the limit), each
with its share of the connections on threads, one ``http.client.HTTPConnection`` (keep-alive) per thread. The
workers connect first, report ready, and start on one "go" from the parent, so process start-up is outside the
timed window. Both generators run on the same machine as the servers and take CPU from them: the ratio of two
servers under the same generator is what benchmarks read, not the absolute rates.
"""

import argparse
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class LoadRound:
    requests_per_s: float
    failed: int
    p50_ms: float
    p99_ms: float


GENERATORS = ("auto", "wrk", "python")


def use_wrk(generator: str) -> bool:
    """``auto``: wrk when installed; ``wrk`` insists on it; ``python`` never."""
    if generator == "wrk" and not shutil.which("wrk"):
        raise RuntimeError("--load wrk: wrk is not installed (apt-get install wrk)")
    return generator == "wrk" or (generator == "auto" and shutil.which("wrk") is not None)


def generator_name(connections: int, procs: int, generator: str = "auto") -> str:
    return f"wrk -t2 -c{connections}" if use_wrk(generator) else \
        f"Python load generator, {procs} processes x {connections // procs} keep-alive connections"


def load_round(port: int, body: bytes, seconds: float, connections: int = 8, procs: int = 2,
               generator: str = "auto") -> LoadRound:
    """``seconds`` of POST /v1/predict with ``body`` from ``connections`` keep-alive clients."""
    if use_wrk(generator):
        return wrk_round(port, body, seconds, connections)
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as file:
        file.write(body)
    try:
        workers = [subprocess.Popen([sys.executable, __file__, "--port", str(port), "--body", file.name,
                                     "--seconds", str(seconds), "--connections", str(share)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                   for share in split(connections, procs)]
        for worker in workers:
            if worker.stdout.readline().strip() != "ready":  # type: ignore[union-attr]
                raise RuntimeError("a load worker did not connect")
        for worker in workers:
            worker.stdin.write("go\n")  # type: ignore[union-attr]
            worker.stdin.flush()  # type: ignore[union-attr]
        counts = [json.loads(worker.communicate(timeout=seconds + 60)[0]) for worker in workers]
    finally:
        os.unlink(file.name)
    latencies = sorted(ms for count in counts for ms in count["latency_ms"])
    done = sum(count["done"] for count in counts)
    return LoadRound(done / seconds, sum(count["failed"] for count in counts),
                     statistics.median(latencies) if latencies else float("nan"),
                     latencies[int(0.99 * (len(latencies) - 1))] if latencies else float("nan"))


def split(total: int, parts: int) -> list[int]:
    parts = max(1, min(parts, total))
    return [total // parts + (i < total % parts) for i in range(parts)]


def wrk_round(port: int, body: bytes, seconds: float, connections: int) -> LoadRound:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(f'wrk.method = "POST"\nwrk.body = {json.dumps(body.decode())}\n'
                     'wrk.headers["Content-Type"] = "application/json"\n')
    try:
        out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", script.name,
                              f"http://127.0.0.1:{port}/v1/predict"], capture_output=True, text=True,
                             timeout=seconds + 30, check=True).stdout
    finally:
        os.unlink(script.name)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    failed = (int(bad.group(1)) if bad else 0) + (sum(map(int, errors.groups())) if errors else 0)
    return LoadRound(rate, failed, wrk_ms(out, "50%"), wrk_ms(out, "99%"))


def wrk_ms(out: str, percentile: str) -> float:
    found = re.search(rf"{percentile}\s+([\d.]+)(us|ms|s)", out)
    if not found:
        return float("nan")
    return float(found.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[found.group(2)]


def worker(port: int, body: bytes, seconds: float, connections: int) -> None:
    """One load process: connect, say ready, wait for go, then POST until the deadline; counts as JSON."""
    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(connections)]
    for conn in conns:
        conn.connect()
    print("ready", flush=True)
    sys.stdin.readline()
    deadline = time.perf_counter() + seconds
    done, failed, latency_ms = [0], [0], []
    lock = threading.Lock()

    def client(conn: http.client.HTTPConnection) -> None:
        mine: list[float] = []
        ok = bad = 0
        while (started := time.perf_counter()) < deadline:
            try:
                conn.request("POST", "/v1/predict", body, {"Content-Type": "application/json"})
                answer = conn.getresponse()
                answer.read()
                if answer.status == 200:
                    ok += 1
                    mine.append((time.perf_counter() - started) * 1e3)
                else:
                    bad += 1
            except (OSError, http.client.HTTPException):
                bad += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        with lock:
            done[0] += ok
            failed[0] += bad
            latency_ms.extend(mine)

    threads = [threading.Thread(target=client, args=(conn,)) for conn in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"done": done[0], "failed": failed[0], "latency_ms": latency_ms}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="one process of the Python load generator")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--body", type=Path, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()
    worker(args.port, args.body.read_bytes(), args.seconds, args.connections)

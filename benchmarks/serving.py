"""How fast the agent serves, against the bare parts it is made of, measured as users feel it.

Used by ``benchmarks/agent.py``; also a script that runs the baseline server:

    python benchmarks/serving.py minimal-server --port P --model model.onnx --manifest manifest.json

Rules that keep the ratios honest on a noisy machine:
- **Interleaved rounds**: baseline and agent alternate, round after round, and each round gives one ratio; the
  table shows the median ratio and the spread over rounds, so a burst of load elsewhere hits both sides.
- **The same public call on both sides**: the in-process baseline is ``InferenceSession.run`` (public) on feeds
  built from the same dict records, with the agent's session options (one intra-op thread).
- **Concurrent HTTP from another process**: the agent (``edgeops-agent run``) and a minimal stdlib server around
  the same session each run in a process of their own; ``wrk`` (``apt-get install wrk``) drives 8 keep-alive
  connections from two threads. Without wrk a Python load generator in a separate process is used, and the
  table says so: it may be the bottleneck for both sides.
- **CPU beside wall**: for HTTP, the server process's CPU time per row served (from /proc), so a ratio that
  only looks good because the machine was idle shows up.
"""

import argparse
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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from rounds import Ratio, cpu_seconds, interleaved  # noqa: F401  (agent.py uses them as serving.*)


def session_for(model: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # as the agent's ModelRunner
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def feeds_for(inputs: list[dict[str, Any]], records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """The least a caller must do: one array per input from the dict records (no checks at all)."""
    feeds = {}
    for spec in inputs:
        column, name = spec["column"], spec["name"]
        if spec["dtype"] == "string":
            token = spec.get("missing_token", "")
            values: list[Any] = [token if r[column] is None else r[column] for r in records]
            feeds[name] = np.array(values, dtype=object).reshape(-1, 1)
        else:
            feeds[name] = np.array([np.nan if r[column] is None else r[column] for r in records],
                                   dtype=np.float32).reshape(-1, 1)
    return feeds


# the baseline server --------------------------------------------------------------------------------------
def serve_minimal(port: int, model: Path, manifest: Path) -> None:
    """Stdlib HTTP/1.1, JSON in, ``session.run``, JSON out: no checks, no telemetry, no probation."""
    session = session_for(model.read_bytes())
    inputs = json.loads(manifest.read_text())["inputs"]
    outputs = [o.name for o in session.get_outputs()]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # as the agent: small answers go out at once

        def log_message(self, *_: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            records = body["records"] if "records" in body else [body["record"]]
            result = session.run(outputs, feeds_for(inputs, records))
            answers = [{"label": label, "probabilities": probs}
                       for label, probs in zip(result[0].tolist(), result[1].tolist(), strict=True)]
            data = json.dumps({"predictions": answers} if "records" in body else {"prediction": answers[0]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.request_queue_size = 1024  # as the agent's backlog: no side loses connections to a short queue
    server.serve_forever()


# concurrent load --------------------------------------------------------------------------------------------
def load_round(port: int, body: bytes, seconds: float, connections: int = 8) -> tuple[float, int]:
    """(requests per second, failed requests) over ``seconds`` of ``connections`` keep-alive clients."""
    if shutil.which("wrk"):
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
            script.write(f'wrk.method = "POST"\nwrk.body = {json.dumps(body.decode())}\n'
                         'wrk.headers["Content-Type"] = "application/json"\n')
        try:
            out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds:g}s", "-s", script.name,
                                  f"http://127.0.0.1:{port}/v1/predict"], capture_output=True, text=True,
                                 timeout=seconds + 30, check=True).stdout
        finally:
            os.unlink(script.name)
        rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
        bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        failed = (int(bad.group(1)) if bad else 0) + (sum(map(int, errors.groups())) if errors else 0)
        return rate, failed
    out = subprocess.run([sys.executable, __file__, "python-load", "--port", str(port), "--seconds", str(seconds),
                          "--connections", str(connections)], input=body, capture_output=True, timeout=seconds + 30,
                         check=True).stdout
    done, failed = json.loads(out)
    return done / seconds, failed


def python_load(port: int, seconds: float, connections: int) -> None:
    """The fallback load generator (its own process): keep-alive clients on threads, counts printed as JSON."""
    import http.client

    body = sys.stdin.buffer.read()
    counts = [0, 0]
    deadline = time.monotonic() + seconds

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while time.monotonic() < deadline:
            try:
                conn.request("POST", "/v1/predict", body, {"Content-Type": "application/json"})
                answer = conn.getresponse()
                answer.read()
                counts[answer.status != 200] += 1
            except OSError:
                counts[1] += 1
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    threads = [threading.Thread(target=client) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps(counts))


def http_rounds(servers: dict[str, tuple[int, int]], body: bytes, rows: int, rounds: int,
                seconds: float) -> tuple[list[float], list[float], dict[str, float]]:
    """Interleaved load rounds against ``servers`` = {"baseline": (port, pid), "agent": (port, pid)}: per round,
    the agent's rows/s over the baseline's and its CPU per row over the baseline's; plus median rows/s each."""
    rate: dict[str, list[float]] = {"baseline": [], "agent": []}
    cpu: dict[str, list[float]] = {"baseline": [], "agent": []}
    for r in range(rounds):
        for side in (("baseline", "agent") if r % 2 == 0 else ("agent", "baseline")):
            port, pid = servers[side]
            before = cpu_seconds(pid)
            requests_per_s, failed = load_round(port, body, seconds)
            if failed:
                raise RuntimeError(f"{side}: {failed} failed requests in a load round")
            rate[side].append(requests_per_s * rows)
            cpu[side].append((cpu_seconds(pid) - before) / (requests_per_s * rows * seconds))
    throughput = [a / b for a, b in zip(rate["agent"], rate["baseline"], strict=True)]
    cpu_ratio = [a / b for a, b in zip(cpu["agent"], cpu["baseline"], strict=True)]
    return throughput, cpu_ratio, {side: statistics.median(v) for side, v in rate.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    minimal = sub.add_parser("minimal-server")
    minimal.add_argument("--port", type=int, required=True)
    minimal.add_argument("--model", type=Path, required=True)
    minimal.add_argument("--manifest", type=Path, required=True)
    load = sub.add_parser("python-load")
    load.add_argument("--port", type=int, required=True)
    load.add_argument("--seconds", type=float, required=True)
    load.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    if args.command == "minimal-server":
        serve_minimal(args.port, args.model, args.manifest)
    else:
        python_load(args.port, args.seconds, args.connections)


if __name__ == "__main__":
    main()

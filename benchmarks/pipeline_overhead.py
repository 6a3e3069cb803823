"""What Prefect costs: the pipeline flow against a running Prefect server vs the same plain functions.

Starts ``prefect server start`` on a free port (own PREFECT_HOME, analytics off), waits for /api/health,
points PREFECT_API_URL at it, then on one generated dataset alternates timed runs of
``edgeops.pipeline.run_pipeline`` (plain) and ``flows.pipeline.pipeline_flow`` (Prefect tasks, logs,
artifacts), after one untimed warm-up of each. Prints the median and best times and the ratio flow / plain
(target <= 1.2x at 200k rows); on a shared machine the best-of-N ratio is the less noisy one.
Everything lives in a temporary directory; the server is stopped at the end.

    .venv/bin/python benchmarks/pipeline_overhead.py [--rows 200000] [--repeat 5]
"""

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(home: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A Prefect server of our own; returns the process and its API URL once /api/health answers."""
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    prefect = Path(sys.executable).with_name("prefect")
    proc = subprocess.Popen([str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"prefect server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.5)
    stop_server(proc)
    raise SystemExit("prefect server did not become healthy within 120 s")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)  # our own session: the server and its workers only
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def run(rows: int, repeat: int, work: Path) -> None:
    from edgeops.pipeline import make_request, run_pipeline
    from edgeops.samples import TARGETS, write_sample
    from edgeops.signing import generate_keys

    data = write_sample(work / "train.csv", "binary", rows, seed=0)
    overrides = {"registry.root": str(work / "registry"), "registry.keys_dir": str(work / "keys")}
    generate_keys(work / "keys")
    request = make_request(data, "bench", TARGETS["binary"], None, overrides)

    from flows.pipeline import pipeline_flow  # imported after PREFECT_API_URL is set

    def plain() -> None:
        assert run_pipeline(request).passed

    def flow() -> None:
        pipeline_flow(data=str(data), model="bench", target=TARGETS["binary"], overrides=overrides)

    print(f"{rows} rows; warm-up runs (untimed) ...", flush=True)
    plain()
    flow()
    plain_s: list[float] = []
    flow_s: list[float] = []
    for i in range(repeat):
        # Alternate which goes first, so a neighbour's load hits both sides alike.
        order = [(plain_s, plain), (flow_s, flow)] if i % 2 == 0 else [(flow_s, flow), (plain_s, plain)]
        for times, call in order:
            times.append(timed(call))
        print(f"  run {i + 1}: plain {plain_s[-1]:.2f} s, flow {flow_s[-1]:.2f} s", flush=True)
    for label, pick in (("median", statistics.median), ("best", min)):
        p, f = pick(plain_s), pick(flow_s)
        print(f"{label:>6}: plain functions {p:.2f} s, Prefect flow {f:.2f} s, overhead {f - p:+.2f} s, "
              f"ratio flow/plain {f / p:.2f}x (target <= 1.2x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory(prefix="edgeops-bench-") as tmp:
        work = Path(tmp)
        proc, url = start_server(work / "prefect-home")
        os.environ["PREFECT_API_URL"] = url
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
        print(f"prefect server at {url}", flush=True)
        try:
            run(args.rows, args.repeat, work)
        finally:
            stop_server(proc)


if __name__ == "__main__":
    main()

"""What Prefect costs: the pipeline flow against a running Prefect server vs the same plain functions.

    .venv/bin/python benchmarks/pipeline_overhead.py [--rows 200000] [--rounds 5]

Starts ``prefect server start`` on a free port (own PREFECT_HOME, analytics off), waits for /api/health,
points PREFECT_API_URL at it, then on one generated dataset runs interleaved rounds (benchmarks/rounds.py):
each round times ``edgeops.train.pipeline.run_pipeline`` (plain) and
``edgeops.flows.pipeline.pipeline_flow`` (Prefect tasks, logs, artifacts), alternating which goes first, after
one untimed warm-up of each. Each round gives one ratio flow / plain; the headline is their median with the
min–max spread (target ≤ 1.2× at 200k rows). Beside it, the
same ratio of CPU seconds: this process (where both run) plus the Prefect server's process tree, which works
only for the flow. Both sides run in this process with the same thread settings (the machine's defaults).
Everything lives in a temporary directory; the server is stopped at the end.
"""

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from rounds import Ratio, load_average, print_table, ratios, rotating_rounds, timed, tree_cpu_seconds

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


def run(rows: int, rounds: int, work: Path) -> Ratio:
    from edgeops.release.signing import generate_keys
    from edgeops.train.pipeline import make_request, run_pipeline
    from edgeops.train.samples import TARGETS, write_sample

    data = write_sample(work / "train.csv", "binary", rows, seed=0)
    overrides = {"registry.root": str(work / "registry"), "registry.keys_dir": str(work / "keys")}
    generate_keys(work / "keys")
    request = make_request(data, "bench", TARGETS["binary"], None, overrides)

    from edgeops.flows.pipeline import pipeline_flow  # imported after PREFECT_API_URL is set

    def plain() -> None:
        assert run_pipeline(request).passed

    def flow() -> None:
        pipeline_flow(data=str(data), model="bench", target=TARGETS["binary"], overrides=overrides)

    print(f"{rows} rows; warm-up runs (untimed) ...", flush=True)
    plain()
    flow()
    def tree_cpu() -> float:  # this process (both sides) + the Prefect server's tree (the flow's side only)
        return tree_cpu_seconds(os.getpid())

    def progress(r: int, got: dict[str, tuple[float, float]]) -> None:
        (pw, pc), (fw, fc) = got["plain"], got["flow"]
        print(f"  round {r + 1}: plain {pw:.2f} s ({pc:.2f} s CPU), flow {fw:.2f} s ({fc:.2f} s CPU): "
              f"{fw / pw:.2f}× wall, {fc / pc:.2f}× CPU", flush=True)

    done = rotating_rounds({"plain": lambda: timed(plain, 1, tree_cpu), "flow": lambda: timed(flow, 1, tree_cpu)},
                           rounds, progress)
    wall = ratios([w for w, _ in done["flow"]], [w for w, _ in done["plain"]])
    cpu = ratios([c for _, c in done["flow"]], [c for _, c in done["plain"]])
    return Ratio(f"Prefect flow / plain functions, {rows // 1000}k rows", wall, 1.2,
                 cpu=cpu, detail="CPU: this process + the Prefect server")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (each: one plain, one flow)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory(prefix="edgeops-bench-") as tmp:
        work = Path(tmp)
        proc, url = start_server(work / "prefect-home")
        os.environ["PREFECT_API_URL"] = url
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
        print(f"prefect server at {url}", flush=True)
        load_start = load_average()
        try:
            result = run(args.rows, args.rounds, work)
        finally:
            stop_server(proc)
    print_table([result], load_start, "threads: the machine's defaults on both sides (one process)")


if __name__ == "__main__":
    main()

"""Concurrent HTTP: the agent's POST /v1/predict against a minimal stdlib server around the same ONNX session.

Both servers are processes of their own: the agent as a user runs it (``python -m edge_agent run``, the same
edge_agent package this run imports, connected to the run's broker) and benchmarks/agent_baseline.py. Per model,
for single-row requests (``{"record": ...}``) and 100-row batches (``{"records": [...]}``): interleaved load
rounds (benchmarks/rounds.py) of 8 keep-alive clients (benchmarks/http_load.py), each round gives the agent's
rows/s over the baseline's, and beside it the server process's CPU seconds per row over the baseline's (from
/proc). The detail column has the median rows/s and the latency p50/p99 of each side.
"""

import json
import os
import statistics
import subprocess
import sys
from functools import partial
from pathlib import Path

from agent_setup import ROOT, Bench, install, records_for
from http_load import LoadRound, generator_name, load_round
from releases import Release
from rounds import Ratio, cpu_seconds, ratios, rotating_rounds
from services import free_port, wait_port

import edge_agent

CONNECTIONS, PROCS = 8, 2


def spawn_servers(bench: Bench, name: str, release: Release) -> tuple[list[subprocess.Popen[bytes]],
                                                                    dict[str, tuple[int, int]]]:
    """The agent and the minimal server, each a process of its own on a free port, serving ``release``."""
    home = bench.tmp / f"http-{name}"
    install(home / "data", release)
    (home / "model.onnx").write_bytes(release.data)
    (home / "manifest.json").write_bytes(release.manifest.to_bytes())
    ports = {"agent": free_port(), "baseline": free_port()}
    config = home / "agent.toml"
    device = f"bench-http-{name}"
    bench.devices.append(device)
    config.write_text(f'device_id = "{device}"\ndata_dir = "{home / "data"}"\npublic_keys = ["{bench.key_path}"]\n'
                      f'broker_url = "{bench.broker}"\ntopic_prefix = "{bench.prefix}"\n'
                      f'http = "127.0.0.1:{ports["agent"]}"\n')
    # the agent process imports the edge_agent this run imports (another branch's tree may come first)
    package_root = str(Path(edge_agent.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-m", "edge_agent", "run", "--config", str(config),
                               "--log-level", "ERROR"], cwd=ROOT, env=env),
             subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "agent_baseline.py"), "--port",
                               str(ports["baseline"]), "--model", str(home / "model.onnx"), "--manifest",
                               str(home / "manifest.json")], cwd=ROOT, env=env)]
    for port in ports.values():
        wait_port("127.0.0.1", port, timeout=60)
    return procs, {"agent": (ports["agent"], procs[0].pid), "baseline": (ports["baseline"], procs[1].pid)}


def server_round(port: int, pid: int, body: bytes, seconds: float, generator: str) -> tuple[LoadRound, float]:
    """One load round against one server: the load figures and the server's CPU seconds meanwhile."""
    before = cpu_seconds(pid)
    done = load_round(port, body, seconds, CONNECTIONS, PROCS, generator)
    return done, cpu_seconds(pid) - before


def measure_model(bench: Bench, name: str) -> list[Ratio]:
    release = bench.models[name]
    procs, servers = spawn_servers(bench, name, release)
    results = []
    try:
        for rows in (1, 100):
            records = records_for(release.manifest, rows)
            body = json.dumps({"record": records[0]} if rows == 1 else {"records": records}).encode()
            for port, _pid in servers.values():  # warm-up: connections, first requests, caches
                load_round(port, body, min(bench.seconds, 1.0), CONNECTIONS, PROCS, bench.load)
            done = rotating_rounds({side: partial(server_round, port, pid, body, bench.seconds, bench.load)
                                    for side, (port, pid) in servers.items()}, bench.rounds)
            rate = {side: [r.requests_per_s * rows for r, _ in got] for side, got in done.items()}
            cpu_per_row = {side: [cpu / max(r.requests_per_s * rows * bench.seconds, 1e-9) for r, cpu in got]
                           for side, got in done.items()}
            failed = {side: sum(r.failed for r, _ in got) for side, got in done.items()}
            latency = {side: (statistics.median(r.p50_ms for r, _ in got), statistics.median(r.p99_ms for r, _ in got))
                       for side, got in done.items()}
            results.append(Ratio(
                f"HTTP {CONNECTIONS} clients, {rows}-row requests, rows/s ({name})",
                ratios(rate["agent"], rate["baseline"]), 0.9, higher_is_better=True,
                cpu=ratios(cpu_per_row["agent"], cpu_per_row["baseline"]),
                detail=(f"{statistics.median(rate['agent']):,.0f} vs {statistics.median(rate['baseline']):,.0f} "
                        "rows/s; "
                        f"p50/p99 {latency['agent'][0]:.2f}/{latency['agent'][1]:.2f} vs "
                        f"{latency['baseline'][0]:.2f}/{latency['baseline'][1]:.2f} ms; CPU per row"
                        + (f"; FAILED requests {failed}" if any(failed.values()) else ""))))
            print(results[-1].line(), flush=True)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
    return results


def measure(bench: Bench) -> list[Ratio]:
    print(f"  (load: {generator_name(CONNECTIONS, PROCS, bench.load)}, {bench.seconds:g} s a round)", flush=True)
    return [ratio for name in bench.models for ratio in measure_model(bench, name)]

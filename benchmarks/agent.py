"""Agent overhead against the bare parts it is made of, all measured in one run on this machine.

    .venv/bin/python benchmarks/agent.py [--rounds 7] [--calls 2000] [--seconds 3] [--skip-venvs]

Prints, for each target, the median ratio over interleaved rounds and its spread (benchmarks/serving.py says
how the rounds are run), then all of them as one table with the machine's load:
  1. Agent.predict, one row / public InferenceSession.run on prebuilt feeds                   ≤ 1.3×
  2. Agent.predict_many, 100 rows / public run on feeds built from the same dicts             ≤ 1.2×
  3. HTTP, 8 concurrent keep-alive clients, 1-row requests: rows/s of the agent process
     / rows/s of a minimal stdlib server process around the same session (CPU per row beside) ≥ 0.9×
  4. the same with 100-row requests                                                           ≥ 0.9×
  5. RSS of a running agent with the model vs a process importing onnxruntime+numpy+paho
     and loading the same model (both in clean venvs)                                          ≤ 1.25×
  6. install size: venv with the wheel (no extras) vs onnxruntime+numpy+paho+cryptography     ≤ 1.1×
  7. bytes on the wire per update (desired + manifest + artifact payloads + topics) vs ONNX    ≤ 1.02×
  8. the feedback log (answers kept on disk for labels after a restart): Agent.predict and
     predict_many(100) of an agent that writes it / the same agent keeping answers in memory only,
     wall and process CPU (the owner thread's writes included)                                ≤ 1.05×
  9. score counts (what performance estimation needs), the same release with / without its score
     calibration: model run + telemetry bookkeeping (binning included), thread CPU, 1 and 100 rows ≤ 1.05×
     (a compaction every 100 rows / 10 batches; after every batch and the whole Agent's wall: no target)
Two models: "small" (logistic regression, 3 columns, a few KB of ONNX: worst case for overheads) and
"forest" (random forest on 20 numeric columns, made by the edgeops pipeline: a realistic size). Both carry a
score calibration (manifest 1.2), as pipeline releases do. ``--only-scores`` runs measure 9 alone.
Uses the machine's Mosquitto when it answers on 127.0.0.1:1883, else starts one on a free port.
"""

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import paho.mqtt.client as mqtt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import serving  # noqa: E402
from releases import Release, build_release, new_key, public_pem, sign, signed_desired  # noqa: E402
from rounds import interleaved_cpu, spread  # noqa: E402
from services import free_port, machine_broker_url, running_mosquitto, wait_port  # noqa: E402

from edge_agent.agent import Agent  # noqa: E402
from edge_agent.config import AgentConfig  # noqa: E402
from edge_agent.protocol import ReleaseManifest, Topics  # noqa: E402
from edge_agent.store import ModelStore, Pointer  # noqa: E402
from edge_agent.telemetry import TelemetryRecorder  # noqa: E402

RESULTS: list[serving.Ratio] = []


def report(name: str, ratio: float, target: float, detail: str) -> None:
    """A measure taken once (sizes, bytes: not timings)."""
    RESULTS.append(serving.Ratio(name, [ratio], target, detail=detail))
    print(RESULTS[-1].line(), flush=True)


# models -------------------------------------------------------------------------------------------------
def forest_release(key: Any) -> Release:
    """A random forest through the real pipeline: train → export (parity-checked) → manifest → sign."""
    import pandas as pd
    from sklearn.datasets import make_classification

    from edge_agent.protocol import Lineage
    from edgeops.config import load_config
    from edgeops.train.export import build_manifest, export_model
    from edgeops.train.training import train_model

    X, y = make_classification(n_samples=6000, n_features=20, n_informative=12, random_state=0)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(20)]).assign(target=y)
    cfg = load_config(None, {"model.estimator": "sklearn.ensemble.RandomForestClassifier",
                             "model.params": {"n_estimators": 60, "random_state": 0}})
    trained = train_model(frame, "target", cfg)
    export = export_model(trained, cfg.export)
    manifest = build_manifest("forest", 1, export, Lineage("0" * 64, "1" * 64), trained.metrics,
                              cfg.export.chunk_size)
    return Release(sign(manifest, key), export.onnx_bytes)


def sample_row(manifest: ReleaseManifest) -> dict[str, Any]:
    return {col: values[0] for col, values in manifest.golden.inputs.items()}


def feeds_for(manifest: ReleaseManifest, row: dict[str, Any]) -> dict[str, np.ndarray]:
    feeds = {}
    for spec in manifest.inputs:
        value = row[spec.column]
        if spec.dtype == "string":
            feeds[spec.name] = np.array([[spec.missing_token if value is None else value]], dtype=object)
        else:
            feeds[spec.name] = np.array([[np.nan if value is None else value]], dtype=np.float32)
    return feeds


def install(data_dir: Path, release: Release) -> None:
    store = ModelStore(data_dir)
    store.write_pointer(Pointer(store.install(release.manifest, release.data), None))


# 1. in-process predict, 2. concurrent HTTP (benchmarks/serving.py) ----------------------------------------
def records_for(manifest: ReleaseManifest, n: int) -> list[dict[str, Any]]:
    """``n`` rows cycling through the golden samples (real values of the model's own data)."""
    golden = manifest.golden.inputs
    rows = manifest.golden.rows
    return [{col: values[i % rows] for col, values in golden.items()} for i in range(n)]


def bench_predict(name: str, agent: Agent, release: Release, rounds: int, calls: int) -> None:
    session = serving.session_for(release.data)
    inputs = [spec.to_json() for spec in release.manifest.inputs]
    outputs = [o.name for o in session.get_outputs()]
    row = records_for(release.manifest, 1)[0]
    feeds = serving.feeds_for(inputs, [row])
    ratios = serving.interleaved(lambda: session.run(outputs, feeds), lambda: agent.predict(row), rounds, calls)
    RESULTS.append(serving.Ratio(f"Agent.predict / session.run, 1 row ({name})", ratios, 1.3,
                                 detail="public run on prebuilt feeds"))
    batch = records_for(release.manifest, 100)
    ratios = serving.interleaved(lambda: session.run(outputs, serving.feeds_for(inputs, batch)),
                                 lambda: agent.predict_many(batch), rounds, max(calls // 50, 20))
    RESULTS.append(serving.Ratio(f"predict_many / session.run, 100 rows ({name})", ratios, 1.2,
                                 detail="run + feeds from the same dicts"))


def spawn_servers(tmp: Path, name: str, release: Release, key_path: Path) -> tuple[list[subprocess.Popen[bytes]],
                                                                                  dict[str, tuple[int, int]]]:
    """The agent and the minimal server, each a process of its own on a free port, serving ``release``."""
    home = tmp / f"http-{name}"
    install(home / "data", release)
    (home / "model.onnx").write_bytes(release.data)
    (home / "manifest.json").write_bytes(release.manifest.to_bytes())
    ports = {"agent": free_port(), "baseline": free_port()}
    config = home / "agent.toml"
    config.write_text(f'device_id = "http-{name}"\ndata_dir = "{home / "data"}"\npublic_keys = ["{key_path}"]\n'
                      f'broker_url = "mqtt://127.0.0.1:{free_port()}"\nhttp = "127.0.0.1:{ports["agent"]}"\n')
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-m", "edge_agent", "run", "--config", str(config),
                               "--log-level", "ERROR"], cwd=ROOT, env=env),
             subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "serving.py"), "minimal-server", "--port",
                               str(ports["baseline"]), "--model", str(home / "model.onnx"), "--manifest",
                               str(home / "manifest.json")], cwd=ROOT, env=env)]
    for port in ports.values():
        wait_port("127.0.0.1", port, timeout=60)
    return procs, {"agent": (ports["agent"], procs[0].pid), "baseline": (ports["baseline"], procs[1].pid)}


def bench_http(tmp: Path, name: str, release: Release, key_path: Path, rounds: int, seconds: float) -> None:
    procs, servers = spawn_servers(tmp, name, release, key_path)
    generator = "wrk -t2 -c8" if shutil.which("wrk") else "Python load generator (may bound both sides)"
    try:
        for rows in (1, 100):
            records = records_for(release.manifest, rows)
            body = json.dumps({"record": records[0]} if rows == 1 else {"records": records}).encode()
            throughput, cpu, rates = serving.http_rounds(servers, body, rows, rounds, seconds)
            RESULTS.append(serving.Ratio(
                f"HTTP 8 clients, {rows}-row requests, rows/s ({name})", throughput, 0.9, higher_is_better=True,
                detail=f"{rates['agent']:,.0f} vs {rates['baseline']:,.0f} rows/s; CPU per row "
                       f"{statistics.median(cpu):.2f}× [{min(cpu):.2f}–{max(cpu):.2f}]; {generator}"))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=15)


def bench_feedback_log(tmp: Path, release: Release, key_path: Path, broker: str, prefix: str, rounds: int,
                       calls: int) -> None:
    """Two agents serving the same release, one without its feedback log (answers in memory only, as before the
    log existed); both owner threads run, so the log's writes count in the process CPU time."""
    agents = []
    for name, log in (("log-off", False), ("log-on", True)):
        data_dir = tmp / f"agent-{name}"
        install(data_dir, release)
        agent = Agent(AgentConfig(device_id=f"bench-{name}", data_dir=data_dir, public_keys=(key_path,),
                                  broker_url=broker, topic_prefix=prefix))
        if not log:
            agent._recent.log = None   # benchmark only: the memory without its log
        agents.append(agent.start())
    off, on = agents
    row, batch = records_for(release.manifest, 1)[0], records_for(release.manifest, 100)
    try:
        for label, (wall, cpu) in (
                ("predict, 1 row", interleaved_cpu(lambda: off.predict(row), lambda: on.predict(row), rounds, calls)),
                ("predict_many, 100 rows", interleaved_cpu(lambda: off.predict_many(batch),
                                                           lambda: on.predict_many(batch), rounds,
                                                           max(calls // 10, 50)))):   # rounds of ~20 ms
            RESULTS.append(serving.Ratio(f"feedback log on / off: {label}", wall, 1.05,
                                         detail=f"process CPU {spread(cpu)}"))
            print(RESULTS[-1].line(), flush=True)
    finally:
        for agent in agents:
            agent.stop()
    log_bytes = sum(p.stat().st_size for p in (tmp / "agent-log-on" / "feedback").iterdir())
    print(f"  (feedback log after the runs: {log_bytes / 1024:.0f} KiB for {on._recent.held} answers kept)", flush=True)


# 9. score counts ----------------------------------------------------------------------------------------------
def without_calibration(release: Release, key: Any) -> Release:
    """The same model and manifest without its calibration: the agent then counts no scores."""
    return Release(sign(dataclasses.replace(release.manifest, calibration=None), key), release.data)


def thread_cpu(fns: dict[str, Callable[[], Any]], rounds: int, calls: int) -> dict[str, list[float]]:
    """Per round, this thread's CPU seconds per call of each function, the order rotating every round: CPU time
    of the calling thread is what the work costs, whatever else the machine runs."""
    out: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for fn in fns.values():
        for _ in range(min(calls, 100)):
            fn()
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn, started = fns[name], time.thread_time()
            for _ in range(calls):
                fn()
            out[name].append((time.thread_time() - started) / calls)
    return out


def bench_scores(tmp: Path, name: str, release: Release, key: Any, key_path: Path, broker: str, prefix: str,
                 rounds: int, calls: int) -> None:
    """9. What counting scores adds to a prediction: the model's own run (ModelRunner) plus the telemetry
    bookkeeping with and without score counts, each in this thread's CPU time, binning included. The agent bins
    once per tick (0.1 s): under load many calls share a compaction, so the target is measured compacting every
    100 single rows or every 10 batches; a compaction after every batch (a device sending one batch per tick,
    where the cost is per tick, not per row) is shown beside. Then the whole Agent's wall time with / without,
    which a loaded machine makes noisy."""
    from edge_agent.inference import ModelRunner

    plain = without_calibration(release, key)
    runner = ModelRunner(release.manifest, release.data)
    row, batch = records_for(release.manifest, 1)[0], records_for(release.manifest, 100)
    single, answers = runner.predict(row), runner.predict_many(batch)
    recorders = {"off": TelemetryRecorder(plain.manifest, "bench", 3600, 10**9),
                 "on": TelemetryRecorder(release.manifest, "bench", 3600, 10**9)}
    counter = {"off": 0, "on": 0}

    def one(side: str) -> None:
        recorders[side].record(row, single, 0.1)
        counter[side] += 1
        if counter[side] % 100 == 0:
            recorders[side].compact()

    def many(side: str, every: int) -> None:
        recorders[side].record_many(batch, answers.answers, 0.1, answers.columns, answers.matrix)
        counter[side] += 1
        if counter[side] % every == 0:
            recorders[side].compact()

    model_one, model_many = (lambda: runner.predict(row)), (lambda: runner.predict_many(batch))
    for rows, model, n, every in ((1, model_one, calls, 100), (100, model_many, max(calls // 50, 20), 10),
                                  (100, model_many, max(calls // 50, 20), 1)):
        tel = one if rows == 1 else (lambda side, e=every: many(side, e))
        cpu = thread_cpu({"model": model, "off": lambda t=tel: t("off"), "on": lambda t=tel: t("on")}, rounds, n)
        ratios = [(m + a) / (m + b) for m, a, b in zip(cpu["model"], cpu["on"], cpu["off"], strict=True)]
        added = statistics.median(a - b for a, b in zip(cpu["on"], cpu["off"], strict=True)) / rows * 1e6
        worst = every == 1   # a compaction per batch: what a device sending one batch per tick pays, rarely
        run_us = statistics.median(cpu["model"]) / rows * 1e6
        RESULTS.append(serving.Ratio(
            f"score counts on / off, {rows}-row calls, compact every {every} ({name})", ratios, None if worst else 1.05,
            detail=f"thread CPU; +{added:.2f} µs a row on a model run of {run_us:.1f} µs a row"))
        print(RESULTS[-1].line(), flush=True)
    off = start_agent(tmp, f"{name}-scores-off", plain, key_path, broker, prefix)
    on = start_agent(tmp, f"{name}-scores-on", release, key_path, broker, prefix)
    try:
        for rows, call_off, call_on, n in (
                (1, lambda: off.predict(row), lambda: on.predict(row), calls),
                (100, lambda: off.predict_many(batch), lambda: on.predict_many(batch), max(calls // 50, 20))):
            wall, process = interleaved_cpu(call_off, call_on, rounds, n)
            RESULTS.append(serving.Ratio(f"Agent with / without score counts, {rows}-row calls ({name})", wall,
                                         None, detail=f"wall; process CPU {spread(process)}"))
            print(RESULTS[-1].line(), flush=True)
    finally:
        on.stop()
        off.stop()


# 3 + 4. clean venvs: RSS and install size --------------------------------------------------------------
def run(cmd: list[str], **kwargs: Any) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, **kwargs)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed: {done.stderr[-2000:]}")
    return done.stdout


def make_venvs(tmp: Path) -> tuple[Path, Path]:
    """venv A: the wheel without extras. venv B: the same four dependencies at the same versions, alone."""
    run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp / "dist"), str(ROOT)])
    wheel = next((tmp / "dist").glob("edgeops-*.whl"))
    agent_venv, deps_venv = tmp / "venv-agent", tmp / "venv-deps"
    for venv in (agent_venv, deps_venv):
        run([sys._base_executable, "-m", "venv", str(venv)])
    run([str(agent_venv / "bin/python"), "-m", "pip", "install", "-q", str(wheel)])
    frozen = json.loads(run([str(agent_venv / "bin/python"), "-m", "pip", "list", "--format=json"]))
    versions = {p["name"].lower(): p["version"] for p in frozen}
    deps = [f"{name}=={versions[name]}" for name in ("onnxruntime", "numpy", "paho-mqtt", "cryptography")]
    run([str(deps_venv / "bin/python"), "-m", "pip", "install", "-q", *deps])
    return agent_venv, deps_venv


def site_size(venv: Path) -> int:
    site = next((venv / "lib").glob("python3*/site-packages"))
    tooling = ("pip", "setuptools", "_distutils_hack", "distutils-precedence.pth")
    return sum(p.stat().st_size for p in site.rglob("*")
               if p.is_file() and p.relative_to(site).parts[0].split("-")[0] not in tooling)


RSS = "int(next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmRSS')))"
AGENT_RSS = """
import json, sys, time
from edge_agent.agent import Agent
from edge_agent.config import AgentConfig
agent = Agent(AgentConfig(device_id="rss", data_dir=sys.argv[1], public_keys=(sys.argv[2],), broker_url=sys.argv[3],
                          topic_prefix=sys.argv[4], http="127.0.0.1:0")).start()
agent.predict(json.loads(sys.argv[5]))
time.sleep(1.0)
print(RSS_EXPR)
agent.stop()
"""
BARE_RSS = """
import sys, time
import numpy as np, onnxruntime as ort, paho.mqtt.client
session = ort.InferenceSession(open(sys.argv[1], "rb").read(), providers=["CPUExecutionProvider"])
feeds = {n: np.array([[v]], dtype=object if isinstance(v, str) else np.float32) for n, v in eval(sys.argv[2]).items()}
session.run(None, feeds)
time.sleep(1.0)
print(RSS_EXPR)
"""


def bench_venvs(tmp: Path, release: Release, key_path: Path, broker: str, prefix: str) -> None:
    started = time.monotonic()
    agent_venv, deps_venv = make_venvs(tmp)
    print(f"  (two clean venvs built in {time.monotonic() - started:.0f} s)", flush=True)
    data_dir = tmp / "rss-data"
    install(data_dir, release)
    row = sample_row(release.manifest)
    onnx_path = tmp / "model.onnx"
    onnx_path.write_bytes(release.data)
    named = {spec.name: row[spec.column] for spec in release.manifest.inputs}
    ours = int(run([str(agent_venv / "bin/python"), "-c", AGENT_RSS.replace("RSS_EXPR", RSS), str(data_dir),
                    str(key_path), broker, prefix, json.dumps(row)]).split()[-1])
    bare = int(run([str(deps_venv / "bin/python"), "-c", BARE_RSS.replace("RSS_EXPR", RSS), str(onnx_path),
                    repr(named)]).split()[-1])
    report("RSS, running agent", ours / bare, 1.25, f"agent {ours / 1024:.1f} MiB, bare {bare / 1024:.1f} MiB")
    a, b = site_size(agent_venv), site_size(deps_venv)
    report("install size (site-packages)", a / b, 1.1,
           f"{a / 2**20:.1f} MiB vs {b / 2**20:.1f} MiB (pip/setuptools excluded; +{(a - b) / 1024:.0f} KiB)")


# 5. bytes on the wire ---------------------------------------------------------------------------------------
def bench_wire(agent: Agent, release: Release, broker: str, prefix: str, device: str, key: Any) -> None:
    """Publish the release as the control plane does, set desired, wait until the agent serves it; count what
    a subscriber with the agent's subscriptions receives."""
    from edgeops.release.publish import release_messages

    topics = Topics(prefix)
    m = release.manifest
    host, port = broker.split("://", 1)[1].rsplit(":", 1)
    received = {"bytes": 0, "messages": 0}

    def count(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        received["bytes"] += len(msg.topic.encode()) + len(msg.payload)
        received["messages"] += 1

    shadow = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    shadow.on_message = count
    shadow.connect(host, int(port))
    shadow.loop_start()
    shadow.subscribe([(topics.device(device, "desired"), 1), (topics.release_filter(m.name, m.version), 1)])
    time.sleep(0.5)
    control = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    control.connect(host, int(port))
    control.loop_start()
    retained = []
    for topic, payload in release_messages(topics, m, release.data):
        control.publish(topic, payload, qos=1, retain=True).wait_for_publish(30)
        retained.append(topic)
    desired_topic = topics.device(device, "desired")
    control.publish(desired_topic, signed_desired(key, device, m.name, m.version), qos=1,
                    retain=True).wait_for_publish(30)
    retained.append(desired_topic)
    deadline = time.monotonic() + 60
    while agent.current != (m.name, m.version):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the agent did not install {m.name}@{m.version}: {agent.state}")
        time.sleep(0.05)
    time.sleep(0.3)
    report("wire bytes per update", received["bytes"] / len(release.data), 1.02,
           f"{received['bytes']} B in {received['messages']} messages for {len(release.data)} B of ONNX "
           f"(manifest {len(m.to_bytes())} B)")
    for topic in retained:
        control.publish(topic, b"", qos=1, retain=True).wait_for_publish(30)
    for client in (shadow, control):
        client.disconnect()
        client.loop_stop()


def wire_ratio_for(release: Release, prefix: str, device: str, key: Any) -> None:
    """The same count, computed from the control plane's message list (for the small model)."""
    from edgeops.release.publish import release_messages

    topics = Topics(prefix)
    m = release.manifest
    messages = [*release_messages(topics, m, release.data),
                (topics.device(device, "desired"), signed_desired(key, device, m.name, m.version))]
    total = sum(len(t.encode()) + len(p) for t, p in messages)
    report("wire bytes per update (small)", total / len(release.data), 1.02,
           f"{total} B for {len(release.data)} B of ONNX: the manifest dominates a tiny model")


# main ---------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def broker_url(tmp: Path) -> Iterator[str]:
    url = machine_broker_url()
    if url is not None:
        yield url
        return
    with running_mosquitto(tmp / "mosquitto") as broker:
        yield broker.url


def start_agent(tmp: Path, name: str, release: Release | None, key_path: Path, broker: str, prefix: str) -> Agent:
    data_dir = tmp / f"agent-{name}"
    if release is not None:
        install(data_dir, release)
    config = AgentConfig(device_id=f"bench-{name}", data_dir=data_dir, public_keys=(key_path,), broker_url=broker,
                         topic_prefix=prefix, http=f"127.0.0.1:{free_port()}")
    agent = Agent(config).start()
    address = agent.http_address
    assert address is not None
    wait_port(*address)
    return agent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds per measure")
    parser.add_argument("--calls", type=int, default=2000, help="single-row calls per side and round")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one HTTP load round")
    parser.add_argument("--skip-venvs", action="store_true", help="skip RSS and install size (no venv builds)")
    parser.add_argument("--only-scores", action="store_true", help="measure 9 (score counts) alone")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgeops-bench-") as tmp_name, broker_url(Path(tmp_name)) as broker:
        tmp = Path(tmp_name)
        prefix = f"edgeops-bench/{uuid.uuid4().hex[:8]}"
        key = new_key()
        key_path = tmp / "release.pub"
        key_path.write_bytes(public_pem(key))
        print(f"onnxruntime {ort.__version__}, numpy {np.__version__}, broker {broker}; building models ...",
              flush=True)
        small, forest = build_release("small", 1, key, calibrated=True), forest_release(key)
        print(f"models: small {len(small.data)} B ONNX, forest {len(forest.data)} B ONNX", flush=True)
        load_before = os.getloadavg()[0]
        for name, release in (("small", small), ("forest", forest)):
            bench_scores(tmp, name, release, key, key_path, broker, prefix, args.rounds, args.calls)
        for name, release in (() if args.only_scores else (("small", small), ("forest", forest))):
            agent = start_agent(tmp, name, release, key_path, broker, prefix)
            try:
                bench_predict(name, agent, release, args.rounds, args.calls)
            finally:
                agent.stop()
            for result in RESULTS[-2:]:
                print(result.line(), flush=True)
            bench_http(tmp, name, release, key_path, max(args.rounds // 2, 3), args.seconds)
            for result in RESULTS[-2:]:
                print(result.line(), flush=True)
        if not args.only_scores:
            bench_feedback_log(tmp, small, key_path, broker, prefix, args.rounds, args.calls)
            updater = start_agent(tmp, "update", None, key_path, broker, prefix)
            try:
                bench_wire(updater, forest, broker, prefix, "bench-update", key)
            finally:
                updater.stop()
            wire_ratio_for(small, prefix, "bench-update", key)
        if not args.skip_venvs and not args.only_scores:
            bench_venvs(tmp, forest, key_path, broker, prefix)
        clear = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        host, port = broker.split("://", 1)[1].rsplit(":", 1)
        clear.connect(host, int(port))
        clear.loop_start()
        for device in ("bench-small", "bench-forest", "bench-update", "rss", *(f"bench-{n}-scores-{side}"
                                                                               for n in ("small", "forest")
                                                                               for side in ("on", "off"))):
            for channel in ("status", "reported"):
                clear.publish(Topics(prefix).device(device, channel), b"", qos=1, retain=True).wait_for_publish(10)
        clear.disconnect()
        clear.loop_stop()
    print(f"\nAll targets (median over interleaved rounds [spread]); load average {load_before:.1f} at the start, "
          f"{os.getloadavg()[0]:.1f} at the end, {os.cpu_count()} cores:")
    for result in RESULTS:
        print(result.line())
    missed = [result.name for result in RESULTS if not result.ok]
    print(f"\n{len(RESULTS) - len(missed)}/{len(RESULTS)} within target" + (f"; missed: {', '.join(missed)}"
                                                                            if missed else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

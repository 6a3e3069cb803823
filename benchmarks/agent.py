"""Agent overhead against the bare parts it is made of, all measured in one run on this machine.

    .venv/bin/python benchmarks/agent.py [--rows 2000] [--http-requests 1000]

Prints ratios (agent / baseline) with the targets:
  1. single-row predict through Agent.predict vs bare InferenceSession.run on prebuilt feeds   ≤ 1.5×
  2. HTTP predict p50/p99 vs a minimal stdlib HTTP server around the same session            ≤ 1.2×
  3. RSS of a running agent with the model vs a process importing onnxruntime+numpy+paho
     and loading the same model (both in clean venvs)                                          ≤ 1.25×
  4. install size: venv with the wheel (no extras) vs onnxruntime+numpy+paho+cryptography     ≤ 1.1×
  5. bytes on the wire per update (desired + manifest + artifact payloads + topics) vs ONNX    ≤ 1.02×
Two models: "small" (logistic regression, 3 columns, a few KB of ONNX: worst case for overheads) and
"forest" (random forest on 20 numeric columns, made by the edgeops pipeline: a realistic size).
Uses the machine's Mosquitto when it answers on 127.0.0.1:1883, else starts one on a free port.
"""

import argparse
import contextlib
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import paho.mqtt.client as mqtt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from releases import Release, build_release, new_key, public_pem, sign, signed_desired  # noqa: E402
from services import free_port, machine_broker_url, running_mosquitto, wait_port  # noqa: E402

from edge_agent.agent import Agent  # noqa: E402
from edge_agent.config import AgentConfig  # noqa: E402
from edge_agent.protocol import ReleaseManifest, Topics  # noqa: E402
from edge_agent.store import ModelStore, Pointer  # noqa: E402

RESULTS: list[tuple[str, float, float, str]] = []


def report(name: str, ratio: float, target: float, detail: str) -> None:
    RESULTS.append((name, ratio, target, detail))
    print(f"  {name:<34} {ratio:6.2f}×  (target ≤ {target}×)  {'ok ' if ratio <= target else 'MISS'}  {detail}",
          flush=True)


# models -------------------------------------------------------------------------------------------------
def forest_release(key: Any) -> Release:
    """A random forest through the real pipeline: train → export (parity-checked) → manifest → sign."""
    import pandas as pd
    from sklearn.datasets import make_classification

    from edge_agent.protocol import Lineage
    from edgeops.config import load_config
    from edgeops.export import build_manifest, export_model
    from edgeops.training import train_model

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


# 1. in-process predict ------------------------------------------------------------------------------------
def per_call_ms(fn: Callable[[], Any], n: int) -> list[float]:
    for _ in range(min(200, n)):
        fn()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def bench_predict(name: str, agent: Agent, release: Release, rows: int) -> None:
    session = ort.InferenceSession(release.data, providers=["CPUExecutionProvider"])
    row = sample_row(release.manifest)
    feeds = feeds_for(release.manifest, row)
    bare = statistics.median(per_call_ms(lambda: session.run(None, feeds), rows))
    with_feeds = statistics.median(per_call_ms(lambda: session.run(None, feeds_for(release.manifest, row)), rows))
    ours = statistics.median(per_call_ms(lambda: agent.predict(row), rows))
    report(f"predict API ({name})", ours / bare, 1.5,
           f"agent {ours * 1e3:.0f} µs, bare run {bare * 1e3:.0f} µs, bare run + dict→feeds {with_feeds * 1e3:.0f} µs")


# 2. HTTP --------------------------------------------------------------------------------------------------
def minimal_server(release: Release) -> ThreadingHTTPServer:
    """The baseline: stdlib HTTP/1.1 server, JSON in, session.run, JSON out; no checks, no telemetry."""
    session = ort.InferenceSession(release.data, providers=["CPUExecutionProvider"])
    manifest = release.manifest

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes; with Nagle on, the body waits for the client's delayed ACK
        # (40 ms on Linux) on every keep-alive request.
        disable_nagle_algorithm = True

        def log_message(self, *_: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            label, probs = session.run(None, feeds_for(manifest, body["record"]))
            out = json.dumps({"prediction": {"label": label.tolist()[0], "probabilities": probs.tolist()[0]}})
            data = out.encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def http_latencies(port: int, row: dict[str, Any], n: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    body = json.dumps({"record": row})

    def call() -> None:
        conn.request("POST", "/v1/predict", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        assert response.status == 200, response.status

    try:
        return per_call_ms(call, n)
    finally:
        conn.close()


def bench_http(name: str, agent: Agent, release: Release, n: int) -> None:
    address = agent.http_address
    assert address is not None
    server = minimal_server(release)
    try:
        row = sample_row(release.manifest)
        base = sorted(http_latencies(server.server_address[1], row, n))
        ours = sorted(http_latencies(address[1], row, n))
    finally:
        server.shutdown()
        server.server_close()
    p50 = ours[len(ours) // 2] / base[len(base) // 2]
    p99 = ours[int(len(ours) * 0.99)] / base[int(len(base) * 0.99)]
    detail = (f"p50 {ours[len(ours) // 2] * 1e3:.0f} vs {base[len(base) // 2] * 1e3:.0f} µs, "
              f"p99 {ours[int(len(ours) * 0.99)] * 1e3:.0f} vs {base[int(len(base) * 0.99)] * 1e3:.0f} µs")
    report(f"HTTP predict p50 ({name})", p50, 1.2, detail)
    report(f"HTTP predict p99 ({name})", p99, 1.2, "")


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
    from edgeops.publish import release_messages

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
    from edgeops.publish import release_messages

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
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--http-requests", type=int, default=1000)
    parser.add_argument("--skip-venvs", action="store_true", help="skip RSS and install size (no venv builds)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgeops-bench-") as tmp_name, broker_url(Path(tmp_name)) as broker:
        tmp = Path(tmp_name)
        prefix = f"edgeops-bench/{uuid.uuid4().hex[:8]}"
        key = new_key()
        key_path = tmp / "release.pub"
        key_path.write_bytes(public_pem(key))
        print(f"onnxruntime {ort.__version__}, numpy {np.__version__}, broker {broker}; building models ...",
              flush=True)
        small, forest = build_release("small", 1, key), forest_release(key)
        print(f"models: small {len(small.data)} B ONNX, forest {len(forest.data)} B ONNX", flush=True)
        for name, release in (("small", small), ("forest", forest)):
            agent = start_agent(tmp, name, release, key_path, broker, prefix)
            try:
                bench_predict(name, agent, release, args.rows)
                bench_http(name, agent, release, args.http_requests)
            finally:
                agent.stop()
        updater = start_agent(tmp, "update", None, key_path, broker, prefix)
        try:
            bench_wire(updater, forest, broker, prefix, "bench-update", key)
        finally:
            updater.stop()
        wire_ratio_for(small, prefix, "bench-update", key)
        if not args.skip_venvs:
            bench_venvs(tmp, forest, key_path, broker, prefix)
        clear = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        host, port = broker.split("://", 1)[1].rsplit(":", 1)
        clear.connect(host, int(port))
        clear.loop_start()
        for device in ("bench-small", "bench-forest", "bench-update", "rss"):
            for channel in ("status", "reported"):
                clear.publish(Topics(prefix).device(device, channel), b"", qos=1, retain=True).wait_for_publish(10)
        clear.disconnect()
        clear.loop_stop()
    missed = [name for name, ratio, target, _ in RESULTS if ratio > target]
    print(f"\n{len(RESULTS) - len(missed)}/{len(RESULTS)} within target" + (f"; missed: {', '.join(missed)}"
                                                                            if missed else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What the agent costs a device besides time: memory, disk, and bytes on the wire for an update.

- RSS: a running agent serving the forest (after one prediction) / a process that imports onnxruntime, numpy and
  paho and runs the same model. In two clean venvs (the wheel without extras / its four dependencies at the same
  versions); with ``--quick`` both in this interpreter (no venv builds; the install-size row is then absent).
- Install size: site-packages of the two clean venvs, pip and setuptools left out.
- Wire bytes per update: a byte-counting TCP proxy between an agent and the broker counts every byte of the
  agent's MQTT 5 connection, both ways, from "desired state published" until the agent serves the release and
  the link is quiet: whole packets (fixed header, variable header, properties, payload), PUBACKs,
  (UN)SUBSCRIBEs and the agent's own reports. The ratio is that / (ONNX bytes + manifest bytes): the manifest
  (golden samples, reference bins: a few KB whatever the model's size) is payload every update must carry, so
  its size is printed. The small model's row has no target: there the desired state and reports, not the
  framing, outweigh a 1 KB model. Beside it, the PUBLISH packets delivered to the agent by packet arithmetic
  (benchmarks/wire.py), to check the proxy's count.
"""

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from agent_setup import Bench, install, records_for, start_agent
from releases import Release, signed_desired
from rounds import Ratio
from wire import PUBACK_BYTES, publish_bytes

import edge_agent
from edge_agent.protocol import Topics
from edgeops.release.publish import release_messages


# RSS and install size -----------------------------------------------------------------------------------------
def run(cmd: list[str]) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed: {done.stderr[-2000:]}")
    return done.stdout


def make_venvs(tmp: Path) -> tuple[Path, Path]:
    """venv A: the wheel (built from the tree edge_agent is imported from) without extras. venv B: the same four
    dependencies at the same versions, alone."""
    source = Path(edge_agent.__file__).resolve().parents[1]
    run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp / "dist"), str(source)])
    wheel = next((tmp / "dist").glob("edgeops-*.whl"))
    agent_venv, deps_venv = tmp / "venv-agent", tmp / "venv-deps"
    for venv in (agent_venv, deps_venv):
        run([sys._base_executable, "-m", "venv", str(venv)])  # type: ignore[attr-defined]
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
AGENT_RSS = f"""
import json, sys, time
from edge_agent.agent import Agent
from edge_agent.config import AgentConfig
agent = Agent(AgentConfig(device_id="bench-rss", data_dir=sys.argv[1], public_keys=(sys.argv[2],),
                          broker_url=sys.argv[3], topic_prefix=sys.argv[4], http="127.0.0.1:0")).start()
agent.predict(json.loads(sys.argv[5]))
time.sleep(1.0)
print({RSS})
agent.stop()
"""
BARE_RSS = f"""
import json, sys, time
import numpy as np, onnxruntime as ort, paho.mqtt.client
session = ort.InferenceSession(open(sys.argv[1], "rb").read(), providers=["CPUExecutionProvider"])
feeds = {{n: np.array([[v]], dtype=object if isinstance(v, str) else np.float32)
          for n, v in json.loads(sys.argv[2]).items()}}
session.run(None, feeds)
time.sleep(1.0)
print({RSS})
"""


def measure_size(bench: Bench) -> list[Ratio]:
    release = bench.models["forest"]
    if bench.quick:
        agent_python = deps_python = Path(sys.executable)
        where = "this interpreter (--quick)"
    else:
        started = time.monotonic()
        agent_venv, deps_venv = make_venvs(bench.tmp)
        print(f"  (two clean venvs built in {time.monotonic() - started:.0f} s)", flush=True)
        agent_python, deps_python = agent_venv / "bin/python", deps_venv / "bin/python"
        where = "clean venvs"
    data_dir = bench.tmp / "rss-data"
    install(data_dir, release)
    bench.devices.append("bench-rss")
    row = records_for(release.manifest, 1)[0]
    onnx_path = bench.tmp / "model.onnx"
    onnx_path.write_bytes(release.data)
    named = {spec.name: row[spec.column] for spec in release.manifest.inputs}
    ours = int(run([str(agent_python), "-c", AGENT_RSS, str(data_dir), str(bench.key_path), bench.broker,
                    bench.prefix, json.dumps(row)]).split()[-1])
    bare = int(run([str(deps_python), "-c", BARE_RSS, str(onnx_path), json.dumps(named)]).split()[-1])
    results = [Ratio("RSS, running agent (forest)", [ours / bare], 1.25,
                     detail=f"agent {ours / 1024:.1f} MiB, bare {bare / 1024:.1f} MiB; {where}")]
    if not bench.quick:
        a, b = site_size(agent_venv), site_size(deps_venv)
        results.append(Ratio("install size (site-packages)", [a / b], 1.1,
                             detail=f"{a / 2**20:.1f} MiB vs {b / 2**20:.1f} MiB (pip/setuptools excluded; "
                                    f"+{(a - b) / 1024:.0f} KiB)"))
    for result in results:
        print(result.line(), flush=True)
    return results


# wire bytes -----------------------------------------------------------------------------------------------------
class CountingProxy:
    """A TCP proxy on a free port to ``upstream``: counts the bytes each way as they cross its sockets."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.down = self.up = 0   # broker → device, device → broker
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def counts(self) -> tuple[int, int]:
        with self._lock:
            return self.down, self.up

    def _accept(self) -> None:
        while True:
            try:
                device, _ = self._server.accept()
            except OSError:
                return
            broker = socket.create_connection(self.upstream)
            threading.Thread(target=self._pump, args=(broker, device, "down"), daemon=True).start()
            threading.Thread(target=self._pump, args=(device, broker, "up"), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, way: str) -> None:
        try:
            while data := source.recv(65536):
                with self._lock:
                    setattr(self, way, getattr(self, way) + len(data))
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with_close(sock)

    def close(self) -> None:
        self._server.close()


def with_close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def wait_quiet(proxy: CountingProxy, quiet_s: float = 0.5, timeout: float = 30.0) -> tuple[int, int]:
    """The counts once nothing crossed the proxy for ``quiet_s``."""
    deadline, last, since = time.monotonic() + timeout, proxy.counts(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = proxy.counts()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s and sum(now) > 0:
            return now
    return last


def update_bytes(bench: Bench, name: str, release: Release) -> Ratio:
    """Publish ``release`` as the control plane does, set the agent's desired state, wait until it serves it."""
    proxy = CountingProxy(bench.broker_address)
    agent = start_agent(bench, f"wire-{name}", None, broker=f"mqtt://127.0.0.1:{proxy.port}", http=False)
    device = f"bench-wire-{name}"
    topics, m = Topics(bench.prefix), release.manifest
    control = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    control.connect(*bench.broker_address)
    control.loop_start()
    messages = [*release_messages(topics, m, release.data),
                (topics.device(device, "desired"), signed_desired(bench.key, device, m.name, m.version))]
    try:
        before = wait_quiet(proxy)
        for topic, payload in messages:
            control.publish(topic, payload, qos=1, retain=True).wait_for_publish(30)
        deadline = time.monotonic() + 60
        while agent.current != (m.name, m.version):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the agent did not install {m.name}@{m.version}: {agent.state}")
            time.sleep(0.05)
        after = wait_quiet(proxy)
    finally:
        agent.stop()
        proxy.close()
        for topic, _ in messages:
            control.publish(topic, b"", qos=1, retain=True).wait_for_publish(30)
        control.disconnect()
        control.loop_stop()
    down, up = after[0] - before[0], after[1] - before[1]
    packets = sum(publish_bytes(topic, payload, 1, mqtt5=True) + PUBACK_BYTES for topic, payload in messages)
    manifest, onnx = len(m.to_bytes()), len(release.data)
    return Ratio(f"wire bytes per update / (ONNX + manifest) ({name})", [(down + up) / (onnx + manifest)],
                 1.02 if name == "forest" else None,
                 detail=f"{down + up:,} B on the socket ({down:,} down, {up:,} up) for {onnx:,} B ONNX + "
                        f"{manifest:,} B manifest; PUBLISH+PUBACK by arithmetic {packets:,} B; "
                        f"{(down + up) / onnx:.2f}× the ONNX alone")


def measure_wire(bench: Bench) -> list[Ratio]:
    results = [update_bytes(bench, name, release) for name, release in bench.models.items()]
    for result in results:
        print(result.line(), flush=True)
    return results

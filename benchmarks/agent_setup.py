"""What every measure of benchmarks/agent.py stands on: the two models, a broker, signed releases, agents.

Two models: "small" (logistic regression, 3 columns, a few KB of ONNX: the worst case for any per-call
overhead) and "forest" (a random forest on 20 numeric columns through the edgeops pipeline: a realistic size).
Both carry a score calibration (manifest 1.2), as pipeline releases do. Agents are built only through the
public API (``AgentConfig``, ``Agent.start``), so the same measures run against any branch of edge_agent.
"""

import contextlib
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the test helpers: signed releases, Mosquitto on a free port

from releases import Release, build_release, new_key, public_pem, sign  # noqa: E402
from services import free_port, machine_broker_url, running_mosquitto, wait_port  # noqa: E402

from edge_agent.agent import Agent  # noqa: E402
from edge_agent.config import AgentConfig  # noqa: E402
from edge_agent.protocol import ReleaseManifest, Topics  # noqa: E402
from edge_agent.store import ModelStore, Pointer  # noqa: E402


@dataclass
class Bench:
    """One run's shared parts and settings."""

    tmp: Path
    broker: str
    prefix: str
    key: Any
    key_path: Path
    models: dict[str, Release]
    rounds: int
    calls: int
    seconds: float
    quick: bool
    load: str  # the HTTP load generator: auto (wrk when installed), wrk or python (benchmarks/http_load.py)
    devices: list[str]  # device ids whose retained status/reported the run must clear at the end

    @property
    def broker_address(self) -> tuple[str, int]:
        host, port = self.broker.split("://", 1)[1].rsplit(":", 1)
        return host, int(port)


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


def records_for(manifest: ReleaseManifest, n: int) -> list[dict[str, Any]]:
    """``n`` rows cycling through the golden samples (real values of the model's own data)."""
    golden, rows = manifest.golden.inputs, manifest.golden.rows
    return [{col: values[i % rows] for col, values in golden.items()} for i in range(n)]


def install(data_dir: Path, release: Release) -> None:
    """Put ``release`` on disk as an installed, current model (what an agent finds after an update)."""
    store = ModelStore(data_dir)
    store.write_pointer(Pointer(store.install(release.manifest, release.data), None))


def agent_config(bench: Bench, name: str, release: Release | None, *, broker: str | None = None,
                 http: bool = True) -> AgentConfig:
    """The config of agent ``bench-<name>`` with ``release`` preinstalled (None: no model yet)."""
    data_dir = bench.tmp / f"agent-{name}"
    if release is not None:
        install(data_dir, release)
    bench.devices.append(f"bench-{name}")
    return AgentConfig(device_id=f"bench-{name}", data_dir=data_dir, public_keys=(bench.key_path,),
                       broker_url=broker or bench.broker, topic_prefix=bench.prefix,
                       http=f"127.0.0.1:{free_port()}" if http else None)


def start_agent(bench: Bench, name: str, release: Release | None, **kwargs: Any) -> Agent:
    agent = Agent(agent_config(bench, name, release, **kwargs)).start()
    if agent.http_address is not None:
        wait_port(*agent.http_address)
    return agent


@contextlib.contextmanager
def broker_url(tmp: Path) -> Iterator[str]:
    """The machine's Mosquitto when it answers on 127.0.0.1:1883, else one of our own on a free port."""
    url = machine_broker_url()
    if url is not None:
        yield url
        return
    with running_mosquitto(tmp / "mosquitto") as broker:
        yield broker.url


def clear_retained(bench: Bench) -> None:
    """Remove the retained status and reported messages the run's agents left on the broker."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.connect(*bench.broker_address)
    client.loop_start()
    for device in bench.devices:
        for channel in ("status", "reported"):
            client.publish(Topics(bench.prefix).device(device, channel), b"", qos=1, retain=True).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


@contextlib.contextmanager
def bench_run(rounds: int, calls: int, seconds: float, quick: bool, load: str = "auto",
              models: bool = True) -> Iterator[Bench]:
    """A temporary directory, a broker, a signing key and (``models``) the two releases; cleaned up after."""
    with tempfile.TemporaryDirectory(prefix="edgeops-bench-") as tmp_name, broker_url(Path(tmp_name)) as broker:
        tmp = Path(tmp_name)
        key = new_key()
        key_path = tmp / "release.pub"
        key_path.write_bytes(public_pem(key))
        releases = {"small": build_release("small", 1, key, calibrated=True), "forest": forest_release(key)} \
            if models else {}
        bench = Bench(tmp, broker, f"edgeops-bench/{uuid.uuid4().hex[:8]}", key, key_path, releases, rounds, calls,
                      seconds, quick, load, [])
        try:
            yield bench
        finally:
            clear_retained(bench)

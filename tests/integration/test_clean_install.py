"""The device install, for real: wheel → fresh venv (no system site-packages) → the agent's deps only.

One venv for the whole module (slow: about a minute). It is made by deployments/install-agent.sh itself,
so the install script is exercised too (with its paths moved into tmp and systemd/useradd skipped).
"""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from releases import Control, build_release, is_event, is_reported, new_key, public_pem, with_runtime_trap
from services import clear_retained, free_port, port_open

from edge_agent.store import ModelStore, Pointer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
FORBIDDEN = ("prefect", "sklearn", "scikit-learn", "pandas", "scipy", "skl2onnx", "typer", "sqlalchemy")


@dataclass
class Install:
    prefix: Path
    etc: Path
    data: Path
    key: Path
    release: object

    @property
    def bin(self) -> Path:
        return self.prefix / "venv" / "bin"


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kwargs)  # type: ignore[call-overload]


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.fixture(scope="module")
def install(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Install]:
    tmp = tmp_path_factory.mktemp("clean-install")
    built = run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp / "dist"), str(ROOT)])
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = next((tmp / "dist").glob("edgeops-*.whl"))
    key = new_key()
    (tmp / "release.pub").write_bytes(public_pem(key))
    inst = Install(prefix=tmp / "opt", etc=tmp / "etc", data=tmp / "data", key=tmp / "release.pub",
                   release=build_release("churn", 1, key))
    env = {**os.environ, "PREFIX": str(inst.prefix), "ETC_DIR": str(inst.etc), "DATA_DIR": str(inst.data),
           "UNIT_DIR": str(tmp / "systemd"), "NO_SYSTEMD": "1", "NO_USER": "1", "PYTHON": sys._base_executable}
    started = time.monotonic()
    done = run(["bash", str(ROOT / "deployments" / "install-agent.sh"), "--wheel", str(wheel), "--device-id",
                "press-17", "--public-key", str(inst.key), "--label", "site=berlin"], env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    print(f"\ninstall-agent.sh took {time.monotonic() - started:.0f} s")
    again = run(["bash", str(ROOT / "deployments" / "install-agent.sh"), "--wheel", str(wheel)], env=env)
    assert again.returncode == 0 and "keeping the existing" in again.stdout, again.stderr[-2000:]  # idempotent
    yield inst


def test_the_venv_is_clean_and_holds_only_the_agent_dependencies(install: Install) -> None:
    cfg = (install.prefix / "venv" / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = false" in cfg
    listed = run([str(install.bin / "python"), "-m", "pip", "list", "--format=json"])
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert {"edgeops", "onnxruntime", "numpy", "paho-mqtt", "cryptography"} <= names
    assert not names & set(FORBIDDEN), names & set(FORBIDDEN)
    site = next((install.prefix / "venv" / "lib").glob("python3*/site-packages"))
    tools = sum(dir_size(p) for p in site.iterdir() if p.name.split("-")[0].lower() in ("pip", "setuptools"))
    total = dir_size(site)
    print(f"\nsite-packages: {total / 2**20:.1f} MiB ({(total - tools) / 2**20:.1f} MiB without pip/setuptools); "
          f"{len(names)} distributions: {sorted(names)}")
    # every agent module imports with the base dependencies alone
    imports = run([str(install.bin / "python"), "-c", "import edge_agent.agent, edge_agent.cli, edge_agent.link, "
                   "edge_agent.telemetry, edge_agent.outbox, edge_agent.http_api"])
    assert imports.returncode == 0, imports.stderr


def test_agent_help_version_and_the_control_plane_message(install: Install) -> None:
    helped = run([str(install.bin / "edgeops-agent"), "--help"])
    assert helped.returncode == 0 and "run" in helped.stdout and "predict" in helped.stdout
    assert run([str(install.bin / "edgeops-agent"), "--version"]).stdout.startswith("edgeops-agent ")
    control = run([str(install.bin / "edgeops"), "--help"])
    assert control.returncode == 2
    lines = control.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'edgeops[control]'" in lines[0], control.stderr


def install_model(install: Install) -> None:
    store = ModelStore(install.data)
    release = install.release
    ref = store.install(release.manifest, release.data)  # type: ignore[attr-defined]
    store.write_pointer(Pointer(ref, None))


def test_offline_predict_and_the_running_agent_serve_the_installed_model(
        install: Install, session_broker: str, topic_prefix: str) -> None:
    install_model(install)
    row = {"age in years": 51.0, "income": 4.2, "plan": "pro"}
    predicted = run([str(install.bin / "edgeops-agent"), "predict", "--data-dir", str(install.data),
                     "--public-key", str(install.key), "--json", json.dumps(row)])
    assert predicted.returncode == 0, predicted.stderr
    offline = json.loads(predicted.stdout)
    assert (offline["model"], offline["version"]) == ("churn", 1)
    assert offline["prediction"]["label"] in (0, 1)

    port = free_port()
    agent = subprocess.Popen(
        [str(install.bin / "edgeops-agent"), "run", "--config", str(install.etc / "agent.toml"),
         "--broker", session_broker, "--topic-prefix", topic_prefix, "--http", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90  # a fresh venv compiles its .pyc files on the first start
        while not port_open("127.0.0.1", port):
            if agent.poll() is not None or time.monotonic() > deadline:
                agent.kill()
                raise AssertionError(f"the agent did not serve HTTP: {agent.communicate()[1][-2000:]}")
            time.sleep(0.1)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/predict", method="POST",
                                         data=json.dumps({"record": row}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            served = json.loads(response.read())
        assert served["prediction"]["label"] == offline["prediction"]["label"]
    finally:
        agent.send_signal(signal.SIGTERM)
        _out, err = agent.communicate(timeout=30)
    assert agent.returncode == 0, err[-2000:]
    assert "stopping" in err
    clear_retained(session_broker, [f"{topic_prefix}/devices/press-17/{c}" for c in ("status", "reported")])


def http_predict(port: int, row: dict[str, object]) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/predict", method="POST",
                                     data=json.dumps({"record": row}).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def serving_version(port: int) -> object:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=10) as response:
        return json.loads(response.read())["version"]


def onnxruntime_answer(release: object, row: dict[str, object]) -> tuple[object, list[float]]:
    """What bare onnxruntime says on the release's bytes: the reference the agent must match."""
    manifest = release.manifest  # type: ignore[attr-defined]
    session = ort.InferenceSession(release.data, providers=["CPUExecutionProvider"])  # type: ignore[attr-defined]
    feeds = {spec.name: np.array([[row[spec.column]]], dtype=np.float32 if spec.dtype == "float32" else object)
             for spec in manifest.inputs}
    label, probabilities = session.run([manifest.outputs.label, manifest.outputs.probabilities], feeds)
    return np.asarray(label).ravel()[0].item(), [float(p) for p in np.asarray(probabilities)[0]]


def test_the_clean_install_follows_desired_state_through_install_rejection_and_rollback(
        install: Install, session_broker: str, topic_prefix: str, tmp_path: Path) -> None:
    """The issue's bar for the device: base dependencies only, driven over MQTT, answers equal to onnxruntime's."""
    device, port, trusted = "clean-1", free_port(), new_key()
    (tmp_path / "release.pub").write_bytes(public_pem(trusted))
    (tmp_path / "agent.toml").write_text(
        f'device_id = "{device}"\ndata_dir = "{tmp_path / "data"}"\npublic_keys = ["{tmp_path / "release.pub"}"]\n'
        f'topic_prefix = "{topic_prefix}"\nbroker_url = "{session_broker}"\nhttp = "127.0.0.1:{port}"\n'
        "probation_s = 6.0\nprobation_min_predictions = 0\nprobation_max_error_rate = 0.2\n")
    v1 = build_release("churn", 1, trusted)
    v2_foreign = build_release("churn", 2, new_key(), seed=1)  # signed by a key the device does not trust
    v3_trap = with_runtime_trap(build_release("churn", 3, trusted, seed=2), trusted)
    control = Control(session_broker, topic_prefix, trusted)
    control.watch(device)
    agent = subprocess.Popen([str(install.bin / "edgeops-agent"), "run", "--config", str(tmp_path / "agent.toml")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        control.publish_release(v1)
        control.set_desired(device, "churn", 1)
        control.wait_for(is_reported("serving", 1), timeout=90)
        row = {"age in years": 51.0, "income": 4.2, "plan": "pro"}
        status, served = http_predict(port, row)
        label, probabilities = onnxruntime_answer(v1, row)
        assert status == 200 and served["prediction"]["label"] == label  # type: ignore[index]
        assert list(served["prediction"]["probabilities"].values()) == pytest.approx(probabilities, abs=1e-6)  # type: ignore[index]

        control.publish_release(v2_foreign)
        control.set_desired(device, "churn", 2)
        _, event = control.wait_for(is_event("rejected", 2))
        assert "signing key" in json.loads(event)["reason"]
        assert http_predict(port, row)[0] == 200 and serving_version(port) == 1  # still serving v1

        control.publish_release(v3_trap)
        control.set_desired(device, "churn", 3)
        control.wait_for(is_reported("probation", 3))
        failures = [http_predict(port, {**row, "income": 1000.0})[0] for _ in range(4)]
        assert all(code >= 500 for code in failures), failures  # the model itself fails: not the caller's fault
        _, payload = control.wait_for(is_reported("rolled_back", 1))
        assert "probation failed: error rate" in json.loads(payload)["last_error"]
        assert http_predict(port, {**row, "income": 1000.0})[0] == 200 and serving_version(port) == 1
    finally:
        agent.send_signal(signal.SIGTERM)
        _out, err = agent.communicate(timeout=30)
        control.close()
        clear_retained(session_broker, [f"{topic_prefix}/devices/{device}/{c}" for c in ("status", "reported")])
    assert agent.returncode == 0, err[-2000:]

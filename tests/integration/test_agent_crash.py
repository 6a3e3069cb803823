"""Crashes during activation: the agent always comes back serving a complete, verified model.

Two layers: (1) in-process, a simulated crash at *every* durable write of an install (deterministic, covers
each point before and after each atomic rename); (2) the real thing: ``python -m edge_agent run`` killed with
SIGKILL at random moments of install loops, then restarted, many times.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from releases import (
    Control,
    Release,
    agent_config,
    build_release,
    is_reported,
    kid,
    new_key,
    preinstall,
    signed_desired,
)
from services import free_port

import edge_agent.store as store_module
from edge_agent.agent import Agent
from edge_agent.installer import load_verified
from edge_agent.protocol import now_iso
from edge_agent.store import ModelRef, ModelStore
from edge_agent.verify import KeyRing

pytestmark = pytest.mark.integration

ROW = {"age in years": 52.0, "income": 4.5, "plan": "pro"}
DEVICE = "crashy"
LIMIT = 64 << 20


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so no handler in the agent can swallow it."""


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return new_key()


@pytest.fixture(scope="module")
def versions(key: Ed25519PrivateKey) -> list[Release]:
    return [build_release("churn", v, key, seed=v % 3, chunk_size=400) for v in range(1, 5)]


def assert_complete_and_verified(data_dir: Path, key: Ed25519PrivateKey) -> ModelRef:
    store = ModelStore(data_dir)
    current = store.read_pointer().current
    assert current is not None, "no model after the crash"
    load_verified(store, KeyRing.from_public_keys([key.public_key()]), current, LIMIT)
    return current


def install_directly(agent: Agent, release: Release, key: Ed25519PrivateKey) -> None:
    """Drive one install through the agent's message handler, synchronously, without a broker."""
    m = release.manifest
    agent.handle_message(agent.topics.device(DEVICE, "desired"), signed_desired(key, DEVICE, m.name, m.version))
    size = m.artifact.chunk_size
    for i in range(m.artifact.chunks):
        agent.handle_message(agent.topics.artifact(m.name, m.version, i), release.data[i * size:(i + 1) * size])
    agent.handle_message(agent.topics.manifest(m.name, m.version), m.to_bytes())


def crash_at(point: int, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make the ``point``-th durable write step raise Crash; returns the log of steps taken."""
    steps: list[str] = []
    real_write = store_module.atomic_write

    def atomic_write(path: Path, data: bytes) -> None:
        for when in ("before", "after"):
            if when == "after":
                real_write(path, data)
            steps.append(f"{when} {path.name}")
            if len(steps) == point:
                raise Crash(steps[-1])

    monkeypatch.setattr(store_module, "atomic_write", atomic_write)
    return steps


def test_a_crash_at_every_write_of_an_install_leaves_a_servable_model(
        tmp_path: Path, key: Ed25519PrivateKey, versions: list[Release], monkeypatch: pytest.MonkeyPatch) -> None:
    v1, v2 = versions[0], versions[1]
    url = f"mqtt://127.0.0.1:{free_port()}"  # never connected: the handler is driven directly
    # A dry run counts the write steps of one install.
    preinstall(tmp_path / "dry" / "data", v1)
    agent = Agent(agent_config(tmp_path / "dry", url, "c", key, DEVICE)).load()
    steps = crash_at(10_000, monkeypatch)
    install_directly(agent, v2, key)
    agent.outbox.close()
    monkeypatch.undo()
    assert agent.current == ("churn", 2)
    total = len(steps)
    assert total >= 10 and "before current" in steps  # state files, model, manifest, pointer
    outcomes = set()
    for point in range(1, total + 1):
        base = tmp_path / f"crash-{point}"
        preinstall(base / "data", v1)
        agent = Agent(agent_config(base, url, "c", key, DEVICE)).load()
        crash_at(point, monkeypatch)
        with pytest.raises(Crash):
            install_directly(agent, v2, key)
        agent.outbox.close()
        monkeypatch.undo()
        serving = assert_complete_and_verified(base / "data", key)
        restarted = Agent(agent_config(base, url, "c", key, DEVICE)).load()
        try:
            assert restarted.current == (serving.model, serving.version)
            assert restarted.state.current == serving and restarted.state.phase in ("serving", "probation")
            assert restarted.predict(ROW).label in (0, 1)
        finally:
            restarted.stop()
        outcomes.add(serving.version)
    assert outcomes == {1, 2}  # crashes before the pointer switch keep v1, after it serve v2


# the real thing: SIGKILL a separate agent process --------------------------------------------------------
@pytest.fixture
def control(session_broker: str, topic_prefix: str, key: Ed25519PrivateKey) -> Iterator[Control]:
    ctl = Control(session_broker, topic_prefix, key)
    ctl.watch(DEVICE)
    yield ctl
    ctl.close()


def write_config(tmp_path: Path, url: str, prefix: str, key: Ed25519PrivateKey) -> Path:
    config = agent_config(tmp_path, url, prefix, key, DEVICE)
    path = tmp_path / "agent.toml"
    path.write_text(
        f'device_id = "{DEVICE}"\ndata_dir = "{config.data_dir}"\nbroker_url = "{url}"\n'
        f'public_keys = ["{tmp_path / "keys" / (kid(key) + ".pub")}"]\ntopic_prefix = "{prefix}"\n'
        "probation_s = 0.0\nprobation_min_predictions = 0\nfetch_timeout_s = 10.0\nreconnect_max_s = 0.5\n"
        "telemetry_interval_s = 3600.0\n"
        "report_steps_after_s = 0.0\n")  # every step reported at once: the kill loop waits for them
    return path


def spawn(config: Path, log: Path) -> subprocess.Popen[bytes]:
    root = Path(__file__).resolve().parents[2]
    return subprocess.Popen([sys.executable, "-m", "edge_agent", "run", "--config", str(config),
                             "--log-level", "WARNING"], cwd=root, stdout=subprocess.DEVNULL,
                            stderr=log.open("ab"), env={**os.environ, "PYTHONPATH": str(root)})


def test_sigkill_during_install_loops_always_restarts_into_a_verified_model(
        tmp_path: Path, session_broker: str, topic_prefix: str, control: Control, key: Ed25519PrivateKey,
        versions: list[Release]) -> None:
    for release in versions:
        control.publish_release(release)
    config = write_config(tmp_path, session_broker, topic_prefix, key)
    log = tmp_path / "agent.log"
    rng = random.Random(1234)
    proc = spawn(config, log)
    try:
        control.set_desired(DEVICE, "churn", 1)
        control.wait_for(is_reported("serving", 1), timeout=60)
        target = 1
        killed_in: list[str] = []  # persisted phase at each kill, shown when an assertion fails
        for _round in range(16):
            target = rng.choice([v.version for v in versions if v.version != target])
            control.received.clear()
            control.set_desired(DEVICE, "churn", target)
            # Kill somewhere between "desired arrived" and "just after activation": wait for a random phase
            # report, then a random few milliseconds.
            phase = rng.choice(["fetching", "verifying", "self_testing", "self_testing", "activating"]).encode()
            control.wait_for(lambda t, p, ph=phase: t.endswith("/reported") and b'"state":"' + ph in p, timeout=60)
            time.sleep(rng.uniform(0.0, 0.02))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            state = json.loads((tmp_path / "data" / "state.json").read_text())
            killed_in.append(state["phase"])
            serving = assert_complete_and_verified(tmp_path / "data", key)
            restarted_at = now_iso()  # reports of the killed process may still be in flight: skip them
            proc = spawn(config, log)
            _, first = control.wait_for(is_reported(None, since=restarted_at), timeout=60)
            first_report = json.loads(first)
            assert first_report["version"] == serving.version, (killed_in, first_report)
            assert first_report["state"] in ("serving", "fetching"), (killed_in, first_report)
            # then the new process finishes the desired install
            control.wait_for(is_reported("serving", target, since=restarted_at), timeout=60)
            assert_complete_and_verified(tmp_path / "data", key)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=15)
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


def test_a_restart_during_probation_keeps_watching_and_can_still_roll_back(
        tmp_path: Path, key: Ed25519PrivateKey, versions: list[Release]) -> None:
    from releases import with_runtime_trap

    from edge_agent.lifecycle import AgentState

    v1, trapped = versions[0], with_runtime_trap(versions[1], key)
    preinstall(tmp_path / "data", trapped, previous=v1)
    ModelStore(tmp_path / "data").write_state(
        AgentState("probation", current=ModelRef("churn", 2), previous=ModelRef("churn", 1)).to_json())
    config = agent_config(tmp_path, f"mqtt://127.0.0.1:{free_port()}", "c", key, DEVICE,
                          probation_s=600.0, probation_min_predictions=3, probation_max_error_rate=0.5)
    agent = Agent(config).load()
    try:
        assert agent.state.phase == "probation" and agent.probation is not None
        for _ in range(3):
            with pytest.raises(Exception, match="model failed to run"):
                agent.predict({**ROW, "income": 999.0})
        agent.tick()
        assert agent.current == ("churn", 1) and agent.state.phase == "rolled_back"
        assert ModelStore(tmp_path / "data").read_pointer().current == ModelRef("churn", 1)
    finally:
        agent.stop()

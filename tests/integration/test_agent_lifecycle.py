"""The agent against a real Mosquitto: installs, every kind of rejection, rollback, retry, offline start."""

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from releases import (
    Control,
    Release,
    agent_config,
    build_release,
    is_event,
    is_reported,
    new_key,
    preinstall,
    sign,
    tampered_artifact,
    with_bytes,
    with_runtime_trap,
    with_wrong_golden,
)
from services import free_port

from edge_agent.agent import Agent
from edge_agent.errors import ModelError
from edge_agent.lifecycle import LATENCY_MIN_SAMPLES
from edge_agent.protocol import TRANSIENT_STATES, Desired, Reported
from edge_agent.store import ModelRef, ModelStore

pytestmark = pytest.mark.integration

ROW = {"age in years": 52.0, "income": 4.5, "plan": "pro"}
DEVICE = "dev-1"
Key = Ed25519PrivateKey
StartAgent = Callable[..., Agent]


@pytest.fixture(scope="module")
def key() -> Key:
    return new_key()


@pytest.fixture(scope="module")
def v1(key: Key) -> Release:
    return build_release("churn", 1, key)


@pytest.fixture
def control(session_broker: str, topic_prefix: str, key: Key) -> Iterator[Control]:
    ctl = Control(session_broker, topic_prefix, key)
    ctl.watch(DEVICE)
    yield ctl
    ctl.close()


@pytest.fixture
def start_agent(tmp_path: Path, session_broker: str, topic_prefix: str,
                key: Key) -> Iterator[StartAgent]:
    agents: list[Agent] = []

    def start(**overrides: Any) -> Agent:
        agent = Agent(agent_config(tmp_path, session_broker, topic_prefix, key, DEVICE, **overrides)).start()
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        agent.stop()


def files_outside(tmp_path: Path) -> list[Path]:
    data = tmp_path / "data"
    return [p for p in tmp_path.rglob("*") if p.is_file() and data not in p.parents and p.parent.name != "keys"]


def test_install_over_mqtt_then_chunked_upgrade_keeps_the_previous_model(
        control: Control, start_agent: StartAgent, key: Key, v1: Release) -> None:
    agent = start_agent()
    control.publish_release(v1)
    control.set_desired(DEVICE, "churn", 1, rollout_id="r-1")
    control.wait_for(is_reported("serving", 1, model="churn", rollout_id="r-1"))
    control.wait_for(is_event("installed", 1))
    assert agent.current == ("churn", 1)
    assert agent.predict(ROW).label in (0, 1)

    v2 = build_release("churn", 2, key, seed=1, chunk_size=500)
    assert v2.manifest.artifact.chunks > 1
    control.publish_release(v2)
    control.set_desired(DEVICE, "churn", 2)
    control.wait_for(is_reported("serving", 2))
    assert agent.current == ("churn", 2)
    assert agent.state.previous is not None and agent.state.previous.version == 1
    store = ModelStore(agent.config.data_dir)
    assert store.has(agent.state.previous) and store.read_pointer().previous == agent.state.previous


def test_transient_reports_go_at_qos_0_and_settled_ones_at_qos_1(
        control: Control, start_agent: StartAgent, key: Key, v1: Release) -> None:
    start_agent(report_steps_after_s=0.0)  # every step reported at once
    control.publish_release(v1)
    control.set_desired(DEVICE, "churn", 1)
    control.wait_for(is_reported("serving", 1))
    seen = [(Reported.parse(p).state, q) for (t, p), q in zip(control.received, control.qos, strict=True)
            if t.endswith("/reported")]
    states = [state for state, _ in seen]
    assert {"fetching", "verifying", "self_testing"} <= set(states), seen  # the update's steps, all reported
    for state, qos in seen:
        assert qos == (0 if state in TRANSIENT_STATES else 1), seen
    assert states[-1] == "serving"  # a settled report always follows the transient ones


def test_a_quick_update_reports_only_its_outcome_and_a_slow_one_its_step_once_it_lasts(
        control: Control, start_agent: StartAgent, key: Key, v1: Release) -> None:
    start_agent(report_steps_after_s=0.5)
    control.publish_release(v1)
    control.set_desired(DEVICE, "churn", 1)
    control.wait_for(is_reported("serving", 1))
    quick = [Reported.parse(p).state for t, p in control.received if t.endswith("/reported")]
    assert not TRANSIENT_STATES & set(quick), quick  # settled within 0.5 s: no step was worth a message

    control.received.clear()
    asked = time.monotonic()
    control.set_desired(DEVICE, "churn", 2)  # not published yet: the fetch waits for it
    control.wait_for(is_reported("fetching", 1, desired_version=2))
    assert time.monotonic() - asked >= 0.5  # held for the update's first 0.5 s, then sent by the owner loop
    control.publish_release(build_release("churn", 2, key, seed=1))
    control.wait_for(is_reported("serving", 2))
    slow = [Reported.parse(p).state for t, p in control.received if t.endswith("/reported")]
    assert slow[0] == "fetching" and slow[-1] == "serving", slow
    assert {"verifying", "self_testing", "activating"} <= set(slow), slow  # the update is old: steps go at once


def spoil(kind: str, key: Key, v1: Release):
    """(bad release v2, agent config overrides, expected reason)."""
    v2 = build_release("churn", 2, key, seed=1)
    if kind == "tampered artifact":
        return tampered_artifact(v2), {}, "artifact sha256 mismatch"
    if kind == "wrong signature":
        return type(v2)(sign(v2.manifest, new_key(), claimed_key_id=v2.manifest.signature.key_id), v2.data), {}, \
            "invalid signature"
    if kind == "unknown key":
        return build_release("churn", 2, new_key(), seed=1), {}, "unknown signing key"
    if kind == "oversized":
        big = with_bytes(v2, v2.data + bytes(5000), key)  # declared size over the limit; v1 stays under it
        return big, {"max_artifact_bytes": max(len(v1.data), len(v2.data)) + 1000}, "exceeds the limit"
    if kind == "golden mismatch":
        return with_wrong_golden(v2, key), {}, "golden sample 0: label"
    if kind == "not onnx":
        return with_bytes(v2, b"\x08\x07garbage that is not a model" * 10, key), {}, "onnxruntime cannot load"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["tampered artifact", "wrong signature", "unknown key", "oversized",
                                  "golden mismatch", "not onnx"])
def test_bad_release_is_rejected_and_the_previous_model_keeps_serving(
        kind: str, control: Control, start_agent: StartAgent, key: Key, v1: Release, tmp_path: Path) -> None:
    bad, overrides, reason = spoil(kind, key, v1)
    preinstall(tmp_path / "data", v1)
    agent = start_agent(**overrides)
    assert agent.current == ("churn", 1)
    control.publish_release(bad)
    control.set_desired(DEVICE, "churn", 2)
    _, payload = control.wait_for(is_reported("rejected", 1, desired_version=2))
    assert reason in json.loads(payload)["last_error"]
    _, event = control.wait_for(is_event("rejected", 2))
    assert reason in json.loads(event)["reason"]
    assert agent.current == ("churn", 1)
    assert agent.predict(ROW).label in (0, 1)
    assert not ModelStore(tmp_path / "data").has(agent.state.refused)  # type: ignore[arg-type]


@pytest.mark.parametrize("model", ["..", "a/b", "../../etc", "x/../../y"])
def test_unsafe_model_name_in_desired_is_rejected_and_nothing_is_written_outside(
        model: str, control: Control, start_agent: StartAgent, v1: Release, tmp_path: Path) -> None:
    preinstall(tmp_path / "data", v1)
    agent = start_agent()
    desired = {"schema": {"name": "edgeops.desired", "version": "1.0"}, "device": DEVICE, "ts": "t",
               "model": model, "version": 1}
    control.publish(control.topics.device(DEVICE, "desired"), json.dumps(desired).encode())
    _, payload = control.wait_for(is_reported("rejected", 1))
    assert "is not a valid name" in json.loads(payload)["last_error"]
    assert files_outside(tmp_path) == []
    assert agent.predict(ROW).label in (0, 1)


def test_a_rejected_version_is_not_retried_until_desired_changes(
        control: Control, start_agent: StartAgent, key: Key, v1: Release, tmp_path: Path) -> None:
    preinstall(tmp_path / "data", v1)
    agent = start_agent()
    control.publish_release(tampered_artifact(build_release("churn", 2, key, seed=1)))
    control.set_desired(DEVICE, "churn", 2, rollout_id="a")
    control.wait_for(is_event("rejected", 2))
    control.set_desired(DEVICE, "churn", 2, rollout_id="b")  # same version again: stays refused
    control.wait_for(is_reported("rejected", 1, rollout_id="b"))
    assert sum(1 for p in control.messages("events") if json.loads(p)["event"] == "rejected") == 1
    states_for_b = [r["state"] for r in map(json.loads, control.messages("reported")) if r["rollout_id"] == "b"]
    assert "fetching" not in states_for_b  # it did not even start fetching the refused version again
    control.received.clear()  # only what follows counts (an early "serving 1" report would match too)
    control.set_desired(DEVICE, "churn", 1)  # back to what runs: plain serving again
    control.wait_for(is_reported("serving", 1, last_error=None))
    assert agent.state.refused is None


def test_probation_breach_rolls_back_locally(
        control: Control, start_agent: StartAgent, key: Key, v1: Release, tmp_path: Path) -> None:
    preinstall(tmp_path / "data", v1)
    # Any latency above a vanishing fraction of the old model's breaches (no floor): a deterministic breach.
    agent = start_agent(probation_s=600.0, probation_min_predictions=5, probation_max_latency_factor=1e-9,
                        probation_latency_floor_ms=0.0)
    for _ in range(LATENCY_MIN_SAMPLES):
        agent.predict(ROW)  # the baseline latency of v1
    control.publish_release(build_release("churn", 2, key, seed=1))
    control.set_desired(DEVICE, "churn", 2)
    control.wait_for(is_reported("probation", 2))
    for _ in range(LATENCY_MIN_SAMPLES):
        agent.predict(ROW)
    _, payload = control.wait_for(is_reported("rolled_back", 1))
    assert "probation failed: median CPU time per row" in json.loads(payload)["last_error"]
    control.wait_for(is_event("rolled_back", 2))
    assert agent.current == ("churn", 1)
    assert ModelStore(tmp_path / "data").read_pointer().current == agent.state.current


def test_model_errors_on_probation_roll_back(control: Control, start_agent: StartAgent, key: Key, v1: Release,
                                             tmp_path: Path) -> None:
    """A release that passes its golden samples but fails on real traffic is rolled back on error rate."""
    preinstall(tmp_path / "data", v1)
    agent = start_agent(probation_s=600.0, probation_min_predictions=5, probation_max_error_rate=0.2)
    control.publish_release(with_runtime_trap(build_release("churn", 2, key, seed=1), key))
    control.set_desired(DEVICE, "churn", 2)
    control.wait_for(is_reported("probation", 2))
    assert agent.predict(ROW).label in (0, 1)  # the trap stays shut for ordinary incomes
    for _ in range(4):
        with pytest.raises(ModelError, match="model failed to run"):
            agent.predict({**ROW, "income": 1000.0})
    _, payload = control.wait_for(is_reported("rolled_back", 1))
    assert "probation failed: error rate 80.0% over 5 requests" in json.loads(payload)["last_error"]
    assert agent.current == ("churn", 1) and agent.predict({**ROW, "income": 1000.0}).label in (0, 1)


def test_a_newer_desired_state_supersedes_a_model_on_probation(control: Control, start_agent: StartAgent, key: Key,
                                                              v1: Release, tmp_path: Path) -> None:
    preinstall(tmp_path / "data", v1)
    agent = start_agent(probation_s=600.0, probation_min_predictions=1000)
    control.publish_release(build_release("churn", 2, key, seed=1))
    control.publish_release(build_release("churn", 3, key, seed=2))
    control.set_desired(DEVICE, "churn", 2)
    control.wait_for(is_reported("probation", 2))
    control.set_desired(DEVICE, "churn", 3)
    control.wait_for(is_reported("probation", 3))
    assert agent.state.previous == ModelRef("churn", 2) and agent.probation is not None
    assert agent.probation.ref == ModelRef("churn", 3)


def test_probation_passes_and_the_new_model_stays(
        control: Control, start_agent: StartAgent, key: Key, v1: Release, tmp_path: Path) -> None:
    preinstall(tmp_path / "data", v1)
    agent = start_agent(probation_s=0.5, probation_min_predictions=3)
    control.publish_release(build_release("churn", 2, key, seed=1))
    control.set_desired(DEVICE, "churn", 2)
    control.wait_for(is_reported("probation", 2))
    control.wait_for(is_reported("serving", 2))
    assert agent.current == ("churn", 2)


def test_fetch_timeout_is_retried_until_the_release_appears(
        control: Control, start_agent: StartAgent, key: Key, v1: Release, tmp_path: Path) -> None:
    preinstall(tmp_path / "data", v1)
    agent = start_agent(fetch_timeout_s=0.3)
    control.set_desired(DEVICE, "churn", 2)
    _, payload = control.wait_for(lambda t, p: t.endswith("/reported") and b"timed out" in p)
    assert "fetch of churn@2 timed out after 0.3s; retrying in" in json.loads(payload)["last_error"]
    control.publish_release(build_release("churn", 2, key, seed=1))
    control.wait_for(is_reported("serving", 2), timeout=30)
    assert agent.current == ("churn", 2)


def test_starts_serving_the_persisted_model_without_any_broker(tmp_path: Path, key: Key, v1: Release) -> None:
    preinstall(tmp_path / "data", v1)
    agent = Agent(agent_config(tmp_path, f"mqtt://127.0.0.1:{free_port()}", "edgeops-test/offline", key)).start()
    try:
        assert agent.current == ("churn", 1) and agent.state.phase == "serving"
        assert agent.predict(ROW).label in (0, 1)
    finally:
        agent.stop()


def test_a_corrupt_current_model_falls_back_to_the_previous_one(tmp_path: Path, key: Key, v1: Release) -> None:
    v2 = build_release("churn", 2, key, seed=1)
    preinstall(tmp_path / "data", v2, previous=v1)
    (tmp_path / "data" / "models" / "churn" / "2" / "model.onnx").write_bytes(b"torn")
    agent = Agent(agent_config(tmp_path, f"mqtt://127.0.0.1:{free_port()}", "edgeops-test/offline", key)).start()
    try:
        assert agent.current == ("churn", 1)
        assert ModelStore(tmp_path / "data").read_pointer().current.version == 1  # type: ignore[union-attr]
    finally:
        agent.stop()


def test_garbage_on_every_subscribed_topic_keeps_it_serving(control: Control, start_agent: StartAgent,
                                                            v1: Release, tmp_path: Path) -> None:
    """The broker-level counterpart of tests/unit/test_protocol_fuzz.py: a few hundred hostile messages."""
    import random

    preinstall(tmp_path / "data", v1)
    agent = start_agent()
    rng = random.Random(7)
    topics = control.topics
    desired_topic = topics.device(DEVICE, "desired")
    good_desired = json.loads(Desired(device=DEVICE, model="churn", version=2).to_bytes())
    for i in range(300):
        version = 2 + i // 20
        if i % 20 == 0:  # keep an install waiting, so the release topics are subscribed
            control.set_desired(DEVICE, "churn", version)
        topic = rng.choice([desired_topic, topics.manifest("churn", version), topics.artifact("churn", version),
                            topics.artifact("churn", version, rng.randrange(5))])
        kind = rng.randrange(4)
        if kind == 0:
            payload = rng.randbytes(rng.randrange(1, 400))
        elif kind == 1:
            payload = json.dumps({**good_desired, "schema": {"name": "edgeops.desired", "version": "2.0"}}).encode()
        elif kind == 2:
            field = rng.choice(list(good_desired))
            payload = json.dumps({**good_desired, field: rng.choice([None, [], "..", -1])}).encode()
        else:
            payload = b'{"schema": {"name": "edgeops.manifest", "version": "1.0"}, "name": "x"' * rng.randrange(1, 4)
        control.publish(topic, payload, retain=False)
    control.received.clear()
    control.set_desired(DEVICE, "churn", 1)
    control.wait_for(is_reported("serving", 1, last_error=None, desired_version=1))
    assert agent.current == ("churn", 1) and agent.predict(ROW).label in (0, 1)
    assert agent._thread is not None and agent._thread.is_alive()


def test_a_huge_hostile_desired_message_gives_a_short_report(control: Control, start_agent: StartAgent, v1: Release,
                                                             tmp_path: Path) -> None:
    preinstall(tmp_path / "data", v1)
    start_agent()
    desired = {"schema": {"name": "edgeops.desired", "version": "1.0"}, "device": DEVICE, "ts": "t",
               "model": "../" * 100_000, "version": 1}
    control.publish(control.topics.device(DEVICE, "desired"), json.dumps(desired).encode())
    _, payload = control.wait_for(is_reported("rejected", 1))
    assert len(payload) < 1500 and json.loads(payload)["last_error"].endswith("…")


def test_a_fetched_release_has_its_signature_checked_once_and_a_tampered_one_is_still_rejected(
        control: Control, start_agent: StartAgent, key: Key, v1: Release, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The fetch checks the signature over the manifest bytes as they arrive; ``verifying`` trusts that check
    (the same bytes, in memory) and hashes the artifact. A second signature check per update was pure cost."""
    import edge_agent.fetch as fetch
    import edge_agent.installer as installer

    checked: list[str] = []
    for module in (fetch, installer):
        real = module.verify_manifest

        def counting(*args: Any, _real: Any = real, _where: str = module.__name__, **kw: Any) -> None:
            checked.append(_where)
            _real(*args, **kw)

        monkeypatch.setattr(module, "verify_manifest", counting)
    preinstall(tmp_path / "data", v1)
    start_agent()
    checked.clear()  # start-up checks the stored model: that one counts for nothing here
    control.publish_release(build_release("churn", 2, key, seed=1, chunk_size=500))
    control.set_desired(DEVICE, "churn", 2)
    control.wait_for(is_reported("serving", 2))
    assert checked == ["edge_agent.fetch"]
    control.publish_release(tampered_artifact(build_release("churn", 3, key, seed=2)))
    control.set_desired(DEVICE, "churn", 3)
    _, payload = control.wait_for(is_reported("rejected", 2))
    assert "sha256" in json.loads(payload)["last_error"] or "hash" in json.loads(payload)["last_error"]

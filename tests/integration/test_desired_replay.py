"""Replay and downgrade protection of desired states, against a real agent and a real Mosquitto (issue #11).

Whoever may publish on a device's ``desired`` topic can retain any bytes there, including an old message the
control plane once signed. These tests play that attacker and check that the agent refuses what it was not
told to do, and that the control plane's own rollback reaches it as a new instruction."""

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from releases import Control, Release, agent_config, build_release, is_reported, new_key, preinstall

from edge_agent.agent import Agent
from edge_agent.protocol import Desired, Topics, now_iso
from edgeops.mqtt import ControlClient
from edgeops.rollout.controller import RolloutController, start_rollout
from edgeops.rollout.plan import GateContext, GateVerdict, RolloutPolicy
from edgeops.rollout.signer import DesiredSigner
from edgeops.rollout.state import RolloutStore

pytestmark = pytest.mark.integration

DEVICE = "dev-d"
ROW = {"age in years": 52.0, "income": 4.5, "plan": "pro"}


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return new_key()


@pytest.fixture(scope="module")
def v1(key: Ed25519PrivateKey) -> Release:
    return build_release("churn", 1, key)


@pytest.fixture(scope="module")
def v2(key: Ed25519PrivateKey) -> Release:
    return build_release("churn", 2, key, seed=1)


@pytest.fixture
def control(session_broker: str, topic_prefix: str, key: Ed25519PrivateKey) -> Iterator[Control]:
    ctl = Control(session_broker, topic_prefix, key)
    ctl.watch(DEVICE)
    yield ctl
    ctl.close()


def start(tmp_path: Path, url: str, prefix: str, key: Ed25519PrivateKey, **overrides: Any) -> Agent:
    return Agent(agent_config(tmp_path, url, prefix, key, DEVICE, **overrides)).start()


def last_error(payload: bytes) -> str:
    return json.loads(payload)["last_error"] or ""


def test_a_replayed_older_desired_state_is_refused_and_the_newer_release_keeps_serving_also_after_a_restart(
        tmp_path: Path, session_broker: str, topic_prefix: str, key: Ed25519PrivateKey, control: Control,
        v1: Release, v2: Release) -> None:
    preinstall(tmp_path / "data", v1)
    control.publish_release(v1)
    control.publish_release(v2)
    old = control.set_desired(DEVICE, "churn", 1)  # signed by the control plane: the attacker keeps a copy
    agent = start(tmp_path, session_broker, topic_prefix, key)
    try:
        control.wait_for(is_reported("serving", 1, desired_version=1))
        control.set_desired(DEVICE, "churn", 2)
        control.wait_for(is_reported("serving", 2))
        control.received.clear()
        control.publish(control.topics.device(DEVICE, "desired"), old)  # the replay: a downgrade to v1
        _, payload = control.wait_for(is_reported("rejected", 2))
        assert "is not above" in last_error(payload)
        assert agent.current == ("churn", 2) and agent.predict(ROW).label in (0, 1)
        control.set_desired(DEVICE, "churn", 2)  # the control plane says it again: the refusal is history
        control.wait_for(is_reported("serving", 2, last_error=None))
    finally:
        agent.stop()
    control.publish(control.topics.device(DEVICE, "desired"), old)  # replayed while the device is down
    since = now_iso()
    control.received.clear()
    restarted = start(tmp_path, session_broker, topic_prefix, key)
    try:
        _, payload = control.wait_for(is_reported("rejected", 2, since=since))
        assert "is not above" in last_error(payload)
        assert restarted.current == ("churn", 2) and restarted.predict(ROW).label in (0, 1)
        assert restarted.desired is None
    finally:
        restarted.stop()


def test_the_retained_desired_state_redelivered_on_restart_is_accepted_quietly(
        tmp_path: Path, session_broker: str, topic_prefix: str, key: Ed25519PrivateKey, control: Control,
        v1: Release, v2: Release) -> None:
    preinstall(tmp_path / "data", v1)
    control.publish_release(v2)
    control.set_desired(DEVICE, "churn", 2, rollout_id="r-2")
    agent = start(tmp_path, session_broker, topic_prefix, key)
    try:
        control.wait_for(is_reported("serving", 2))
    finally:
        agent.stop()
    since = now_iso()
    control.received.clear()
    restarted = start(tmp_path, session_broker, topic_prefix, key)
    try:
        control.wait_for(is_reported("serving", 2, since=since, rollout_id="r-2", last_error=None))
        assert restarted.desired is not None and restarted.state.phase == "serving"
    finally:
        restarted.stop()


def test_an_expired_desired_state_is_refused_and_the_device_keeps_serving(
        tmp_path: Path, session_broker: str, topic_prefix: str, key: Ed25519PrivateKey, control: Control,
        v1: Release, v2: Release) -> None:
    preinstall(tmp_path / "data", v1)
    control.publish_release(v2)
    stale = DesiredSigner(key, lifetime_s=60.0, clock=lambda: time.time() - 3600).sign(DEVICE, "churn", 2)
    control.publish(control.topics.device(DEVICE, "desired"), stale)  # signed an hour ago, valid for a minute
    agent = start(tmp_path, session_broker, topic_prefix, key)
    try:
        _, payload = control.wait_for(is_reported("rejected", 1))
        assert "expired at" in last_error(payload)
        assert agent.current == ("churn", 1) and agent.predict(ROW).label in (0, 1)
        control.set_desired(DEVICE, "churn", 2)  # a rollout run again signs a fresh one
        control.wait_for(is_reported("serving", 2))
    finally:
        agent.stop()


def test_an_unsigned_desired_state_is_refused_by_default(
        tmp_path: Path, session_broker: str, topic_prefix: str, key: Ed25519PrivateKey, control: Control,
        v1: Release, v2: Release) -> None:
    preinstall(tmp_path / "data", v1)
    control.publish_release(v2)
    control.publish(control.topics.device(DEVICE, "desired"),
                    Desired(device=DEVICE, model="churn", version=2).to_bytes())  # what a 1.0 control plane sent
    agent = start(tmp_path, session_broker, topic_prefix, key)
    try:
        _, payload = control.wait_for(is_reported("rejected", 1))
        assert "not signed" in last_error(payload)
        assert agent.current == ("churn", 1)
    finally:
        agent.stop()


def test_the_migration_switch_accepts_unsigned_desired_states_until_a_signed_one_arrives(
        tmp_path: Path, session_broker: str, topic_prefix: str, key: Ed25519PrivateKey, control: Control,
        v1: Release, v2: Release) -> None:
    preinstall(tmp_path / "data", v1)
    control.publish_release(v1)
    control.publish_release(v2)
    unsigned_v2 = Desired(device=DEVICE, model="churn", version=2).to_bytes()
    control.publish(control.topics.device(DEVICE, "desired"), unsigned_v2)
    agent = start(tmp_path, session_broker, topic_prefix, key, desired_signatures="optional")
    try:
        control.wait_for(is_reported("serving", 2))
        control.set_desired(DEVICE, "churn", 1)  # the upgraded control plane signs: migration over
        control.wait_for(is_reported("serving", 1))
        control.received.clear()
        control.publish(control.topics.device(DEVICE, "desired"), unsigned_v2)
        _, payload = control.wait_for(is_reported("rejected", 1))
        assert "already accepted signed" in last_error(payload)
        assert agent.current == ("churn", 1)
    finally:
        agent.stop()


def test_a_rollout_abort_reaches_the_device_as_a_newer_desired_state_and_is_obeyed(
        tmp_path: Path, session_broker: str, topic_prefix: str, key: Ed25519PrivateKey, control: Control,
        v1: Release, v2: Release) -> None:
    preinstall(tmp_path / "data", v1)
    control.publish_release(v1)
    control.publish_release(v2)
    before = control.set_desired(DEVICE, "churn", 1, rollout_id="r-1")
    agent = start(tmp_path, session_broker, topic_prefix, key)
    topics = Topics(topic_prefix)

    def abort_after_the_canary(context: GateContext) -> GateVerdict:
        return GateVerdict("abort", "canary looks bad")

    try:
        control.wait_for(is_reported("serving", 1, rollout_id="r-1"))
        store = RolloutStore(tmp_path / "rollouts.db")
        since = now_iso()
        with ControlClient(session_broker) as client:
            rec = start_rollout(store, client, topics, model="churn", version=2, selector={},
                                policy=RolloutPolicy(canary=1.0, waves=1, max_failure=0.5, device_timeout_s=60))
            done = RolloutController(store, client, topics, signer=DesiredSigner(key),
                                     gate=abort_after_the_canary).run(rec.id)
        assert done.status == "aborted" and done.devices[DEVICE].restored
        assert done.devices[DEVICE].outcome == "succeeded"  # it ran v2 when the gate aborted the rollout
        control.wait_for(is_reported("serving", 1, since=since, rollout_id="r-1"), timeout=60)
        assert agent.current == ("churn", 1)
        restore = agent.desired  # what it obeyed: the controller's restore, signed with a higher counter
        assert restore is not None and restore.counter > Desired.parse(before).counter  # type: ignore[operator]
    finally:
        agent.stop()


def test_an_abort_signed_on_a_machine_whose_clock_is_behind_still_reaches_the_device(
        tmp_path: Path, session_broker: str, topic_prefix: str, key: Ed25519PrivateKey, control: Control,
        v1: Release, v2: Release) -> None:
    """Counters are signing times in ms: a controller that died on a machine an hour ahead left counters
    that the operator's machine would not pass by its own clock. Resuming reads what the devices hold."""
    preinstall(tmp_path / "data", v1)
    control.publish_release(v1)
    control.publish_release(v2)
    control.set_desired(DEVICE, "churn", 1, rollout_id="r-1")
    agent = start(tmp_path, session_broker, topic_prefix, key)
    topics = Topics(topic_prefix)

    def controller_dies(context: GateContext) -> GateVerdict:
        raise RuntimeError("the controller's machine goes away")

    try:
        control.wait_for(is_reported("serving", 1, rollout_id="r-1"))
        store = RolloutStore(tmp_path / "rollouts.db")
        with ControlClient(session_broker) as client:
            rec = start_rollout(store, client, topics, model="churn", version=2, selector={},
                                policy=RolloutPolicy(canary=1.0, waves=1, max_failure=0.5, device_timeout_s=60))
            ahead = DesiredSigner(key, clock=lambda: time.time() + 3600)
            with pytest.raises(RuntimeError, match="goes away"):
                RolloutController(store, client, topics, signer=ahead, gate=controller_dies).run(rec.id)
            assert agent.current == ("churn", 2)
            since = now_iso()
            store.request_abort(rec.id, "operator")
            done = RolloutController(store, client, topics, signer=DesiredSigner(key)).run(rec.id)
        assert done.status == "aborted" and done.devices[DEVICE].restored
        control.wait_for(is_reported("serving", 1, since=since, rollout_id="r-1"), timeout=60)
        assert agent.current == ("churn", 1)
    finally:
        agent.stop()

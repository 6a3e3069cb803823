"""Staged rollouts to real ``edgeops-agent`` processes (onnxruntime, real store, real verification)."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_procs import AgentProcess, spawn_agent, stop_all, wait_fleet
from releases import build_release, new_key, public_pem

from edge_agent.protocol import Desired, Topics
from edgeops.mqtt import ControlClient
from edgeops.release.publish import publish_release
from edgeops.release.registry import Registry
from edgeops.release.signing import generate_keys, load_private_key
from edgeops.rollout.controller import RolloutController, start_rollout
from edgeops.rollout.fleet import read_fleet
from edgeops.rollout.plan import RolloutPolicy
from edgeops.rollout.signer import DesiredSigner
from edgeops.rollout.state import RolloutStore

pytestmark = pytest.mark.e2e

GOOD = [f"b{i}" for i in range(1, 6)]  # trust the project's key
ODD = "a0"                             # sorts first, so it is the canary; trusts another key only


@pytest.fixture
def agents(tmp_path: Path, session_broker: str, topic_prefix: str) -> Iterator[list[AgentProcess]]:
    _private, public = generate_keys(tmp_path / "keys")
    other = tmp_path / "other.pub"
    other.write_bytes(public_pem(new_key()))
    procs = [spawn_agent(tmp_path, session_broker, topic_prefix, d, public, {"site": "berlin", "group": "main"})
             for d in GOOD]
    procs.append(spawn_agent(tmp_path, session_broker, topic_prefix, ODD, other, {"site": "berlin", "group": "odd"}))
    try:
        yield procs
    finally:
        stop_all(procs)
        with ControlClient(session_broker) as client:
            client.publish_many((t, b"", True) for t in client.collect_retained(f"{topic_prefix}/#"))


def test_rollout_to_real_agents_then_a_rejected_canary_rolls_back(
        agents: list[AgentProcess], tmp_path: Path, session_broker: str, topic_prefix: str) -> None:
    topics = Topics(topic_prefix)
    key = load_private_key(tmp_path / "keys" / "release.key")
    registry = Registry(tmp_path / "registry")
    for seed in (0, 1):
        registry.register("churn", lambda v, s=seed: (lambda r: (r.manifest, r.data))(
            build_release("churn", v, key, seed=s, chunk_size=512)))
    store = RolloutStore(tmp_path / "rollouts.db")
    policy = RolloutPolicy(canary=0.1, waves=3, max_failure=0.05, device_timeout_s=60)
    with ControlClient(session_broker) as client:
        for version in (1, 2):
            record = registry.get("churn", version)
            publish_release(client, topics, record.manifest, record.onnx_bytes())
        wait_fleet(client, topics, "6 idle agents online",
                   lambda f: sum(d.online is True and d.state == "idle" for d in f.values()) == 6, agents)

        first = start_rollout(store, client, topics, model="churn", version=1, selector={"group": "main"},
                              policy=policy)
        assert first.waves == 4 and len(first.devices) == 5  # canary + 3 waves
        signer = DesiredSigner(key)
        done = RolloutController(store, client, topics, signer=signer).run(first.id)
        assert done.status == "completed", done.reason
        fleet = {d.device: d for d in read_fleet(client, topics).devices}
        assert all(fleet[d].release == "churn@1" and fleet[d].state == "serving" for d in GOOD)

        second = start_rollout(store, client, topics, model="churn", version=2, selector={"site": "berlin"},
                               policy=policy)
        assert [d.device for d in second.wave_devices(0)] == [ODD]
        aborted = RolloutController(store, client, topics, signer=signer).run(second.id)
        assert aborted.status == "aborted"
        # the canary trusts another key: it refuses the desired state itself, before fetching anything
        canary = aborted.devices[ODD]
        assert canary.outcome == "failed" and "desired state: unknown signing key" in canary.detail
        desired = client.collect_retained(topics.all_devices("desired"))
        assert Desired.parse(desired[topics.device(ODD, "desired")]).clears  # restored to "none": a signed clear
        for device in GOOD:  # never touched: still the first rollout's desired state, still serving churn@1
            previous = Desired.parse(desired[topics.device(device, "desired")])
            assert (previous.version, previous.rollout_id) == (1, first.id)
        fleet = {d.device: d for d in read_fleet(client, topics).devices}
        assert all(fleet[d].release == "churn@1" for d in GOOD) and fleet[ODD].version is None

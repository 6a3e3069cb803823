"""Probation on a busy device: a busy loop on every core must not roll back a model whose cost is unchanged,
while a model ten times as costly, or one that fails a fifth of its requests, is still rolled back.

Default probation settings (factor 3, floor 1 ms, 5 % errors, at least 20 requests); the models differ only by
a branch of arithmetic of known cost (``probation_load.with_extra_work``), so "ten times slower" (and well
above the floor) is a property of the model, measured below, not of the machine's mood.
"""

import contextlib
import math
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from probation_load import CpuHog, with_extra_work
from releases import Control, Release, agent_config, build_release, is_reported, new_key, preinstall, with_runtime_trap

from edge_agent.agent import Agent
from edge_agent.config import AgentConfig
from edge_agent.errors import ModelError
from edge_agent.inference import ModelRunner

pytestmark = pytest.mark.integration

ROW = {"age in years": 52.0, "income": 4.5, "plan": "pro"}
TRAPPED = {**ROW, "income": 1000.0}
BASE_ROUNDS, SLOW_ROUNDS = 2, 24


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return new_key()


@pytest.fixture(scope="module")
def v1(key: Ed25519PrivateKey) -> Release:
    return with_extra_work(build_release("churn", 1, key, seed=0), key, BASE_ROUNDS)


@pytest.fixture
def control(session_broker: str, topic_prefix: str, key: Ed25519PrivateKey) -> Iterator[Control]:
    ctl = Control(session_broker, topic_prefix, key)
    yield ctl
    ctl.close()


def cpu_ms_per_call(release: Release, calls: int = 200) -> float:
    runner = ModelRunner(release.manifest, release.data)
    for _ in range(10):
        runner.predict(ROW)
    start = time.thread_time()
    for _ in range(calls):
        runner.predict(ROW)
    return (time.thread_time() - start) * 1e3 / calls


def slow_model(key: Ed25519PrivateKey, base: Release) -> tuple[Release, float, float]:
    """The slow release, its CPU per call over ``base``'s and its own CPU per call (ms). Ten times the base is
    not enough where a base row is so cheap that ten of them stay under the rule's 1 ms floor (nothing below it
    is a breach): then the work is scaled until a row costs about three times the floor. Each figure is the
    median of interleaved rounds, so one burst elsewhere on the machine does not decide it."""
    floor, rounds = AgentConfig.probation_latency_floor_ms, SLOW_ROUNDS
    while True:
        slow = with_extra_work(build_release("churn", 5, key, seed=1), key, rounds)
        pairs = [(cpu_ms_per_call(slow), cpu_ms_per_call(base)) for _ in range(5)]
        slow_ms = statistics.median(s for s, _ in pairs)
        if slow_ms >= 2 * floor or rounds > 16 * SLOW_ROUNDS:
            return slow, statistics.median(s / b for s, b in pairs), slow_ms
        rounds = math.ceil(rounds * 3 * floor / slow_ms)


def send(agent: Agent, n: int, every_nth_fails: int) -> None:
    """Request ``n`` of a mixed stream: mostly single rows, every 4th a batch of 50 (as an application that
    also scores a backlog would send), every ``every_nth_fails``-th one the model fails on."""
    record = TRAPPED if every_nth_fails and n % every_nth_fails == 0 else ROW
    with contextlib.suppress(ModelError):
        if n % 4 == 0:
            agent.predict_many([record] + [ROW] * 49)
        else:
            agent.predict(record)


def probation_outcome(tmp_path: Path, url: str, prefix: str, control: Control, key: Ed25519PrivateKey,
                      v1: Release, v2: Release, every_nth_fails: int = 0, min_requests: int = 20) -> str:
    """Install ``v2`` over ``v1`` on a fresh device under traffic; the state probation ended in."""
    version = v2.manifest.version
    device = f"busy-{tmp_path.name}"[-60:]
    preinstall(tmp_path / "data", v1)
    agent = Agent(agent_config(tmp_path, url, prefix, key, device, probation_s=3.0,
                               probation_min_predictions=min_requests)).start()
    control.client.subscribe(control.topics.device(device, "reported"), qos=1)
    try:
        for n in range(1, 101):
            send(agent, n, 0)  # the baseline: the serving model's cost on this (busy) machine
        control.publish_release(v2)
        control.set_desired(device, "churn", version)
        control.wait_for(lambda t, p: device in t and is_reported("probation", version)(t, p), timeout=60)
        deadline, sent = time.monotonic() + 60, 0
        while agent.state.phase == "probation" and time.monotonic() < deadline:
            sent += 1
            send(agent, sent, every_nth_fails)
        return f"{agent.state.phase} {agent.state.current} {agent.state.last_error or ''}".strip()
    finally:
        agent.stop()


def test_probation_under_a_cpu_hog_keeps_healthy_models_and_rolls_back_slow_or_failing_ones(
        tmp_path: Path, session_broker: str, topic_prefix: str, control: Control, key: Ed25519PrivateKey,
        v1: Release) -> None:
    tiny = build_release("churn", 7, key, seed=0)  # a small pipeline: tens of microseconds a row
    healthy = [with_extra_work(build_release("churn", v, key, seed=v), key, BASE_ROUNDS) for v in (2, 3, 4)]
    slow, ratio, slow_ms = slow_model(key, healthy[0])
    failing = with_runtime_trap(build_release("churn", 6, key, seed=1), key)
    # The slow model must sit well above the rule's line, max(baseline × probation_max_latency_factor,
    # probation_latency_floor_ms): at twice it, a rollback shows the rule works, not that the model was borderline.
    factor, floor = AgentConfig.probation_max_latency_factor, AgentConfig.probation_latency_floor_ms
    assert ratio >= 2 * factor and slow_ms >= 2 * floor, (
        f"the slow model costs only {ratio:.1f}x the baseline, {slow_ms:.2f} ms a row: the test would prove nothing")
    outcomes = {}
    with CpuHog():
        for run, release in enumerate(healthy):
            outcomes[f"healthy {run}"] = probation_outcome(tmp_path / f"healthy-{run}", session_broker,
                                                           topic_prefix, control, key, v1, release)
        for run, version in enumerate((8, 9)):
            outcomes[f"tiny {run}"] = probation_outcome(tmp_path / f"tiny-{run}", session_broker, topic_prefix,
                                                        control, key, tiny, build_release("churn", version, key,
                                                                                          seed=version),
                                                        min_requests=0)  # as the demo runs its agents
        outcomes["slow"] = probation_outcome(tmp_path / "slow", session_broker, topic_prefix, control, key, v1, slow)
        outcomes["failing"] = probation_outcome(tmp_path / "failing", session_broker, topic_prefix, control, key,
                                                v1, failing, every_nth_fails=5)
    print(f"\nslow/base CPU per call: {ratio:.1f}x; outcomes under a busy loop on every core: {outcomes}")
    for run, release in enumerate(healthy):
        assert outcomes[f"healthy {run}"] == f"serving churn@{release.manifest.version}", outcomes
    assert outcomes["tiny 0"] == "serving churn@8" and outcomes["tiny 1"] == "serving churn@9", outcomes
    assert outcomes["slow"].startswith("rolled_back churn@1 probation failed: median CPU time per row"), outcomes
    assert outcomes["failing"].startswith("rolled_back churn@1 probation failed: error rate"), outcomes

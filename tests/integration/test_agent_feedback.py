"""Feedback on the real agent (onnxruntime, its data directory, its outbox): a label is credited to the release
and the telemetry window of its prediction, after a restart, a rollout, and many predictions later."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from releases import Release, agent_config, build_release, new_key, preinstall
from services import free_port

from edge_agent.agent import Agent
from edge_agent.errors import FeedbackError
from edge_agent.inference import ModelRunner
from edge_agent.protocol import TelemetryWindow

pytestmark = pytest.mark.integration

ROWS = [{"age in years": 30.0 + i % 40, "income": 2.0 + i % 7, "plan": ("basic", "pro", "max")[i % 3]}
        for i in range(200)]


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return new_key()


@pytest.fixture(scope="module")
def v1(key: Ed25519PrivateKey) -> Release:
    return build_release("churn", 1, key)


@pytest.fixture(scope="module")
def v2(key: Ed25519PrivateKey) -> Release:
    return build_release("churn", 2, key, seed=1)


def offline(tmp_path: Path, key: Ed25519PrivateKey, **settings: Any) -> Agent:
    """The agent serving its stored model without a broker (nothing is published; windows wait in the outbox)."""
    config = agent_config(tmp_path, f"mqtt://127.0.0.1:{free_port()}", "edgeops-test", key,
                          telemetry_interval_s=3600.0, **settings)
    return Agent(config).load()


@pytest.fixture
def agent(tmp_path: Path, key: Ed25519PrivateKey, v1: Release) -> Iterator[Agent]:
    preinstall(tmp_path / "data", v1)
    agent = offline(tmp_path, key)
    yield agent
    agent.stop()


def credits(window: TelemetryWindow) -> list[tuple[str, int, str, int, int | None]]:
    return [(c.model, c.version, c.start, c.labelled, c.correct) for c in window.feedback_for]


def windows(agent: Agent) -> list[TelemetryWindow]:
    """Close the open window, then every window waiting in the outbox, oldest first."""
    agent.pump.flush()
    return [TelemetryWindow.parse(payload) for _, payload in agent.outbox.pending(10_000)]


def test_late_labels_are_credited_to_the_window_of_their_predictions(agent: Agent) -> None:
    predictions = [agent.predict(row) for row in ROWS]
    (made,) = windows(agent)
    for p in predictions:
        agent.feedback(p.id, p.label)
    arrived = windows(agent)[-1]
    assert (made.count, arrived.count) == (200, 0)
    assert arrived.feedback == {"labelled": 200.0, "accuracy": 1.0}   # what 1.1 receivers read, as before
    assert credits(arrived) == [("churn", 1, made.start, 200, 200)]


def test_labels_still_find_their_predictions_after_a_restart(tmp_path: Path, key: Ed25519PrivateKey,
                                                              v1: Release) -> None:
    preinstall(tmp_path / "data", v1)
    first = offline(tmp_path, key)
    single = first.predict(ROWS[0])
    batch = first.predict_many(ROWS[1:50])
    made = windows(first)[-1]
    first.stop()

    again = offline(tmp_path, key)   # the same device, restarted
    try:
        again.feedback(single.id, single.label)
        for p in batch:
            again.feedback(p.id, 1 - p.label)   # all wrong
        fresh = again.predict(ROWS[0])
        assert fresh.id != single.id
        last = windows(again)[-1]
    finally:
        again.stop()
    assert credits(last) == [("churn", 1, made.start, 50, 1)]


def test_labels_after_a_rollout_are_credited_to_the_release_that_answered(agent: Agent, v2: Release) -> None:
    old = agent.predict_many(ROWS[:30])
    before = windows(agent)[-1]
    agent.swap_runner(ModelRunner(v2.manifest, v2.data))   # what activating churn@2 does
    new = agent.predict(ROWS[0])
    for p in [*old, new]:
        agent.feedback(p.id, p.label)
    last = windows(agent)[-1]
    assert (last.model, last.version) == ("churn", 2)
    assert [c[:2] + c[3:] for c in credits(last)] == [("churn", 1, 30, 30), ("churn", 2, 1, 1)]
    assert credits(last)[0][2] == before.start


def test_a_label_for_a_prediction_15000_predictions_ago_is_accepted(agent: Agent) -> None:
    first = agent.predict_many(ROWS * 50)   # 10 000 rows, the most one batch may hold
    agent.predict_many(ROWS * 25)
    agent.tick()   # the owner thread's pass: writes the log, forgets what is beyond the horizon
    agent.feedback(first[0].id, first[0].label)


def test_a_label_beyond_the_horizon_is_refused_with_the_reason(tmp_path: Path, key: Ed25519PrivateKey,
                                                                v1: Release) -> None:
    preinstall(tmp_path / "data", v1)
    agent = offline(tmp_path, key, feedback_max_predictions=1000)
    try:
        first = agent.predict(ROWS[0])
        for _ in range(3):
            agent.predict_many(ROWS * 2)
            agent.pump.flush()   # windows of 400 answers each: the first one is the oldest
        agent.tick()
        with pytest.raises(FeedbackError, match=r"unknown or expired prediction .* its last 1000 predictions"):
            agent.feedback(first.id, 1)
    finally:
        agent.stop()

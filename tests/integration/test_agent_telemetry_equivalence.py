"""The agent's batch path and its single-row path report the same telemetry window, bit for bit: a real agent
(onnxruntime, its data directory, its outbox) per path, tricky inputs (tests/unit/test_telemetry_equivalence.py
tests the recorder alone, ids included)."""

import pytest
from releases import agent_config, build_release, new_key, preinstall
from services import free_port
from tricky_rows import tricky_rows

from edge_agent.agent import Agent
from edge_agent.protocol import TelemetryWindow

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def key():  # type: ignore[no-untyped-def]
    return new_key()


@pytest.fixture(scope="module")
def release(key):  # type: ignore[no-untyped-def]
    return build_release("churn", 2, key, calibrated=True)


def test_the_agent_s_batch_and_single_row_paths_report_the_same_window(tmp_path, key, release) -> None:  # type: ignore[no-untyped-def]
    """The whole way, as callers use it: ``Agent.predict`` row by row on one device, ``Agent.predict_many`` in
    batches on another; their closed windows, read back from the outbox, count the same."""
    rows = tricky_rows(release.manifest, 300, seed=5)
    agents = []
    for name in ("single", "batched"):
        preinstall(tmp_path / name / "data", release)
        config = agent_config(tmp_path / name, f"mqtt://127.0.0.1:{free_port()}", "edgeops-test", key,
                              device=name, telemetry_interval_s=3600.0)
        agents.append(Agent(config).load())
    single, batched = agents
    try:
        for row in rows:
            single.predict(row)
        for start in range(0, len(rows), 128):
            batched.predict_many(rows[start:start + 128])
        windows = []
        for agent in agents:
            agent.pump.flush()
            (_, payload), = agent.outbox.pending(10)
            windows.append(TelemetryWindow.parse(payload))
    finally:
        for agent in agents:
            agent.stop()
    a, b = windows
    assert a.count == b.count == 300
    assert (a.features, a.predictions, a.scores, a.errors) == (b.features, b.predictions, b.scores, b.errors)

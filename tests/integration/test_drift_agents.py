"""Drift end to end with the real parts: agents count their traffic on the release's reference bins, the
ingest stores the windows, the monitor judges them. Steady traffic raises nothing; one device whose ``income``
shifts raises one episode, on that device and that feature only."""

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from releases import COLUMNS, ONNX_NAMES, agent_config, build_release, new_key, preinstall, training_frame

from edge_agent.agent import Agent
from edgeops.config.monitor import DriftThresholds
from edgeops.telemetry.ingest import IngestConfig, IngestService
from edgeops.telemetry.monitor import episode_events, manifest_references, run_monitor
from edgeops.telemetry.store import TelemetryStore

pytestmark = pytest.mark.integration

DEVICES = ("steady", "shifted")
RATE_S = 0.004  # a prediction per device every few milliseconds: windows of about a hundred rows


def rows(seed: int, n: int, income_shift: float = 0.0) -> list[dict[str, Any]]:
    """``n`` records drawn as the training data was (tests/releases.py), ``income`` moved by ``income_shift``."""
    frame, _, _ = training_frame(seed, n)
    out = []
    for row in frame.itertuples(index=False):
        record = {col: getattr(row, ONNX_NAMES[col]) for col in COLUMNS}
        record = {k: (None if isinstance(v, float) and np.isnan(v) else v if isinstance(v, str) else float(v))
                  for k, v in record.items()}
        if record["income"] is not None:
            record["income"] += income_shift
        out.append(record)
    return out


def drive(agents: dict[str, Agent], seconds: float, seed: int, shift: float) -> dict[str, int]:
    """Traffic on every device for ``seconds``; the ``shifted`` device's income moved by ``shift``."""
    streams = {dev: rows(seed + i, 4000, shift if dev == "shifted" else 0.0) for i, dev in enumerate(agents)}
    made = dict.fromkeys(agents, 0)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for dev, agent in agents.items():
            agent.predict(streams[dev][made[dev] % len(streams[dev])])
            made[dev] += 1
        time.sleep(RATE_S)
    return made


def stored(store: TelemetryStore, made: dict[str, int], timeout: float = 30.0) -> None:
    """Wait until every prediction made is counted in a stored window."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counted = {dev: sum(w.count for w in store.windows(device=dev)) for dev in made}
        if counted == made:
            return
        time.sleep(0.1)
    raise AssertionError(f"stored {counted}, made {made}")


def drift_events(store: TelemetryStore, manifest: Path, thresholds: DriftThresholds) -> list[Any]:
    report = run_monitor(store, manifest_references([manifest]), thresholds=thresholds)
    return [e for e in episode_events(store, report) if e.event == "edgeops.drift.detected"]


def test_steady_agents_raise_no_drift_and_a_shifted_one_raises_one_event_on_its_feature(
        tmp_path: Path, session_broker: str, topic_prefix: str) -> None:
    key = new_key()
    release = build_release("churn", 3, key)
    manifest = tmp_path / "churn-3.json"
    manifest.write_bytes(release.manifest.to_bytes())
    thresholds = DriftThresholds(window_s=1.0)  # check points of a second: this test cannot wait minutes
    store = TelemetryStore(f"sqlite:///{tmp_path / 'telemetry.db'}")
    ingest = IngestService(IngestConfig(broker_url=session_broker, prefix=topic_prefix, group="drift-agents",
                                        client_id=f"ingest-{tmp_path.name}"[-60:], batch_size=50, flush_ms=50),
                           store).start(wait_s=30)
    agents: dict[str, Agent] = {}
    try:
        for dev in DEVICES:
            preinstall(tmp_path / dev / "data", release)
            agents[dev] = Agent(agent_config(tmp_path / dev, session_broker, topic_prefix, key, dev,
                                             telemetry_interval_s=0.5)).start()
        made = drive(agents, 8.0, seed=100, shift=0.0)
        stored(store, made)
        assert drift_events(store, manifest, thresholds) == [], "steady traffic raised drift"
        more = drive(agents, 5.0, seed=200, shift=4.0)  # two training standard deviations
        stored(store, {dev: made[dev] + more[dev] for dev in DEVICES})
        events = drift_events(store, manifest, thresholds)
        assert drift_events(store, manifest, thresholds) == []  # the episode is open: no second event
    finally:
        for agent in agents.values():
            agent.stop()
        ingest.stop()
        store.close()
    about = {e.resource["prefect.resource.id"] for e in events}
    assert "edgeops.device.shifted" in about and "edgeops.device.steady" not in about, about
    assert about <= {"edgeops.device.shifted", "edgeops.model.churn"}, about
    assert all(e.payload["drifted"] == ["income"] for e in events), [e.payload["drifted"] for e in events]
    assert sum(e.resource["prefect.resource.id"] == "edgeops.device.shifted" for e in events) == 1

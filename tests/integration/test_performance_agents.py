"""Performance without labels end to end with the real parts: agents serve a calibrated release (real ONNX,
onnxruntime) and count its probabilities, the ingest stores their windows, the monitor estimates accuracy per
scope. Traffic like the training data keeps the estimate near the release's own; traffic moved onto the
decision boundary (inputs a model cannot be sure about) raises ``edgeops.performance.degraded`` for that device,
once, while no label was ever sent."""

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from releases import COLUMNS, ONNX_NAMES, agent_config, build_release, new_key, preinstall, training_frame

from edge_agent.agent import Agent
from edgeops.config.monitor import PerformanceThresholds
from edgeops.telemetry.ingest import IngestConfig, IngestService
from edgeops.telemetry.monitor import episode_events, manifest_references, run_monitor
from edgeops.telemetry.store import TelemetryStore

pytestmark = pytest.mark.integration

DEVICES = ("steady", "shifted")


def rows(seed: int, n: int, boundary: bool) -> list[dict[str, Any]]:
    """Records drawn as the training data was (tests/releases.py); ``boundary`` puts every age within a year of
    40, where the label is a coin toss for this model."""
    frame, _, _ = training_frame(seed, n)
    rng = np.random.default_rng(seed)
    out = []
    for i, row in enumerate(frame.itertuples(index=False)):
        record = {col: getattr(row, ONNX_NAMES[col]) for col in COLUMNS}
        record = {k: (None if isinstance(v, float) and np.isnan(v) else v if isinstance(v, str) else float(v))
                  for k, v in record.items()}
        if boundary:
            record["age in years"] = float(40 + rng.normal(0, 1))
        out.append(record)
        assert i < n
    return out


def stored(store: TelemetryStore, made: dict[str, int], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    counted: dict[str, int] = {}
    while time.monotonic() < deadline:
        counted = {dev: sum(w.count for w in store.windows(device=dev)) for dev in made}
        if counted == made:
            return
        time.sleep(0.1)
    raise AssertionError(f"stored {counted}, made {made}")


def test_a_shift_onto_the_decision_boundary_raises_performance_degraded_before_any_label(
        tmp_path: Path, session_broker: str, topic_prefix: str) -> None:
    key = new_key()
    release = build_release("churn", 4, key, calibrated=True)
    manifest = tmp_path / "churn-4.json"
    manifest.write_bytes(release.manifest.to_bytes())
    store = TelemetryStore(f"sqlite:///{tmp_path / 'telemetry.db'}")
    ingest = IngestService(IngestConfig(broker_url=session_broker, prefix=topic_prefix, group="performance-agents",
                                        client_id=f"ingest-{tmp_path.name}"[-60:], batch_size=50, flush_ms=50),
                           store).start(wait_s=30)
    agents: dict[str, Agent] = {}
    made = dict.fromkeys(DEVICES, 0)
    try:
        for dev in DEVICES:
            preinstall(tmp_path / dev / "data", release)
            agents[dev] = Agent(agent_config(tmp_path / dev, session_broker, topic_prefix, key, dev,
                                             telemetry_interval_s=0.5)).start()
        for dev, agent in agents.items():
            records = rows(31 if dev == "steady" else 32, 600, boundary=dev == "shifted")
            for start in range(0, 600, 100):
                agent.predict_many(records[start:start + 100])   # batches: their probabilities counted in bulk
            for record in records[:50]:
                agent.predict(record)                            # and single rows
            made[dev] = 650
        stored(store, made)
        thresholds = PerformanceThresholds(min_rows=200)
        report = run_monitor(store, manifest_references([manifest]), performance=thresholds)
        events = [e for e in episode_events(store, report) if e.event == "edgeops.performance.degraded"]
        again = run_monitor(store, manifest_references([manifest]), performance=thresholds)
        repeated = [e for e in episode_events(store, again) if e.event == "edgeops.performance.degraded"]
    finally:
        for agent in agents.values():
            agent.stop()
        ingest.stop()
        store.close()
    assert not any(w.feedback for w in TelemetryStore(f"sqlite:///{tmp_path / 'telemetry.db'}").windows())
    judged = {j.scope.device: j for j in report.performance}
    steady, shifted = judged["steady"], judged["shifted"]
    assert steady.estimate is not None and shifted.estimate is not None
    assert steady.estimate.rows == shifted.estimate.rows == 650   # every prediction was counted, none twice
    assert steady.verdict == "ok" and steady.estimate.high > 0.78, steady
    assert shifted.verdict == "degraded" and shifted.estimate.value < 0.7, shifted
    about = {e.resource["prefect.resource.id"] for e in events}
    assert "edgeops.device.shifted" in about and "edgeops.device.steady" not in about, about
    assert sum(e.resource["prefect.resource.id"] == "edgeops.device.shifted" for e in events) == 1
    payload = next(e.payload for e in events if e.resource["prefect.resource.id"] == "edgeops.device.shifted")
    assert payload["metric"] == "accuracy" and payload["source"] == "estimated" and payload["reference"] == 0.8
    assert repeated == [], "an open episode raises no second event"

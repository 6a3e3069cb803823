"""Labels end to end with the real parts: an ``edgeops-agent`` process answers over HTTP, is rolled from churn@1
to churn@2, is killed (``kill -9``) and starts again; only then do the labels of churn@1's predictions arrive on
its ``/v1/feedback``. The ingest stores the windows and the monitor credits those labels to churn@1 and to the
window that made the predictions — not to churn@2, which was serving when they arrived."""

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_procs import AgentProcess, spawn_agent
from releases import Control, build_release, new_key, public_pem
from services import free_port, wait_port, wait_until
from sqlalchemy import select

from edge_agent.feedback_log import SEGMENTS
from edge_agent.protocol import parse_prediction_id
from edgeops.telemetry.drift import parse_ts
from edgeops.telemetry.ingest import IngestConfig, IngestService
from edgeops.telemetry.monitor import manifest_references, run_monitor
from edgeops.telemetry.store import TelemetryStore
from edgeops.telemetry.tables import LabelRow

pytestmark = pytest.mark.integration

DEVICE = "press-7"
ROWS = [{"age in years": 25.0 + i % 40, "income": 1.0 + i % 9, "plan": ("basic", "pro", "max")[i % 3]}
        for i in range(120)]


def call(port: int, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body).encode(),
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def serving(port: int, version: int) -> bool:
    try:
        return call(port, "GET", "/v1/health")[1].get("version") == version
    except OSError:
        return False


def logged_answers(data_dir: Path, version: int) -> int:
    """Answers of churn@{version} in the agent's feedback log (what a restart will find)."""
    total = 0
    for name in SEGMENTS:
        path = data_dir / "feedback" / name
        for line in path.read_bytes().splitlines()[1:] if path.exists() else []:
            record = json.loads(line)
            total += len(record["a"]) if record["v"] == version else 0
    return total


@pytest.fixture
def ingest(tmp_path: Path, session_broker: str, topic_prefix: str) -> Iterator[TelemetryStore]:
    store = TelemetryStore(f"sqlite:///{tmp_path / 'telemetry.db'}")
    service = IngestService(IngestConfig(broker_url=session_broker, prefix=topic_prefix, group="labels-agents",
                                         client_id=f"ingest-{tmp_path.name}"[-60:], batch_size=20, flush_ms=50),
                            store).start(wait_s=30)
    yield store
    service.stop()
    store.close()


def test_late_labels_after_a_rollout_and_a_kill_are_credited_to_the_old_version_and_its_window(
        tmp_path: Path, session_broker: str, topic_prefix: str, ingest: TelemetryStore) -> None:
    key = new_key()
    releases = [build_release("churn", version, key, seed=version - 1) for version in (1, 2)]
    manifests = []
    for release in releases:
        manifests.append(tmp_path / f"churn-{release.version}.json")
        manifests[-1].write_bytes(release.manifest.to_bytes())
    (tmp_path / "release.pub").write_bytes(public_pem(key))
    port = free_port()
    control = Control(session_broker, topic_prefix, key)
    agent: AgentProcess | None = None
    try:
        agent = spawn_agent(tmp_path, session_broker, topic_prefix, DEVICE, tmp_path / "release.pub", {},
                            http=f"127.0.0.1:{port}", telemetry_interval_s=0.5)  # type: ignore[arg-type]
        wait_port("127.0.0.1", port, timeout=60)
        for release in releases:
            control.publish_release(release)
        control.set_desired(DEVICE, "churn", 1)
        assert wait_until(lambda: serving(port, 1), 60), agent.log.read_text()[-2000:]

        status, body = call(port, "POST", "/v1/predict", {"records": ROWS})
        assert status == 200
        old = body["predictions"]                                     # churn@1's answers, ids and all
        old += [call(port, "POST", "/v1/predict", {"record": row})[1]["prediction"] for row in ROWS[:20]]
        assert all(p["id"].startswith("churn@1:") for p in old)
        assert wait_until(lambda: sum(w.count for w in ingest.windows(version=1)) == 140, 30)

        control.set_desired(DEVICE, "churn", 2)                       # the rollout
        assert wait_until(lambda: serving(port, 2), 60), agent.log.read_text()[-2000:]
        new = [call(port, "POST", "/v1/predict", {"record": row})[1]["prediction"] for row in ROWS[:10]]
        assert all(p["id"].startswith("churn@2:") for p in new)
        data_dir = tmp_path / DEVICE / "data"
        assert wait_until(lambda: logged_answers(data_dir, 1) == 140 and logged_answers(data_dir, 2) == 10, 30)
        agent.kill()                                                  # power cut: no clean stop
        agent.start()
        assert wait_until(lambda: serving(port, 2), 60), agent.log.read_text()[-2000:]

        right = 0
        for i, p in enumerate(old):   # the truth, days late: churn@1 was right on every third prediction only
            truth = p["label"] if i % 3 == 0 else 1 - p["label"]
            right += truth == p["label"]
            assert call(port, "POST", "/v1/feedback", {"prediction_id": p["id"], "label": truth}) == (200, {"ok": True})
        for p in new:
            assert call(port, "POST", "/v1/feedback", {"prediction_id": p["id"], "label": p["label"]})[0] == 200
        assert wait_until(lambda: ingest.label_totals().get(("churn", 1, DEVICE)) is not None
                          and ingest.label_totals()[("churn", 1, DEVICE)].labelled == 140
                          and ingest.label_totals()[("churn", 2, DEVICE)].labelled == 10, 30)
    finally:
        if agent is not None:
            agent.stop()
        control.close()

    totals = ingest.label_totals()
    assert (totals["churn", 1, DEVICE].labelled, totals["churn", 1, DEVICE].correct) == (140, right)
    assert (totals["churn", 2, DEVICE].labelled, totals["churn", 2, DEVICE].correct) == (10, 10)
    # ... at the time of the windows that counted churn@1's predictions, which the ids named
    v1_starts = {parse_ts(w.start).replace(tzinfo=None) for w in ingest.windows(version=1)}
    with ingest.engine.connect() as conn:
        credited = set(conn.execute(select(LabelRow.window_start).where(LabelRow.version == 1)).scalars())
    assert credited and credited <= v1_starts
    assert credited == {parse_prediction_id(p["id"]).window_start.replace(tzinfo=None) for p in old}
    # the labels arrived in churn@2's windows, whose arrival counts the monitor leaves aside
    arrived = [w for w in ingest.windows(version=2) if w.feedback_for]
    assert arrived and sum(w.feedback.get("labelled", 0) for w in arrived) == 150
    report = run_monitor(ingest, manifest_references(manifests))
    fleet = {s.version: s.health for s in report.scopes if s.device is None}
    assert (fleet[1].labelled, fleet[1].accuracy) == (140, pytest.approx(right / 140))
    assert (fleet[2].labelled, fleet[2].accuracy) == (10, 1.0)
    realized = fleet[1].realized
    assert realized is not None and realized.verdict == "degraded" and "over 140 labels < 0.75" in realized.reason

"""Continuous training called plainly (no Prefect server): retrain on shifted data, gate against the champion,
canary rollout to simulated devices on a real Mosquitto, champion only after a completed rollout."""

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from simulated_fleet import SimDevice, SimFleet

from edge_agent.protocol import Topics
from edgeops.errors import ConfigError, DataError
from edgeops.flows.retrain import retrain_flow
from edgeops.mqtt import ControlClient
from edgeops.release.registry import Registry
from edgeops.release.signing import generate_keys, key_paths, load_public_key
from edgeops.retrain.steps import model_name, plan_retrain, run_retrain, summary_markdown
from edgeops.train.datasource import newest_data
from edgeops.train.pipeline import make_request, run_pipeline
from edgeops.train.samples import make_sample, make_shifted_sample

pytestmark = pytest.mark.integration

DRIFT = {"model": "churn", "version": 1, "scope": "fleet", "windows": 48, "devices": 4,
         "drifted": ["monthly charges"], "psi": {"monthly charges": 0.41}, "js": {"monthly charges": 0.17}}
POLICY = {"canary": "25%", "waves": 1, "device_timeout_s": 20}


@pytest.fixture
def project(tmp_path: Path, session_broker: str, topic_prefix: str) -> Iterator[Path]:
    """Keys, an edgeops.yaml pointing at the test broker/prefix, champion churn@1, and a data directory whose
    newest file is the shifted extract. Clears the prefix's retained messages afterwards."""
    generate_keys(tmp_path / ".edgeops/keys")
    (tmp_path / "edgeops.yaml").write_text(yaml.safe_dump({
        "name": "churn", "data": {"target": "churned"}, "mqtt": {"url": session_broker, "prefix": topic_prefix}}))
    make_sample("binary", 400, seed=4).to_csv(tmp_path / "initial.csv", index=False)
    first = run_pipeline(make_request(tmp_path / "initial.csv", config_path=tmp_path / "edgeops.yaml"))
    assert first.record.aliases == ("candidate", "champion")
    (tmp_path / "data").mkdir()
    make_shifted_sample("binary", 400, seed=3).to_csv(tmp_path / "data" / "2026-11.csv", index=False)
    yield tmp_path
    with ControlClient(session_broker) as client:
        retained = client.collect_retained(f"{topic_prefix}/#")
        client.publish_many((t, b"", True) for t in retained)


def fleet_devices(project: Path) -> list[SimDevice]:
    keys = (load_public_key(key_paths(project / ".edgeops/keys")[1]),)
    churn = [SimDevice(f"d{i}", labels={"site": "berlin"}, model="churn", version=1, state="serving",
                       public_keys=keys) for i in range(4)]
    return [*churn, SimDevice("other", labels={"site": "berlin"}, model="fraud", version=7, state="serving",
                              public_keys=keys)]


def request_for(project: Path, **kwargs: object) -> object:
    return plan_retrain("edgeops.model.churn", project / "data", config_path=project / "edgeops.yaml",
                        policy=POLICY, selector={"site": "berlin"}, trigger=DRIFT, **kwargs)  # type: ignore


def test_retrain_rolls_out_canary_first_and_promotes_after_completion(project: Path, session_broker: str,
                                                                      topic_prefix: str) -> None:
    with SimFleet(session_broker, Topics(topic_prefix), fleet_devices(project)) as fleet:
        result = run_retrain(request_for(project))  # type: ignore[arg-type]
        assert result.outcome == "promoted", result.headline()
        assert result.request.pipeline.data.name == "2026-11.csv"
        assert result.record.version == 2 and result.record.manifest.lineage.parent_version == 1
        rollout = result.rollout
        assert rollout is not None and rollout.status == "completed"
        assert set(rollout.devices) == {"d0", "d1", "d2", "d3"}  # the device running another model is left out
        assert len(rollout.wave_devices(0)) == 1 and rollout.waves == 2  # canary, then the rest
        assert all(fleet.devices[f"d{i}"].version == 2 for i in range(4))
        assert (fleet.devices["other"].model, fleet.devices["other"].version) == ("fraud", 7)
    registry = Registry(project / ".edgeops/registry")
    assert registry.champion("churn").version == 2  # type: ignore[union-attr]
    assert result.champion_before == 1 and result.champion_after == 2
    summary = summary_markdown(result)
    assert "monthly charges" in summary and "promoted" in summary and "2026-11.csv" in summary


def test_gate_failure_means_no_rollout_and_the_champion_stays(project: Path, session_broker: str,
                                                              topic_prefix: str) -> None:
    request = request_for(project, overrides={"gates.absolute": {"roc_auc": 0.999}})
    with SimFleet(session_broker, Topics(topic_prefix), fleet_devices(project)) as fleet:
        result = run_retrain(request)  # type: ignore[arg-type]
        assert result.outcome == "rejected" and result.rollout is None
        assert "rejected by gates" in result.headline() and "roc_auc" in result.headline()
        assert all(d.version in (1, 7) and d.installs == 0 for d in fleet.devices.values())
    assert result.record.status == "rejected"
    assert Registry(project / ".edgeops/registry").champion("churn").version == 1  # type: ignore[union-attr]
    with ControlClient(session_broker) as client:  # nothing of the rejected release left the registry
        assert not client.collect_retained(Topics(topic_prefix).release_filter("churn", 2))


def test_aborted_canary_restores_devices_and_keeps_the_champion(project: Path, session_broker: str,
                                                                topic_prefix: str) -> None:
    sims = fleet_devices(project)
    sims[0].reject = "self-test failed"  # d0 is the canary (first by name)
    with SimFleet(session_broker, Topics(topic_prefix), sims) as fleet:
        result = run_retrain(request_for(project))  # type: ignore[arg-type]
        assert result.outcome == "aborted" and result.rollout is not None
        assert "self-test failed" in result.rollout.devices["d0"].detail
        assert all(d.version in (1, 7) for d in fleet.devices.values())
    registry = Registry(project / ".edgeops/registry")
    assert registry.champion("churn").version == 1  # type: ignore[union-attr]
    assert registry.aliases("churn") == {"champion": 1, "candidate": 2}


def test_flow_on_gate_failure_completes_with_the_reason_and_an_artifact(
        project: Path, prefect_harness: None) -> None:
    state = retrain_flow(model="edgeops.model.churn", data=str(project / "data"),
                         config_path=str(project / "edgeops.yaml"), overrides={"gates.absolute": {"roc_auc": 0.999}},
                         drift=DRIFT, event_id="e-1", return_state=True)
    assert state.is_completed() and "rejected by gates" in (state.message or "")
    assert state.result()["outcome"] == "rejected"
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    summary = next(str(a.data) for a in artifacts if a.key == "churn-retrain")
    assert "rejected" in summary and "monthly charges" in summary and "e-1" in summary


def test_no_device_runs_the_model(project: Path) -> None:
    result = run_retrain(request_for(project))  # type: ignore[arg-type]
    assert result.outcome == "no_devices" and "stays candidate" in result.headline()
    assert Registry(project / ".edgeops/registry").champion("churn").version == 1  # type: ignore[union-attr]


def test_request_inputs_are_checked_before_any_work(tmp_path: Path) -> None:
    assert model_name("edgeops.model.churn") == model_name("churn") == "churn"
    with pytest.raises(ConfigError, match="model"):
        model_name("edgeops.model.bad name!")
    with pytest.raises(DataError, match=r"no \.csv or \.parquet"):
        newest_data(tmp_path)
    (tmp_path / "a.csv").write_text("x\n1\n")
    (tmp_path / "notes.txt").write_text("newest, but not data")
    assert newest_data(tmp_path) == tmp_path / "a.csv"
    (tmp_path / "edgeops.yaml").write_text("")
    with pytest.raises(ConfigError, match="unknown rollout policy key"):
        plan_retrain("churn", tmp_path / "a.csv", target="x", policy={"canary_size": 1},
                     config_path=tmp_path / "edgeops.yaml")

"""A drift event names only the model: the retrain must find the rest per model — the champion's target, task
and estimator, the model's own data — and never a credential in a flow parameter. Real Prefect harness, real
registry, real Mosquitto (our own with a password-protected listener for the secrets)."""

import json
import os
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client
from services import Mosquitto, free_port, running_mosquitto
from shipped_broker import make_users
from simulated_fleet import SimDevice, SimFleet

from edge_agent.protocol import Topics
from edgeops.flows.retrain import retrain_flow
from edgeops.mqtt import ControlClient
from edgeops.release.registry import Registry
from edgeops.release.signing import generate_keys, key_paths, load_public_key
from edgeops.retrain.steps import plan_retrain, run_retrain
from edgeops.train.data import file_sha256
from edgeops.train.pipeline import make_request, run_pipeline
from edgeops.train.samples import make_sample, make_shifted_sample

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENT = next(d for d in yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())["deployments"]
                  if d["name"] == "retrain")
DRIFT = {"model": "churn", "version": 1, "scope": "fleet", "drifted": ["monthly charges"]}
POLICY = {"canary": "34%", "waves": 1, "device_timeout_s": 30}


def triggered(**extra: Any) -> dict[str, Any]:
    """The parameters of a run the deployment's trigger starts: the deployment's own, then the event's."""
    return {**DEPLOYMENT["parameters"], "model": "edgeops.model.churn", "drift": DRIFT, "event_id": "e-1", **extra}


def write_csv(path: Path, df: Any, mtime: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    os.utime(path, (mtime, mtime))
    return path


@pytest.fixture
def project(tmp_path: Path, session_broker: str, topic_prefix: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A project as the issue found it: edgeops.yaml names no target; churn@1 was trained (as the CLI does, with
    --target) on the October churn extract; the data folder also holds a newer churn extract and, newest of all,
    another model's wine file. The worker runs in the project directory, as a process worker did."""
    generate_keys(tmp_path / ".edgeops/keys")
    (tmp_path / "edgeops.yaml").write_text(yaml.safe_dump({"mqtt": {"url": session_broker, "prefix": topic_prefix}}))
    october = write_csv(tmp_path / "data" / "churn-2026-10.csv", make_sample("binary", 400, seed=4), 1_000_000)
    run_pipeline(make_request(october, "churn", "churned", tmp_path / "edgeops.yaml"))
    write_csv(tmp_path / "data" / "churn-2026-11.csv", make_shifted_sample("binary", 400, seed=3), 2_000_000)
    write_csv(tmp_path / "data" / "wine-2026-12.csv", make_sample("regression", 400, seed=5), 3_000_000)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    with ControlClient(session_broker) as client:
        client.publish_many((t, b"", True) for t in client.collect_retained(f"{topic_prefix}/#"))


def test_a_drift_event_retrains_with_the_champions_target_not_the_newest_file(project: Path,
                                                                               prefect_harness: None) -> None:
    """On main: `ConfigError: data.target` (and the newest file was the wine extract)."""
    state = retrain_flow(**triggered(), return_state=True)
    assert state.is_completed(), state.message
    record = Registry(project / ".edgeops/registry").get("churn", 2)
    assert record.report["recipe"]["target"] == "churned" and record.manifest.outputs.task == "binary"
    assert record.manifest.lineage.data_sha256 == file_sha256(project / "data" / "churn-2026-10.csv")
    assert "churn-2026-10.csv" in state.result()["data"]  # the champion's own source: it named that file


def test_a_models_glob_picks_its_newest_file_not_another_models(project: Path, prefect_harness: None) -> None:
    config = yaml.safe_load((project / "edgeops.yaml").read_text())
    config["models"] = {"churn": {"data": "data/churn-*.csv"}}
    (project / "edgeops.yaml").write_text(yaml.safe_dump(config))
    state = retrain_flow(**triggered(), return_state=True)
    assert state.is_completed(), state.message
    record = Registry(project / ".edgeops/registry").get("churn", 2)
    assert record.manifest.lineage.data_sha256 == file_sha256(project / "data" / "churn-2026-11.csv")
    assert record.report["recipe"]["source"] == {"data": "data/churn-*.csv"}  # as edgeops.yaml says it
    assert record.report["recipe"]["target"] == "churned"


def test_a_sql_source_retrains_on_the_querys_rows(tmp_path: Path, session_broker: str, topic_prefix: str) -> None:
    warehouse = tmp_path / "warehouse.db"
    rows = make_sample("regression", 300, seed=6)
    with sqlite3.connect(warehouse) as conn:
        rows.to_sql("spend_train", conn, index=False)
    generate_keys(tmp_path / ".edgeops/keys")
    (tmp_path / "edgeops.yaml").write_text(yaml.safe_dump({
        "mqtt": {"url": session_broker, "prefix": topic_prefix},
        "models": {"spend": {"sql": "SELECT * FROM spend_train LIMIT 250",
                             "database_url": f"sqlite:///{warehouse}"}}}))
    first = write_csv(tmp_path / "spend.csv", make_sample("regression", 300, seed=7), 1_000)
    run_pipeline(make_request(first, "spend", "monthly spend", tmp_path / "edgeops.yaml"))
    result = run_retrain(plan_retrain("spend", config_path=tmp_path / "edgeops.yaml"))
    assert result.outcome == "no_devices", result.headline()
    recipe = result.record.report["recipe"]
    assert recipe["target"] == "monthly spend" and recipe["task"] == "regression"
    assert recipe["source"] == {"sql": "SELECT * FROM spend_train LIMIT 250", "database_url": f"sqlite:///{warehouse}"}
    assert result.pipeline.export.parity.rows == 63  # the holdout quarter of the query's 250 rows (not 300)
    assert not result.request.pipeline.data.exists()  # the query's file lived as long as the run


@pytest.fixture
def guarded_broker(tmp_path: Path) -> Iterator[tuple[Mosquitto, str, str]]:
    """Our own Mosquitto: devices on an anonymous listener, the control plane on one that wants a password
    (both see the same topics). Yields the broker, the control listener's URL and its password."""
    passwd = tmp_path / "control.passwd"
    password = make_users(passwd, tmp_path / "creds", ["edgeops-control"])["edgeops-control"]
    control = free_port()
    extra = (f"per_listener_settings true\nallow_anonymous true\n"
             f"listener {control} 127.0.0.1\nallow_anonymous false\npassword_file {passwd}\n")
    with running_mosquitto(tmp_path / "mosquitto", extra) as broker:
        yield broker, f"mqtt://127.0.0.1:{control}", password


def stored_parameters() -> str:
    """Every flow run's parameters as the Prefect server keeps them."""
    with get_client(sync_client=True) as client:
        return json.dumps([run.parameters for run in client.read_flow_runs(limit=200)], default=str)


@pytest.mark.parametrize("where", ["config file", "secret blocks"])
def test_broker_password_and_signing_key_never_become_flow_parameters(
        tmp_path: Path, guarded_broker: tuple[Mosquitto, str, str], topic_prefix: str, prefect_harness: None,
        where: str) -> None:
    """On main the retrain handed the password to its rollout subflow as a parameter, which Prefect stored."""
    broker, control_url, password = guarded_broker
    vault = tmp_path / "vault"
    generate_keys(vault)
    mqtt: dict[str, Any] = {"url": control_url, "prefix": topic_prefix, "username": "edgeops-control"}
    config: dict[str, Any] = {"mqtt": mqtt}
    if where == "config file":
        mqtt["password"] = password
        config["registry"] = {"keys_dir": str(vault)}
    else:  # a worker with no key folder and no password anywhere on its disk
        tag = uuid.uuid4().hex[:8]
        Secret(value=password).save(f"mqtt-{tag}")
        Secret(value=key_paths(vault)[0].read_text()).save(f"key-{tag}")
        mqtt["password_secret"], config["signing"] = f"mqtt-{tag}", {"key_secret": f"key-{tag}"}
        config["registry"] = {"keys_dir": str(tmp_path / "no-keys-here")}
    (tmp_path / "edgeops.yaml").write_text(yaml.safe_dump(config))
    write_csv(tmp_path / "data" / "churn-2026-10.csv", make_sample("binary", 400, seed=4), 1_000)
    run_pipeline(make_request(tmp_path / "data" / "churn-2026-10.csv", "churn", "churned", tmp_path / "edgeops.yaml"))
    write_csv(tmp_path / "data" / "churn-2026-11.csv", make_shifted_sample("binary", 400, seed=3), 2_000)

    trusted = (load_public_key(key_paths(vault)[1]),)
    sims = [SimDevice(f"d{i}", model="churn", version=1, state="serving", public_keys=trusted) for i in range(3)]
    with SimFleet(broker.url, Topics(topic_prefix), sims) as fleet:
        state = retrain_flow(model="edgeops.model.churn", data=str(tmp_path / "data"), target="churned",
                             config_path=str(tmp_path / "edgeops.yaml"), policy=POLICY, drift=DRIFT,
                             return_state=True)
        assert state.is_completed() and "promoted to champion" in (state.message or ""), state.message
        assert all(d.version == 2 for d in fleet.devices.values())
    stored = stored_parameters()
    assert '"rollout_id"' in stored  # the rollout subflow ran, and its parameters were stored
    assert password not in stored
    assert "PRIVATE KEY" not in stored

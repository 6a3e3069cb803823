"""The pipeline as users run it: the Prefect flow (test harness), the CLI in-process, and `edgeops` processes."""

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
from cryptography.hazmat.primitives import serialization
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from typer.testing import CliRunner

from edge_agent.protocol import ReleaseManifest
from edge_agent.verify import KeyRing, verify_artifact, verify_manifest
from edgeops.cli import build_app
from edgeops.config import load_config
from edgeops.errors import ValidationFailed
from edgeops.flows.pipeline import pipeline_flow
from edgeops.release.registry import Registry
from edgeops.release.signing import generate_keys
from edgeops.train.data import file_sha256
from edgeops.train.pipeline import code_revision
from edgeops.train.samples import make_sample
from edgeops.train.training import train_model

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
EDGEOPS = Path(sys.executable).with_name("edgeops")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A working directory with a signing key; quiet Prefect settings pinned so the CLI changes no env."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREFECT_LOGGING_LEVEL", "WARNING")
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    generate_keys(tmp_path / ".edgeops/keys")
    yield tmp_path


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def flow_artifacts(flow_run_id: object) -> dict[str, object]:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {a.key: a for a in found if a.key}


def release_events(model: str, flow_run_id: object) -> list[dict[str, Any]]:
    """edgeops.release.* events about ``model`` from one flow run, as the server stored them (they arrive async)."""
    from prefect.events.worker import EventsWorker

    EventsWorker.drain_all()
    query = {"filter": {"event": {"prefix": ["edgeops.release."]}, "any_resource": {"id": [f"edgeops.model.{model}"]}}}
    run = f"prefect.flow-run.{flow_run_id}"
    deadline = time.monotonic() + 30
    with get_client(sync_client=True) as client:
        while True:
            events = [e for e in client.request("POST", "/events/filter", json=query).json()["events"]
                      if any(r["prefect.resource.id"] == run for r in e["related"])]
            if events or time.monotonic() > deadline:
                return events
            time.sleep(0.3)


def test_flow_registers_a_release_with_artifacts(project: Path, prefect_harness: None) -> None:
    make_sample("binary", 400, seed=3).to_csv("train.csv", index=False)
    state = pipeline_flow(data="train.csv", model="churn", target="churned", return_state=True)
    assert state.is_completed()
    result = state.result()
    assert result.passed and result.record.aliases == ("candidate", "champion")
    assert result.record.manifest.lineage.data_sha256 == file_sha256(Path("train.csv"))
    assert result.record.read_file("sample.parquet") is not None
    artifacts = flow_artifacts(state.state_details.flow_run_id)
    assert {"churn-pipeline", "churn-metrics"} <= set(artifacts)
    assert "Metrics vs gates" in str(artifacts["churn-pipeline"].data)
    assert "roc_auc" in str(artifacts["churn-metrics"].data)
    [event] = release_events("churn", state.state_details.flow_run_id)
    assert event["event"] == "edgeops.release.registered" and event["payload"]["ref"] == "churn@1"

    # The next run gates against the champion and checks drift against its stored sample.
    second = pipeline_flow(data="train.csv", model="churn", target="churned", overrides={"seed": 5})
    assert second.record.manifest.lineage.parent_version == 1
    assert any(c.kind == "regression" for c in second.gate.checks)
    assert second.record.aliases == ("candidate",)


def test_failed_validation_fails_the_flow_run_and_registers_nothing(project: Path,
                                                                    prefect_harness: None) -> None:
    df = make_sample("binary", 200, seed=4)
    df["churned"] = 1
    df.to_csv("one_class.csv", index=False)
    state = pipeline_flow(data="one_class.csv", model="churn", target="churned", return_state=True)
    assert state.is_failed()
    with pytest.raises(ValidationFailed, match="single value"):
        state.result()
    assert "churn-validation" in flow_artifacts(state.state_details.flow_run_id)
    assert listing(project / ".edgeops/registry") == []


def _bad_inputs(project: Path) -> dict[str, tuple[list[str], str]]:
    good = make_sample("binary", 300, seed=6)
    good.to_csv("good.csv", index=False)
    variants = {"one_class": good.assign(churned=0), "all_nan": good.assign(**{"empty col": np.nan}),
                "no_target": good.drop(columns=["churned"])}
    garbage = good["monthly charges"].astype(object)
    garbage[::40] = "n/a??"
    variants["garbage"] = good.assign(**{"monthly charges": garbage})
    for name, frame in variants.items():
        frame.to_csv(f"{name}.csv", index=False)
    Path("unreadable.csv").write_bytes(b'a,b\n"1,2\n\x00\xff,3\n')
    base = ["--target", "churned", "--model", "churn"]
    return {
        "missing file": (["--data", "nope.csv", *base], "does not exist"),
        "unreadable csv": (["--data", "unreadable.csv", *base], "cannot read data file"),
        "missing target": (["--data", "no_target.csv", *base], "target column 'churned' is not in the data"),
        "one class": (["--data", "one_class.csv", *base], "single value"),
        "all-NaN column": (["--data", "all_nan.csv", *base], "'empty col'"),
        "garbage numbers": (["--data", "garbage.csv", *base], "'monthly charges'"),
        "unknown estimator": (["--data", "good.csv", *base, "--estimator", "sklearn.nope.Model"], "estimator"),
    }


def test_cli_bad_input_is_one_line_and_leaves_the_registry_alone(project: Path,
                                                                  prefect_harness: None) -> None:
    runner = CliRunner()
    app = build_app()
    cases = _bad_inputs(project)
    before = listing(project / ".edgeops/registry")
    for name, (args, expected) in cases.items():
        result = runner.invoke(app, ["pipeline", "run", *args])
        lines = [ln for ln in result.stderr.splitlines() if not ln.startswith("starting a temporary")]
        assert result.exit_code == 1, (name, result.stderr, result.exception)
        assert len(lines) == 1 and lines[0].startswith("edgeops: ") and expected in lines[0], (name, lines)
        assert listing(project / ".edgeops/registry") == before, name

    # A failed gate is not an error of the tool: the release is kept as "rejected" with its reasons.
    result = runner.invoke(app, ["pipeline", "run", "--data", "good.csv", "--target", "churned", "--model", "churn",
                                 "--set", "gates.absolute.accuracy=0.999"])
    assert result.exit_code == 3
    assert result.stderr.strip().splitlines()[-1].startswith("edgeops: churn@1 rejected by gates: accuracy")
    rejected = Registry(project / ".edgeops/registry").get("churn", 1)
    assert rejected.status == "rejected" and rejected.manifest.signature is None and rejected.aliases == ()
    assert runner.invoke(app, ["models", "promote", "churn@1"]).exit_code == 1


def random_table(task: str, rng: np.random.Generator, rows: int = 500) -> tuple[pd.DataFrame, str]:
    """Columns the code has never seen: random count, names with spaces and non-ASCII, numbers and text."""
    n_num, n_txt = int(rng.integers(1, 4)), int(rng.integers(1, 3))
    data: dict[str, object] = {}
    signal = np.zeros(rows)
    for i in range(n_num):
        values = rng.normal(rng.uniform(-50, 50), rng.uniform(0.5, 20), rows)
        signal += (values - values.mean()) / values.std() * rng.choice([-1.0, 1.0])
        data[f"méasure {i} (raw)"] = np.where(rng.random(rows) < 0.04, np.nan, np.round(values, 3))
    for i in range(n_txt):
        levels = [f"lvl {chr(65 + k)}" for k in range(int(rng.integers(2, 6)))]
        picks = rng.integers(0, len(levels), rows)
        signal += picks * rng.uniform(-0.8, 0.8)
        data[f"kind {i}"] = np.where(rng.random(rows) < 0.04, None, np.array(levels, dtype=object)[picks])
    noisy = signal + rng.normal(0, 0.5, rows)
    if task == "binary":
        target = np.where(noisy > np.median(noisy), "yes", "no")
    elif task == "multiclass":
        target = np.array(["low", "mid", "high"], dtype=object)[np.digitize(noisy, np.quantile(noisy, [1 / 3, 2 / 3]))]
    else:
        target = np.round(10 * noisy + 100, 3)
    data["the target"] = target
    return pd.DataFrame(data), "the target"


def onnx_outputs(manifest: ReleaseManifest, onnx: bytes, columns: dict[str, list[object]]) -> list[np.ndarray]:
    """Feed columns to the ONNX model as a device does: [N, 1] per input, missing text as the token."""
    feeds = {}
    for spec in manifest.inputs:
        values = columns[spec.column]
        if spec.dtype == "float32":
            feeds[spec.name] = np.array([np.nan if v is None else v for v in values], dtype=np.float32).reshape(-1, 1)
        else:
            feeds[spec.name] = np.array([spec.missing_token if v is None else str(v) for v in values],
                                        dtype=object).reshape(-1, 1)
    session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    outs = manifest.outputs
    names = [outs.value] if outs.task == "regression" else [outs.label, outs.probabilities]
    return session.run(names, feeds)


def check_release(work: Path, task: str, proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["status"] == "registered" and summary["signed"] and summary["task"] == task
    record = Registry(work / ".edgeops/registry").get(summary["model"], summary["version"])
    manifest, onnx = record.manifest, record.onnx_bytes()

    # Signed by our key: checked with plain cryptography and with the agent's own verifier.
    public = work / ".edgeops/keys/release.pub"
    key = serialization.load_pem_public_key(public.read_bytes())
    key.verify(manifest.signature.value, manifest.signing_bytes())  # type: ignore[union-attr]
    verify_manifest(manifest, KeyRing.from_paths([public]))
    verify_artifact(manifest, onnx, max_bytes=64 << 20)
    assert manifest.lineage.data_sha256 == file_sha256(work / "data.csv")

    # ONNX agrees with the scikit-learn model: the golden rows, and a retrain with the same config and seed.
    golden = manifest.golden
    got = onnx_outputs(manifest, onnx, golden.inputs)
    if task == "regression":
        np.testing.assert_allclose(got[0].ravel(), golden.values, atol=golden.tolerance)
    else:
        assert [str(v) for v in got[0].ravel()] == [str(v) for v in golden.labels]  # type: ignore[union-attr]
        np.testing.assert_allclose(got[1], golden.probabilities, atol=golden.tolerance)
    df = pd.read_csv(work / "data.csv")
    trained = train_model(df, "the target", load_config(None, {"data.target": "the target"}))
    X = trained.prepare(df)
    columns = {c: [None if pd.isna(v) or v == trained.missing_token else v for v in X[c]] for c in X.columns}
    got = onnx_outputs(manifest, onnx, columns)
    if task == "regression":
        np.testing.assert_allclose(got[0].ravel(), trained.pipeline.predict(X), rtol=1e-4, atol=1e-3)
    else:
        np.testing.assert_allclose(got[1], trained.pipeline.predict_proba(X), atol=1e-4)


def test_edgeops_processes_make_signed_releases_that_match_sklearn(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """`edgeops pipeline run` as a user runs it (own process, ephemeral Prefect), one process per task."""
    monkeypatch.chdir(tmp_path)  # the retrain below must read default config, not a stray edgeops.yaml
    seed = int.from_bytes(os.urandom(4), "little")
    rng = np.random.default_rng(seed)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    for task in ("binary", "multiclass", "regression"):  # one after the other: 2 shared cores
        work = tmp_path / task
        work.mkdir()
        generate_keys(work / ".edgeops/keys")
        df, target = random_table(task, rng)
        df.to_csv(work / "data.csv", index=False)
        proc = subprocess.run(
            [str(EDGEOPS), "pipeline", "run", "--data", "data.csv", "--target", target, "--model", f"m-{task}",
             "--json"], cwd=work, text=True, capture_output=True, timeout=300,
            env={**env, "PREFECT_HOME": str(tmp_path / "prefect-home")})
        check_release(work, task, proc)
    print(f"random tables from seed {seed}")


def test_edgeops_process_prints_one_line_for_bad_data(tmp_path: Path) -> None:
    """No Prefect log or traceback reaches the user's terminal when the data is bad."""
    generate_keys(tmp_path / ".edgeops/keys")
    df = make_sample("binary", 200, seed=8).assign(churned=1)
    df.to_csv(tmp_path / "bad.csv", index=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    proc = subprocess.run([str(EDGEOPS), "pipeline", "run", "--data", "bad.csv", "--target", "churned",
                           "--model", "churn"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**env, "PREFECT_HOME": str(tmp_path / "prefect-home")})
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if not ln.startswith("starting a temporary")]
    assert len(lines) == 1 and "single value" in lines[0], proc.stderr
    assert proc.stdout == ""
    assert not (tmp_path / ".edgeops/registry/models").exists()


def test_code_revision_is_the_checkout_head(tmp_path: Path) -> None:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert code_revision(ROOT) == head
    assert code_revision(tmp_path) is None


def test_tasks_are_thin_wrappers_over_the_plain_steps(tmp_path: Path) -> None:
    """task.fn without a flow run gives what the plain pipeline gives (same seed, same data)."""
    from prefect.logging import disable_run_logger

    from edgeops.flows import pipeline as flow_module
    from edgeops.train import pipeline as steps

    make_sample("multiclass", 300, seed=9).to_csv(tmp_path / "train.csv", index=False)
    overrides = {"registry.root": str(tmp_path / "reg"), "registry.keys_dir": str(tmp_path / "keys")}
    generate_keys(tmp_path / "keys")
    request = steps.make_request(tmp_path / "train.csv", "tiers", "plan tier", None, overrides)
    registry = Registry(request.config.registry.root)
    champion = steps.load_champion(registry, "tiers")
    with disable_run_logger():
        df, sha = flow_module.load_task.fn(request.data)
        validation = flow_module.validate_task.fn(df, request.target, request.config, champion)
        trained = flow_module.train_task.fn(df, request.target, request.config)
        gate = flow_module.gate_task.fn(trained, request.config, champion)
        export = flow_module.export_task.fn(trained, request.config)
        candidate = steps.Candidate(df, sha, validation, trained, gate, export)
        record = flow_module.register_task.fn(registry, request, steps.load_signing_key(request.config), candidate,
                                              champion)
    plain = steps.run_pipeline(request)
    assert (record.version, plain.record.version) == (1, 2)
    assert record.manifest.metrics == plain.metrics
    assert record.manifest.artifact.sha256 == plain.record.manifest.artifact.sha256  # same model, same bytes
    assert plain.record.manifest.lineage.parent_version == 1
    assert json.loads(json.dumps(plain.to_dict()))["status"] == "registered"


def test_plain_pipeline_rejects_on_gates_and_stops_on_a_missing_key(tmp_path: Path) -> None:
    from edgeops.errors import SigningError
    from edgeops.train import pipeline as steps

    make_sample("regression", 300, seed=10).to_csv(tmp_path / "train.csv", index=False)
    overrides = {"registry.root": str(tmp_path / "reg"), "registry.keys_dir": str(tmp_path / "keys"),
                 "gates.absolute.r2": 0.9999}
    request = steps.make_request(tmp_path / "train.csv", "spend", "monthly spend", None, overrides)
    with pytest.raises(SigningError, match="edgeops keys init"):
        steps.run_pipeline(request)
    assert not (tmp_path / "reg").exists()
    generate_keys(tmp_path / "keys")
    result = steps.run_pipeline(request)
    assert not result.passed and result.record.status == "rejected"
    assert any("r2" in reason for reason in result.record.report["reasons"])
    assert Registry(tmp_path / "reg").aliases("spend") == {}


def test_quickstart_from_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 prefect_harness: None) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREFECT_LOGGING_LEVEL", "WARNING")
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    result = CliRunner().invoke(build_app(), ["quickstart", "--rows", "500"])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert "registered churn@1 (candidate, champion), signed" in result.stdout
    assert (tmp_path / ".edgeops/keys/release.key").exists()
    sample = pd.read_csv(tmp_path / ".edgeops/sample/churn.csv")
    assert any(" " in c for c in sample.columns) and sample.isna().any().any()
    numeric = [c for c in sample.columns if pd.api.types.is_numeric_dtype(sample[c])]
    assert 0 < len(numeric) < len(sample.columns)  # numbers and text
    assert Registry(tmp_path / ".edgeops/registry").resolve("churn@champion").version == 1


def test_an_unreachable_prefect_server_is_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    generate_keys(tmp_path / ".edgeops/keys")
    make_sample("binary", 100, seed=1).to_csv(tmp_path / "train.csv", index=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    proc = subprocess.run([str(EDGEOPS), "pipeline", "run", "--data", "train.csv", "--target", "churned",
                           "--model", "churn"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**env, "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"})
    assert proc.returncode == 1
    assert proc.stderr.startswith("edgeops: the Prefect API at") and proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / ".edgeops/registry").exists()

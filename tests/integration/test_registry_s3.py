"""The registry on a real S3 server (SeaweedFS) as users configure it: the pipeline registers into ``s3://``
and the ``edgeops models`` commands read it back; the endpoint from edgeops.yaml or the environment; S3
failures as one-line errors."""

import json
from pathlib import Path

import pytest
from seaweedfs import SeaweedFS
from services import free_port
from typer.testing import CliRunner

from edgeops.cli import build_app
from edgeops.config import RegistryConfig, S3Config, load_config
from edgeops.errors import RegistryError
from edgeops.release.registry import Registry
from edgeops.release.signing import generate_keys
from edgeops.telemetry.monitor import registry_references
from edgeops.train.pipeline import make_request, run_pipeline
from edgeops.train.samples import make_sample

pytestmark = pytest.mark.integration


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3_root: str, s3_server: SeaweedFS) -> Path:
    """A checkout whose edgeops.yaml puts the registry on S3 and names the endpoint; the credentials stay in
    the environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY), and AWS_ENDPOINT_URL is unset so the file's
    endpoint is the one used."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setenv("PREFECT_LOGGING_LEVEL", "WARNING")
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    (tmp_path / "edgeops.yaml").write_text(
        f"registry:\n  root: {s3_root}\n  s3:\n    endpoint_url: {s3_server.endpoint}\n    addressing_style: path\n")
    generate_keys(tmp_path / ".edgeops/keys")
    make_sample("binary", 400, seed=3).to_csv(tmp_path / "train.csv", index=False)
    return tmp_path


def test_the_pipeline_registers_into_s3_and_the_cli_reads_it_back(project: Path, s3_root: str,
                                                                  prefect_harness: None) -> None:
    runner, app = CliRunner(), build_app()
    config = str(project / "edgeops.yaml")
    first = runner.invoke(app, ["pipeline", "run", "--data", "train.csv", "--target", "churned", "--model", "churn",
                                "--config", config])
    assert first.exit_code == 0, (first.stdout, first.stderr)
    assert f"onnx: {s3_root}/blobs/sha256/" in first.stdout
    # The next run reads the champion (manifest, metrics, training sample) back from S3 to gate and check drift.
    second = run_pipeline(make_request(Path("train.csv"), "churn", "churned", Path(config), {"seed": 5}))
    assert second.record.manifest.lineage.parent_version == 1
    assert any(c.kind == "regression" for c in second.gate.checks)
    assert any(d.source == "sample" for d in second.validation.drift), "the champion's sample was not read back"

    listed = runner.invoke(app, ["models", "list", "--config", config, "--json"])
    assert listed.exit_code == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["ref"], r["aliases"]) for r in rows] == [("churn@1", ["champion"]), ("churn@2", ["candidate"])]
    assert rows[0]["onnx_path"].startswith(f"{s3_root}/blobs/sha256/")
    promoted = runner.invoke(app, ["models", "promote", "churn@2", "--config", config])
    assert promoted.exit_code == 0 and "churn@champion -> 2 (was 1)" in promoted.stdout
    shown = runner.invoke(app, ["models", "show", "churn", "--config", config, "--json"])
    assert shown.exit_code == 0, shown.stderr
    record = json.loads(shown.stdout)
    assert (record["ref"], record["aliases"], record["signed"]) == ("churn@2", ["candidate", "champion"], True)

    cfg = load_config(Path(config))
    champion = Registry.from_config(cfg.registry).champion("churn")
    assert champion is not None and len(champion.onnx_bytes()) == champion.manifest.artifact.size
    assert registry_references(cfg.registry)("churn", 2) == champion.manifest   # what the monitor reads
    assert not (project / ".edgeops/registry").exists() and not (project / "s3:").exists()  # nothing local


def test_the_environment_endpoint_wins_and_s3_failures_are_one_line(s3_root: str, s3_server: SeaweedFS,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    # AWS_ENDPOINT_URL (set by s3_root) wins over the file's endpoint, as EDGEOPS_MQTT_URL wins over mqtt.url.
    assert Registry(s3_root, s3=S3Config(endpoint_url=nowhere)).models() == []

    monkeypatch.delenv("AWS_ENDPOINT_URL")
    with pytest.raises(RegistryError, match=f"cannot reach the registry at {s3_root}"):
        Registry(s3_root, s3=S3Config(endpoint_url=nowhere)).models()
    at_server = S3Config(endpoint_url=s3_server.endpoint)
    with pytest.raises(RegistryError, match="bucket of the registry at s3://no-such-bucket/x does not exist"):
        Registry("s3://no-such-bucket/x", s3=at_server).models()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(RegistryError, match=r"S3 refused s3://.*SignatureDoesNotMatch|S3 refused s3://.*AccessDenied"):
        Registry(s3_root, s3=at_server).models()
    with pytest.raises(RegistryError, match="expected s3://bucket or s3://bucket/prefix"):
        Registry("s3:///prefix-without-bucket")
    with pytest.raises(RegistryError, match="a local folder or an s3://bucket/prefix URL"):
        Registry.from_config(RegistryConfig(root="gs://bucket/x"))

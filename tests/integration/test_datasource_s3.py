"""A retrain's data under an S3 prefix (edgeops.train.datasource_s3) on a real S3 server (SeaweedFS): the newest
object of the model's own glob, a folder's own files, errors that name what was looked at."""

import hashlib
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest
from seaweedfs import SeaweedFS

from edgeops.config import ModelSource, S3Config
from edgeops.errors import DataError
from edgeops.release.registry import Registry
from edgeops.release.signing import generate_keys
from edgeops.train.datasource import materialized
from edgeops.train.datasource_s3 import newest_s3_key, split_s3_spec
from edgeops.train.samples import make_sample

pytestmark = pytest.mark.integration


def put(s3_server: SeaweedFS, key: str, rows: int) -> None:
    body = pd.DataFrame({"x": range(rows), "y": [i % 2 for i in range(rows)]}).to_csv(index=False)
    s3_server.client().put_object(Bucket=s3_server.bucket, Key=key, Body=body.encode())
    time.sleep(1.1)  # LastModified has a resolution of one second: the next object is strictly newer


def test_the_newest_object_of_the_models_glob_is_downloaded_for_the_run(s3_server: SeaweedFS, s3_root: str) -> None:
    base = f"{uuid.uuid4().hex[:12]}/exports"
    put(s3_server, f"{base}/churn-2026-10.csv", 10)
    put(s3_server, f"{base}/churn-2026-11.csv", 11)
    put(s3_server, f"{base}/wine-2026-12.csv", 12)       # newest under the prefix, but another model's
    put(s3_server, f"{base}/churn-notes.txt", 13)        # newest churn object, but not data
    put(s3_server, f"{base}/churn-old/2026-09.csv", 9)   # in a "subfolder": the glob's * crosses / (fnmatch)
    url = f"s3://{s3_server.bucket}/{base}"
    options = S3Config()  # AWS_ENDPOINT_URL from s3_root's environment

    assert newest_s3_key(f"{url}/churn-*.csv", options)[1].endswith("churn-old/2026-09.csv")
    assert newest_s3_key(f"{url}/churn-2026-1?.csv", options)[1] == f"{base}/churn-2026-11.csv"
    assert newest_s3_key(url, options)[1] == f"{base}/wine-2026-12.csv"  # a folder: its own newest file
    assert newest_s3_key(f"{url}/", options)[1] == f"{base}/wine-2026-12.csv"
    assert newest_s3_key(f"{url}/churn-2026-10.csv", options)[1] == f"{base}/churn-2026-10.csv"  # one object

    with materialized(ModelSource(data=f"{url}/churn-2026-1*.csv"), s3=options) as path:
        assert path.name == "churn-2026-11.csv" and len(pd.read_csv(path)) == 11
    assert not path.exists() and not path.parent.exists()  # only for the run

    with pytest.raises(DataError, match=r"no \.csv or \.parquet object in the S3 glob .*fraud-\*"):
        newest_s3_key(f"{url}/fraud-*.csv", options)
    with pytest.raises(DataError, match=r"no \.csv or \.parquet object in the S3 folder"):
        newest_s3_key(f"{url}/nothing-here", options)


def test_s3_failures_are_data_errors_naming_the_url(s3_server: SeaweedFS, s3_root: str) -> None:
    with pytest.raises(DataError, match="cannot list s3://no-such-bucket-here/x"), \
            materialized(ModelSource(data="s3://no-such-bucket-here/x/*.csv"), s3=S3Config()):
        pass
    assert split_s3_spec("s3://b/a/b-[0-9]*.csv") == ("b", "a/b-", "a/b-[0-9]*.csv")
    with pytest.raises(DataError, match="expected s3://bucket"):
        split_s3_spec("s3:///x.csv")


def exports_and_project(s3_server: SeaweedFS, s3_root: str, tmp_path: Path) -> tuple[str, bytes]:
    """Two churn extracts under a fresh S3 prefix (the older one not a churn table at all) and a project in
    ``tmp_path`` whose registry is ``s3_root``: the glob of the extracts, and the newest one's bytes."""
    base = f"{uuid.uuid4().hex[:12]}/exports"
    client = s3_server.client()
    client.put_object(Bucket=s3_server.bucket, Key=f"{base}/churn-1.csv", Body=b"not,a\nchurn,table\n")
    time.sleep(1.1)
    data = make_sample("binary", 300, seed=2).to_csv(index=False).encode()
    client.put_object(Bucket=s3_server.bucket, Key=f"{base}/churn-2.csv", Body=data)
    generate_keys(tmp_path / "keys")
    (tmp_path / "edgeops.yaml").write_text(f"registry:\n  root: {s3_root}\n  keys_dir: {tmp_path / 'keys'}\n")
    return f"s3://{s3_server.bucket}/{base}/churn-*.csv", data


def test_the_pipeline_flow_trains_on_the_newest_s3_extract(s3_server: SeaweedFS, s3_root: str, tmp_path: Path,
                                                           prefect_harness: None) -> None:
    """A worker with no disk in common with the export job: the pipeline's data is an S3 glob, and the release
    records it as its source (what the model's retrains read again)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # flows/
    from edgeops.flows.pipeline import pipeline_flow

    glob, data = exports_and_project(s3_server, s3_root, tmp_path)

    result = pipeline_flow(data=glob, model="churn", target="churned", config_path=str(tmp_path / "edgeops.yaml"))
    record = Registry(s3_root).get("churn", result.record.version)
    assert record.report["recipe"]["source"] == {"data": glob}
    assert record.manifest.lineage.data_sha256 == hashlib.sha256(data).hexdigest()  # the newest object, as is


def test_pipeline_run_takes_an_s3_glob_on_the_command_line(s3_server: SeaweedFS, s3_root: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          prefect_harness: None) -> None:
    """`edgeops pipeline run --data s3://…`: the newest object is downloaded once, checked before Prefect, trained
    on, and the glob is the release's source; a wrong target is reported from the downloaded file."""
    from typer.testing import CliRunner

    from edgeops.cli import build_app

    glob, data = exports_and_project(s3_server, s3_root, tmp_path)
    monkeypatch.chdir(tmp_path)
    runner, app = CliRunner(), build_app()

    wrong = runner.invoke(app, ["pipeline", "run", "--data", glob, "--target", "churn", "--model", "churn"])
    assert wrong.exit_code == 1
    assert wrong.stderr.splitlines() == [f"data: churn-2.csv, the newest of {glob}", (
        "edgeops: target column 'churn' is not in the data (columns: 'tenure months', 'monthly charges', "
        "'support calls', 'contract type', 'payment method', 'region', 'churned')")]

    result = runner.invoke(app, ["pipeline", "run", "--data", glob, "--target", "churned", "--model", "churn",
                                 "--json"])
    assert result.exit_code == 0, result.stderr
    record = Registry(s3_root).get("churn", 1)
    assert record.report["recipe"]["source"] == {"data": glob}
    assert record.manifest.lineage.data_sha256 == hashlib.sha256(data).hexdigest()

"""Fast commands: each runs in a fresh interpreter (``edgeops.cli.main``, stdout piped as in a script), and must
answer without importing the libraries it does not need; input mistakes fail before Prefect is imported."""

import os
from pathlib import Path

import pytest
from cli_procs import run_edgeops
from fresh_python import fresh_python
from manifests import fake_manifest

from edgeops.config import RegistryConfig
from edgeops.release.registry import DEFAULT_ROOT, Registry
from edgeops.release.signing import generate_keys, load_private_key, sign_manifest
from edgeops.train.samples import write_sample

pytestmark = pytest.mark.unit


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A working directory with a signing key and two registered versions of ``churn``."""
    private, _ = generate_keys(tmp_path / ".edgeops" / "keys")
    key = load_private_key(private)
    registry = Registry(tmp_path / ".edgeops" / "registry")
    onnx = b"fake-onnx" * 9
    for _ in range(2):
        registry.register("churn", lambda v: (sign_manifest(fake_manifest("churn", v, onnx), key), onnx))
    return tmp_path


@pytest.mark.parametrize(("args", "allowed"), [
    (["--help"], ()), (["models", "--help"], ()), (["models", "list"], ()), (["models", "list", "--json"], ()),
    (["models", "show", "churn@2"], ()), (["fleet", "--help"], ()), (["fleet", "ls", "--help"], ()),
    (["monitor", "run", "--help"], ()), (["keys", "show"], ()),
    (["rollout", "status"], ("sqlalchemy",)),  # the rollout store is SQLAlchemy's (SQLite or PostgreSQL)
])
def test_light_commands_import_no_heavy_library(project: Path, args: list[str], allowed: tuple[str, ...]) -> None:
    run = run_edgeops(args, project)
    assert run.code == 0, run.stderr
    assert run.heavy(allowed) == [], f"edgeops {' '.join(args)} imported {run.heavy(allowed)}"


@pytest.mark.parametrize("args", [["models", "list"], ["models", "show", "churn@2"]])
def test_a_project_without_a_config_file_reads_its_registry_without_the_config_module(
        project: Path, args: list[str]) -> None:
    run = run_edgeops(args, project)
    assert run.code == 0, run.stderr
    assert not {"edgeops.config", "cryptography", "socket", "random"} & run.modules, sorted(run.modules)


def test_a_config_file_still_names_the_registry(project: Path) -> None:
    (project / "edgeops.yaml").write_text("registry:\n  root: elsewhere\n")
    run = run_edgeops(["models", "list"], project)
    assert run.code == 0, run.stderr
    assert "elsewhere" in run.stdout, run.stdout  # "the registry at elsewhere is empty"
    assert RegistryConfig().root == DEFAULT_ROOT  # the default opened without the config is the config's


def test_credentials_import_no_cryptography_until_a_key_is_used() -> None:
    probe = "import sys, edgeops.credentials; print('cryptography' in sys.modules)"
    assert fresh_python(probe).strip() == "False"


def test_models_list_lists_the_registry_when_piped(project: Path) -> None:
    run = run_edgeops(["models", "list"], project)
    assert [line.split("\t")[0] for line in run.stdout.splitlines()] == ["MODEL@VERSION", "churn@1", "churn@2"]


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(("data", "target", "expected"), [
    ("good.csv", "churn", "target column 'churn' is not in the data (columns: 'tenure months', 'monthly charges'"),
    ("empty.csv", "churned", "cannot read data file 'empty.csv'"),
    ("header.csv", "churned", "data file 'header.csv' holds no rows"),
    ("broken.csv", "churned", "cannot read data file 'broken.csv'"),
    ("missing.csv", "churned", "data file 'missing.csv' does not exist"),
])
def test_pipeline_input_mistakes_fail_before_prefect(project: Path, data: str, target: str, expected: str) -> None:
    write_sample(project / "good.csv", "binary", rows=200)
    write_csv(project / "empty.csv", "")
    write_csv(project / "header.csv", "a,churned\n")
    write_csv(project / "broken.csv", 'a,churned\n1,"0\n')
    run = run_edgeops(["pipeline", "run", "--data", data, "--target", target, "--model", "churn"], project)
    assert run.code == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgeops: "), run.stderr
    assert expected in run.stderr, run.stderr
    assert run.heavy(allowed=("pandas", "numpy")) == [], run.heavy()
    assert "Prefect" not in run.stderr
    assert not (project / ".edgeops" / "registry" / "churn" / "3").exists()


def test_pipeline_data_may_be_a_glob_or_a_folder_checked_on_its_newest_file(project: Path) -> None:
    (project / "data").mkdir()
    write_csv(project / "data" / "churn-1.csv", "a,churned\n1,0\n")
    write_sample(project / "data" / "churn-2.csv", "binary", rows=50)
    os.utime(project / "data" / "churn-1.csv", (1, 1))  # the older one, whatever the file system's clock says
    for spec in ("data/churn-*.csv", "data"):
        run = run_edgeops(["pipeline", "run", "--data", spec, "--target", "churn", "--model", "churn"], project)
        assert run.code == 1
        assert run.stderr.splitlines() == [
            f"data: churn-2.csv, the newest of {spec}",
            "edgeops: target column 'churn' is not in the data (columns: 'tenure months', 'monthly charges', "
            "'support calls', 'contract type', 'payment method', 'region', 'churned')"], run.stderr
        assert run.heavy(allowed=("pandas", "numpy")) == [], run.heavy()
    run = run_edgeops(["pipeline", "run", "--data", "data/wine-*.csv", "--target", "churned", "--model", "churn"],
                      project)
    assert run.code == 1 and run.stderr.strip() == "edgeops: no .csv or .parquet file in the glob 'data/wine-*.csv'"

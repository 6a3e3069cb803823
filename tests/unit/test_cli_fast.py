"""Fast commands: each runs in a fresh interpreter (``edgeops.cli.main``, stdout piped as in a script), and must
answer without importing the libraries it does not need; input mistakes fail before Prefect is imported."""

from pathlib import Path

import pytest
from cli_procs import run_edgeops
from manifests import fake_manifest

from edgeops.release.registry import Registry
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

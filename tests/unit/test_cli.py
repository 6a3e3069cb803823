import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from manifests import fake_manifest
from typer.testing import CliRunner

from edge_agent.protocol import (
    ReleaseManifest,
)
from edgeops.cli import CONTROL_EXTRA_MESSAGE, build_app
from edgeops.release.registry import Registry
from edgeops.release.signing import load_private_key, sign_manifest

pytestmark = pytest.mark.unit
runner = CliRunner()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh working directory: default config paths (.edgeops/...) land inside it."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(build_app(), list(args))
    return result.exit_code, result.stdout, result.stderr


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if not line.startswith("starting a temporary Prefect")]
    assert len(lines) == 1 and lines[0].startswith("edgeops: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def register(registry: Registry, key: Path, status: str = "registered", model: str = "churn") -> int:
    onnx = b"fake-onnx" * 7

    def build(version: int) -> tuple[ReleaseManifest, bytes]:
        manifest = fake_manifest(model, version, onnx)
        return (sign_manifest(manifest, load_private_key(key)) if status == "registered" else manifest), onnx

    report = {"reasons": ["accuracy 0.5 < 0.8"]} if status == "rejected" else {}
    return registry.register(model, build, status=status, report=report).version  # type: ignore[arg-type]


def test_keys_init_writes_a_private_key_and_refuses_to_overwrite(project: Path) -> None:
    code, out, _ = invoke("keys", "init", "--json")
    assert code == 0
    info = json.loads(out)
    assert stat.S_IMODE(Path(info["private_key"]).stat().st_mode) == 0o600
    assert Path(info["private_key"]).resolve() == (project / ".edgeops/keys/release.key").resolve()
    before = Path(info["private_key"]).read_bytes()
    code, _, err = invoke("keys", "init")
    assert code == 1 and "--force" in one_error_line(err)
    assert Path(info["private_key"]).read_bytes() == before
    code, out, _ = invoke("keys", "init", "--force", "--json")
    assert code == 0 and json.loads(out)["key_id"] != info["key_id"]
    code, out, _ = invoke("keys", "show", "--json")
    assert json.loads(out)["key_id"] != info["key_id"]


def test_models_list_show_promote(project: Path) -> None:
    invoke("keys", "init")
    registry = Registry(project / ".edgeops/registry")
    key = project / ".edgeops/keys/release.key"
    register(registry, key)
    register(registry, key, status="rejected")
    register(registry, key)

    code, out, _ = invoke("models", "list", "--json")
    assert code == 0
    rows = json.loads(out)
    assert [(r["ref"], r["status"]) for r in rows] == [("churn@1", "registered"), ("churn@2", "rejected"),
                                                       ("churn@3", "registered")]
    assert rows[1]["reasons"] == ["accuracy 0.5 < 0.8"] and rows[1]["signed"] is False
    code, out, _ = invoke("models", "list")
    assert code == 0 and "churn@2" in out and "rejected" in out

    code, out, _ = invoke("models", "promote", "churn@3", "--alias", "champion", "--json")
    assert code == 0 and json.loads(out)["aliases"] == ["champion"]
    code, out, _ = invoke("models", "show", "churn@champion", "--json")
    shown = json.loads(out)
    assert shown["version"] == 3 and shown["manifest"]["signature"]["key_id"] == shown["key_id"]

    before = listing(project / ".edgeops/registry")
    code, _, err = invoke("models", "promote", "churn@2", "--alias", "champion")
    assert code == 1 and "rejected" in one_error_line(err)
    for args in (("models", "show", "churn@9"), ("models", "show", "nope"), ("models", "promote", "churn"),
                 ("models", "show", "bad/name"), ("models", "list", "nope"), ("models", "show", "churn\n"),
                 ("models", "promote", "churn@\u00b2"), ("models", "show", "churn@\u00b2"),  # isdigit, int fails
                 ("models", "promote", "churn@3\n"), ("release", "unpublish", "churn@\u00b2")):
        code, _, err = invoke(*args)
        assert code == 1, args
        one_error_line(err)
    assert listing(project / ".edgeops/registry") == before


def test_models_list_on_an_empty_registry(project: Path) -> None:
    code, out, _ = invoke("models", "list", "--json")
    assert code == 0 and json.loads(out) == []


def test_pipeline_run_fails_fast_without_touching_the_registry(project: Path) -> None:
    """Mistakes caught before Prefect starts: no key, no data file, bad config, bad model name."""
    (project / "data.csv").write_text("a,b\n1,2\n")
    registry = project / ".edgeops/registry"
    code, _, err = invoke("pipeline", "run", "--data", "data.csv", "--target", "b", "--model", "m")
    assert code == 1 and "edgeops keys init" in one_error_line(err)
    invoke("keys", "init")
    cases = [
        (["--data", "missing.csv", "--target", "b", "--model", "m"], "does not exist"),
        (["--data", "data.csv", "--model", "m"], "target"),
        (["--data", "data.csv", "--target", "b", "--model", "bad/name"], "not a valid name"),
        (["--data", "data.csv", "--target", "b", "--model", "m", "--set", "no.such.key=1"], "unknown key"),
        (["--data", "data.csv", "--target", "b", "--model", "m", "--set", "oops"], "key=value"),
        (["--data", "data.csv", "--target", "b", "--model", "m", "--estimator", "os.system"], "estimator"),
    ]
    for args, expected in cases:
        code, _, err = invoke("pipeline", "run", *args)
        assert code == 1, (args, err)
        assert expected in one_error_line(err), (args, err)
    assert listing(registry) == []


def test_without_the_control_extra_one_line_and_exit_2(tmp_path: Path) -> None:
    code = ("import sys; sys.modules['prefect'] = None; sys.argv = ['edgeops', 'models', 'list'];"
            "from edgeops.cli import main; main()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == CONTROL_EXTRA_MESSAGE

"""CLI conventions every command keeps: help in Typer's classic rendering, ``--json`` on every listing, tables
that never cut a value, words for ``models show``, plurals. Through typer's CliRunner, and through a real
terminal (a pty) or a pipe where that is what differs."""

import json
import os
import pty
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from cli_procs import run_edgeops
from manifests import fake_manifest
from typer import _click
from typer.testing import CliRunner

from edgeops.cli import build_app
from edgeops.cli.common import plural
from edgeops.release.registry import Registry
from edgeops.release.signing import generate_keys, load_private_key, sign_manifest

pytestmark = pytest.mark.unit
runner = CliRunner()
NOT_LISTINGS = {"telemetry serve"}  # a service, not something that prints a result


def commands() -> Iterator[tuple[str, _click.Command]]:
    """Every leaf command of ``edgeops`` with its full name (``models show``)."""
    root = typer.main.get_command(build_app())
    todo: list[tuple[str, _click.Command]] = [("", root)]
    while todo:
        name, command = todo.pop()
        if isinstance(command, typer.core.TyperGroup):
            ctx = _click.Context(command)
            todo.extend((f"{name} {sub}".strip(), command.get_command(ctx, sub))  # type: ignore[misc]
                        for sub in command.list_commands(ctx))
        else:
            yield name, command


ALL = sorted(name for name, _ in commands())


def test_every_command_is_found() -> None:
    assert len(ALL) >= 18 and {"models show", "fleet ls", "rollout status", "monitor run", "demo"} <= set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_help_shows_flags_without_a_type_and_arguments_in_capitals(name: str) -> None:
    result = runner.invoke(build_app(), [*name.split(), "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output and "<str>" not in result.output
    usage = next(line for line in result.output.splitlines() if "Usage:" in line)
    assert "{" not in usage and not any(word.islower() and word.isalpha() and word not in name.split()
                                        for word in usage.split()[2:] if not word.startswith(("[", "-"))), usage


def test_arguments_are_named_in_capitals_piped_and_on_a_terminal(tmp_path: Path) -> None:
    piped = run_edgeops(["models", "show", "--help"], tmp_path)
    assert "Usage: edgeops models show [OPTIONS] REF" in piped.stdout
    assert "REF  churn@3, churn@champion, or churn.  [required]" in piped.stdout
    assert "--json             Print machine-readable JSON on stdout." in piped.stdout
    shown = on_a_terminal(["models", "show", "--help"], tmp_path)
    assert "edgeops models show [OPTIONS] REF" in shown and "╭─ Options" in shown and "<bool>" not in shown


@pytest.mark.parametrize("name", [n for n in ALL if n not in NOT_LISTINGS])
def test_every_command_has_json(name: str) -> None:
    command = dict(commands())[name]
    assert "--json" in [opt for param in command.params for opt in param.opts], name


def on_a_terminal(args: list[str], cwd: Path, columns: int = 200) -> str:
    """``edgeops ARGS`` with a pty for stdout (what a person sees), ``columns`` wide."""
    master, slave = pty.openpty()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "COLUMNS": str(columns),
           "TERM": "xterm"}
    env.pop("TYPER_USE_RICH", None)
    proc = subprocess.Popen([sys.executable, "-m", "edgeops.cli", *args], cwd=cwd, env=env, stdout=slave,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    os.close(slave)
    chunks = []
    try:
        while chunk := os.read(master, 65536):
            chunks.append(chunk)
    except OSError:  # EIO: the child closed the terminal
        pass
    os.close(master)
    proc.wait(60)
    return re.sub(r"\x1b\[[0-9;]*m", "", b"".join(chunks).decode(errors="replace")).replace("\r", "")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two versions of a model with a long name, the second rejected with a reason and gate results."""
    monkeypatch.chdir(tmp_path)
    private, _ = generate_keys(tmp_path / ".edgeops" / "keys")
    key = load_private_key(private)
    registry = Registry(tmp_path / ".edgeops" / "registry")
    onnx = b"fake-onnx" * 9
    name = "churn-prediction-for-the-northern-region"
    registry.register(name, lambda v: (sign_manifest(fake_manifest(name, v, onnx, metrics={"accuracy": 0.91,
                                                                                           "roc_auc": 0.87}),
                                                    key), onnx))
    report = {"reasons": ["accuracy 0.61 misses >= 0.8"],
              "gates": [{"metric": "accuracy", "passed": False, "message": "accuracy 0.61 misses >= 0.8"}]}
    registry.register(name, lambda v: (fake_manifest(name, v, onnx, metrics={"accuracy": 0.61}), onnx),
                      status="rejected", report=report)
    return tmp_path


def test_models_show_is_words_not_python(project: Path) -> None:
    result = runner.invoke(build_app(), ["models", "show", "churn-prediction-for-the-northern-region@1"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    for python in ("['", "{'", "None", "True", "False"):
        assert python not in out, (python, out)
    assert "  aliases   -" in out and "  parent    -" in out
    assert "METRIC\tVALUE\tGATE\tDETAIL" in out and "accuracy\t0.91\t" in out and "roc_auc\t0.87\t" in out
    rejected = runner.invoke(build_app(), ["models", "show", "churn-prediction-for-the-northern-region@2"]).stdout
    assert "reason    accuracy 0.61 misses >= 0.8" in rejected
    assert "signed    no (rejected releases are not signed)" in rejected
    assert "accuracy\t0.61\tFAILED\taccuracy 0.61 misses >= 0.8" in rejected


@pytest.mark.parametrize("columns", [60, 200])
def test_a_table_on_a_terminal_folds_but_never_cuts(project: Path, columns: int) -> None:
    shown = on_a_terminal(["models", "list"], project, columns=columns)
    lines = [line for line in shown.splitlines() if line.strip()]
    assert "…" not in shown and all(len(line) <= columns and line[-1] in "┓┃┩│┘" for line in lines), shown
    body = [line.split("│")[1:-1] for line in lines if line.startswith("│")]
    column = ["".join(cells[i].strip() for cells in body) for i in range(5)]  # a folded cell goes on below
    assert column[0] == "churn-prediction-for-the-northern-region@1churn-prediction-for-the-northern-region@2"
    assert column[4].replace(" ", "") == "accuracy=0.91roc_auc=0.87accuracy=0.61"
    if columns == 200:  # room for everything on one line per row
        assert len(body) == 2


def test_piped_tables_are_whole_tab_separated_lines(project: Path) -> None:
    result = runner.invoke(build_app(), ["models", "list"])
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert rows[0] == ["MODEL@VERSION", "STATUS", "ALIASES", "CREATED", "METRICS"]
    assert rows[1][0] == "churn-prediction-for-the-northern-region@1" and rows[2][1] == "rejected"
    assert json.loads(runner.invoke(build_app(), ["models", "list", "--json"]).stdout)[1]["status"] == "rejected"


@pytest.mark.parametrize(("count", "text"), [(0, "0 devices"), (1, "1 device"), (2, "2 devices")])
def test_plurals(count: int, text: str) -> None:
    assert plural(count, "device") == text


def test_a_command_registered_without_a_summary_is_listed_from_its_docstring(monkeypatch: pytest.MonkeyPatch) -> None:
    import edgeops.cli

    monkeypatch.setattr(edgeops.cli, "SUBCOMMANDS", [*edgeops.cli.SUBCOMMANDS,
                                                     ("again", "edgeops.cli.quickstart:quickstart")])
    result = runner.invoke(build_app(), ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "again" in result.stdout and "Create a signing key if missing" in result.stdout

"""The README followed verbatim on a fresh clone (issue 17): every fenced ``bash`` block of its Quickstart and
Usage sections, parsed from README.md when the test runs (never a copy that could drift), runs in one bash
shell in a ``git clone`` of this checkout's HEAD, in order, and must exit 0. Long-running services are the
README's own business: it starts the demo and ``edgeops up`` and stops them (``edgeops down``), and the test
then checks that nothing it started still runs and that nothing was written to ``~/.prefect``.

A block preceded by ``<!-- readme-verbatim: skip: why -->`` is not run; the test knows which ones may be
(the test suite itself, and the deploy commands that test_deploy_readme.py runs on a fresh server).

The one shortcut is the install. ``deployments/dev-setup.sh`` runs as written, but finds ``.venv/`` installed:
the test makes it beforehand as a venv of the same base interpreter (``--without-pip``, well under a second)
whose site-packages names the clone's own code first (what an editable install writes: the clone's root and
``src/``), then this test's environment's site-packages for the third-party dependencies, with the console
scripts of the clone's ``[project.scripts]`` (and ``prefect``) pointing at it. So every command runs the
clone's code, and the minutes and the network of a real ``pip install`` are spared; the install itself is
the business of tests/integration/test_clean_install.py (the device install from a wheel).
"""

import contextlib
import os
import re
import signal
import subprocess
import sys
import sysconfig
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import distribution
from pathlib import Path

import pytest
from services import processes_mentioning

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]
ROOT = Path(__file__).resolve().parents[2]
SECTIONS = ("Quickstart", "Usage")
SKIP = "<!-- readme-verbatim: skip:"
MAY_SKIP = (".venv/bin/python -m pytest", "prefect deploy --all")
"""The only blocks a skip marker may leave out: one of these commands is in each."""
SCRIPT_TIMEOUT_S = 1200


@dataclass(frozen=True)
class Block:
    section: str
    code: str
    skip: str | None  # why it is not run, or None


def readme_blocks(text: str, sections: tuple[str, ...] = SECTIONS) -> list[Block]:
    """The fenced ``bash`` blocks under the ``## <section>`` headings, in order, with their skip reasons."""
    blocks = []
    for section in sections:
        found = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
        assert found, f"README.md has no '## {section}' section"
        for fence in re.finditer(r"((?:^<!--.*-->\n)*)^```bash\n(.*?)^```$", found.group(1), re.S | re.M):
            comments, code = fence.groups()
            skip = next((line.removeprefix(SKIP).removesuffix("-->").strip()
                         for line in comments.splitlines() if line.startswith(SKIP)), None)
            blocks.append(Block(section, code, skip))
    return blocks


def script_of(blocks: list[Block]) -> str:
    """One shell session: stop at the first failing command, and trace each command (to the log) as it runs."""
    body = "\n".join(f"# --- {b.section} ---\n{b.code}" for b in blocks if b.skip is None)
    return f"set -eo pipefail\nPS4='+ README: '\nset -x\n{body}"


def test_the_readme_blocks_are_found_and_only_the_known_ones_skipped() -> None:
    blocks = readme_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    run = "\n".join(b.code for b in blocks if b.skip is None)
    for command in ("bash deployments/dev-setup.sh", ".venv/bin/edgeops demo", "edgeops up", "edgeops down",
                    "edgeops pipeline run", "edgeops rollout start", "edgeops-agent run", "edgeops monitor run"):
        assert command in run, command
    for block in blocks:
        if block.skip is not None:
            assert block.skip, "a skipped block says why"
            assert any(c in block.code for c in MAY_SKIP), f"only known blocks may be skipped:\n{block.code}"


def test_readme_blocks_parse_fences_and_skip_markers() -> None:
    text = ("## Quickstart\nintro\n\n```bash\na --x\nb\n```\n\n<!-- readme-verbatim: skip: slow -->\n"
            "```bash\nc\n```\n```python\nnot = 'shell'\n```\n"
            "## Usage\n<!-- other -->\n```bash\nd \\\n  e\n```\n## Layout\n```bash\nf\n```\n")
    assert readme_blocks(text) == [Block("Quickstart", "a --x\nb\n", None), Block("Quickstart", "c\n", "slow"),
                                   Block("Usage", "d \\\n  e\n", None)]
    assert "a --x\nb\n" in script_of(readme_blocks(text)) and "\nc\n" not in script_of(readme_blocks(text))


def make_venv(clone: Path) -> None:
    """``clone/.venv`` as dev-setup.sh would leave it, from this environment's packages (see the docstring)."""
    venv = clone / ".venv"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True)  # type: ignore[attr-defined]
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    shared = Path(sysconfig.get_path("purelib"))
    # Plain path lines: .pth files of the shared site-packages (this checkout's editable install) are not read.
    (site / "_edgeops_clone.pth").write_text(f"{clone}\n{clone / 'src'}\n")
    (site / "shared_dependencies.pth").write_text(f"{shared}\n")
    scripts = dict(tomllib.loads((clone / "pyproject.toml").read_text())["project"]["scripts"])
    scripts.update({e.name: e.value for e in distribution("prefect").entry_points if e.group == "console_scripts"})
    for name, target in scripts.items():
        module, _, attr = target.partition(":")
        path = venv / "bin" / name
        path.write_text(f"#!{venv / 'bin' / 'python'}\nimport sys\nfrom {module} import {attr.split('.')[0]}\n"
                        f"if __name__ == '__main__':\n    sys.exit({attr}())\n")
        path.chmod(0o755)
    (venv / ".edgeops-installed").touch()  # newer than the clone's pyproject.toml: dev-setup.sh installs nothing


def fresh_env(home: Path) -> dict[str, str]:
    """A new user's shell: no venv on PATH, no Python path, no broker or Prefect settings, an empty HOME."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "EDGEOPS_MQTT_URL", "EDGEOPS_CONFIG")
           and not k.startswith("PREFECT_")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    env["HOME"] = str(home)
    return env


@pytest.fixture
def clone(tmp_path: Path) -> Iterator[Path]:
    """A fresh clone of HEAD with its .venv; afterwards nothing that mentions it may still run (what does is
    stopped, so a failing run leaks nothing, and fails the test)."""
    clone = tmp_path / "edgeops"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    make_venv(clone)
    yield clone
    left = processes_mentioning(str(clone))
    if left:
        subprocess.run(["edgeops", "down", "--grace", "5"], cwd=clone, env={**fresh_env(tmp_path / "home"),
                       "PATH": f"{clone / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"},
                       capture_output=True, timeout=120, check=False)
        for line in processes_mentioning(str(clone)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(line.split(":")[0]), signal.SIGKILL)
    assert left == [], f"left running: {left}"


def test_the_readme_quickstart_and_usage_run_verbatim_on_a_fresh_clone(clone: Path, tmp_path: Path) -> None:
    blocks = readme_blocks((clone / "README.md").read_text(encoding="utf-8"))
    home = tmp_path / "home"
    home.mkdir()
    log = tmp_path / "readme.log"
    with log.open("w") as out:
        shell = subprocess.Popen(["bash", "-c", script_of(blocks)], cwd=clone, env=fresh_env(home),
                                 stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        try:
            code = shell.wait(SCRIPT_TIMEOUT_S)
        finally:
            if shell.poll() is None:
                os.killpg(shell.pid, signal.SIGKILL)
                shell.wait()
    text = log.read_text(errors="replace")
    print(text[-20000:])
    assert code == 0, f"the README's commands failed (exit {code}):\n{text[-6000:]}"
    assert "LOOP CLOSED" in text
    assert re.search(r'"model":\s*"churn@2"', text), "the agent's answer names the version that served it"
    assert not (clone / ".edgeops" / "stack.json").exists()  # `edgeops down` forgot the stack
    assert not (home / ".prefect").exists(), sorted(p.name for p in (home / ".prefect").iterdir())

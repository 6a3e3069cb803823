"""A Prefect server of a test's own (`prefect server start` on a free port, its own PREFECT_HOME and SQLite) and
the environment for Prefect processes that talk to it: for tests that need what the in-process test harness
does not give, such as deployments, workers, served triggers and the `prefect` CLI."""

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from services import free_port

ROOT = Path(__file__).resolve().parents[1]
PREFECT = Path(sys.executable).with_name("prefect")
DEADLINE_S = 120.0


def prefect_env(home: Path, api_url: str | None) -> dict[str, str]:
    """This process's environment without its Prefect and broker settings, with this checkout's edgeops and flows
    on the path and the venv's scripts (``prefect``) first on PATH."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "EDGEOPS_")) or k.startswith("EDGEOPS_TEST_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PYTHONPATH=os.pathsep.join((str(ROOT / "src"), str(ROOT))),
               PATH=os.pathsep.join((str(PREFECT.parent), env.get("PATH", ""))),
               PREFECT_RUNNER_POLL_FREQUENCY="1", PREFECT_LOGGING_LEVEL="INFO")
    if api_url:
        env.update(PREFECT_API_URL=api_url, PREFECT_UI_API_URL=api_url)
    return env


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group we started (a runner's flow-run children too), then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def marked_commands(path: Path, marker: str) -> list[str]:
    """The command lines between ``<!-- {marker}: start -->`` and ``<!-- {marker}: end -->`` (an indented or a
    fenced block; the fences are not commands)."""
    text = path.read_text(encoding="utf-8")
    found = re.search(rf"<!-- {marker}: start -->\n(.*?)<!-- {marker}: end -->", text, re.S)
    assert found, f"{path.name} has no {marker} block"
    return [line.strip() for line in found.group(1).splitlines() if line.strip() and not line.startswith("```")]


def log_tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


@contextlib.contextmanager
def running_prefect_server(workdir: Path, database_url: str | None = None) -> Iterator[str]:
    """`prefect server start` on a free port; yields its API URL once /health answers. Its database is SQLite in
    its PREFECT_HOME, or ``database_url`` (``postgresql+asyncpg://...``, as a team runs it)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    log = workdir / "prefect-server.log"
    workdir.mkdir(parents=True, exist_ok=True)
    env = prefect_env(workdir / "prefect-home", None)
    env.update(PREFECT_UI_API_URL=url)
    if database_url:
        env.update(PREFECT_API_DATABASE_CONNECTION_URL=database_url)
    with log.open("wb") as out:
        proc = subprocess.Popen([str(PREFECT), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"prefect server did not become healthy:\n{log_tail(log)}")
            time.sleep(0.2)
        yield url
    finally:
        stop(proc)

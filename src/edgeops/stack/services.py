"""How each service of a local control plane is started: one way, for ``edgeops up`` and ``edgeops demo`` alike.

The broker is ``supervisor.start_mosquitto``; here are the Prefect server, the environment every process that
uses it gets, the telemetry ingest (``edgeops telemetry serve``) and the process serving deployments
(``flows/serve.py``). Every function spawns through a ``Supervisor``; whether the processes die with their
starter (the demo) or outlive it (``edgeops up``) is the supervisor's choice.
"""

import json
import os
import sys
from collections.abc import Mapping
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import httpx

from edgeops.errors import EdgeopsError
from edgeops.stack.supervisor import Child, Supervisor, free_port


def edgeops_argv() -> list[str]:
    script = Path(sys.executable).with_name("edgeops")
    return [str(script)] if script.exists() else [sys.executable, "-c", "from edgeops.cli import main; main()"]


def package_root() -> Path:
    """The directory holding the ``edgeops`` package in use (a checkout's src/, or site-packages): the served
    flows (``edgeops.flows``) of a child process must be this process's, not another installed copy's."""
    spec = find_spec("edgeops")
    if spec is None or spec.origin is None:
        raise EdgeopsError("the edgeops package is not importable")
    return Path(spec.origin).parents[1]


def api_healthy(api_url: str) -> bool:
    try:
        return httpx.get(f"{api_url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def ui_url(api_url: str) -> str:
    return api_url.removesuffix("/api")


def server_env(base: Mapping[str, str], home: Path, api_url: str) -> dict[str, str]:
    """Environment of our own server and of every process that uses it: its own PREFECT_HOME (so its own
    SQLite database and no profile of the user's), no analytics, the UI pointed at this API."""
    env = {k: v for k, v in base.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_API_URL=api_url, PREFECT_UI_API_URL=api_url,
               PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return env


def client_env(base: Mapping[str, str], api_url: str, broker_url: str, home: Path | None = None) -> dict[str, str]:
    """Environment of the processes that use the services: the Prefect API (with our server's home when it is
    ours; a server of the user's keeps the user's Prefect settings), the broker, the ``edgeops`` package in use."""
    env = server_env(base, home, api_url) if home is not None else dict(base)
    env.update(EDGEOPS_MQTT_URL=broker_url, PYTHONPATH=os.pathsep.join(
        p for p in (str(package_root()), base.get("PYTHONPATH", "")) if p))
    return env


def spawn_server(supervisor: Supervisor, home: Path, base_env: Mapping[str, str], port: int | None = None
                 ) -> tuple[Child, str]:
    """``prefect server start`` on ``port`` (default: a free one); not waited for, so the caller does other work
    while it boots (about 9 s on a fresh database here)."""
    port = port or free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    home.mkdir(parents=True, exist_ok=True)
    env = server_env(base_env, home, api_url)
    env.pop("PREFECT_API_URL")  # the server itself must not think it is a client of another server
    prefect = Path(sys.executable).with_name("prefect")
    argv = [str(prefect)] if prefect.exists() else [sys.executable, "-m", "prefect"]
    child = supervisor.spawn("prefect-server", [*argv, "server", "start", "--host", "127.0.0.1", "--port",
                                                str(port)], env=env)
    return child, api_url


def spawn_ingest(supervisor: Supervisor, env: Mapping[str, str], *, db_url: str, broker_url: str, prefix: str,
                 ready_file: Path, config: Path | None = None, flush_ms: int | None = None) -> Child:
    """``edgeops telemetry serve`` with Prefect events; it reports in ``ready_file`` once it is subscribed."""
    ready_file.unlink(missing_ok=True)
    argv = [*edgeops_argv(), "telemetry", "serve", "--db", db_url, "--broker", broker_url, "--prefix", prefix,
            "--events", "--ready-file", str(ready_file)]
    if config is not None:
        argv += ["--config", str(config)]
    if flush_ms is not None:
        argv += ["--flush-ms", str(flush_ms)]
    return supervisor.spawn("ingest", argv, env=env)


def ingest_subscribed(ready_file: Path, pid: int) -> bool:
    """Whether the ingest process ``pid`` says it is connected and subscribed (``telemetry serve --ready-file``)."""
    try:
        data = json.loads(ready_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("pid") == pid and data.get("subscribed") is True


def spawn_serving(supervisor: Supervisor, env: Mapping[str, str], module: str, spec: Any, cwd: Path,
                  name: str = "prefect-serve", poll_s: int = 1) -> Child:
    """A process serving deployments (``python -m edgeops.flows.serve`` or ``...serve_demo`` with a JSON ``spec``);
    it polls for runs every ``poll_s`` seconds (the demo: 1, to react at once; a long-lived stack: Prefect's 10)
    and runs each flow run as its own subprocess."""
    env = {**env, "PREFECT_RUNNER_POLL_FREQUENCY": str(poll_s), "PREFECT_LOGGING_LEVEL": "INFO"}
    return supervisor.spawn(name, [sys.executable, "-m", module, json.dumps(spec)], env=env, cwd=cwd)


def deployment_status(api_url: str, name: str) -> str | None:
    """The status Prefect gives deployment ``flow/deployment`` (``READY`` while a runner polls for its runs),
    or None when the server does not know it (or does not answer)."""
    flow, _, deployment = name.partition("/")
    try:
        response = httpx.get(f"{api_url}/deployments/name/{flow}/{deployment}", timeout=3)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    status = response.json().get("status")
    return str(status) if status else None


__all__ = [
    "api_healthy",
    "client_env",
    "deployment_status",
    "edgeops_argv",
    "ingest_subscribed",
    "package_root",
    "server_env",
    "spawn_ingest",
    "spawn_server",
    "spawn_serving",
    "ui_url",
]

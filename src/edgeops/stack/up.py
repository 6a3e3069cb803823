"""``edgeops up``: start the project's local control plane in the background, return once every service answers.

    broker (own Mosquitto on a free port, or the one the user named when it answers)
    Prefect server (SQLite under .edgeops/prefect/)   ─┐ spawned together; the ingest and the serving process
    edgeops telemetry serve (→ .edgeops/telemetry.db) ─┤ import their libraries while the server boots
    monitor deployment served on a schedule           ─┘

The processes outlive the command: each leads a session of its own, with no death signal tied to us, and logs
to ``.edgeops/stack/logs/``. The project remembers them in ``.edgeops/stack.json`` (state.py) as soon as they
are spawned, so ``edgeops down`` can stop them even when ``up`` itself is killed while it waits. An ``up`` that
fails (or is interrupted) stops what it started and forgets it. The ports are remembered across ``down``/``up``
(``.edgeops/stack/ports.json``) so agents configured with the broker's URL and a bookmarked UI keep working.
"""

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from edgeops.config import DEFAULT_FILE, MqttConfig, ProjectConfig, load_config
from edgeops.mqtt import broker_address
from edgeops.stack.down import tear_down
from edgeops.stack.probe import broker_problem, probe_stack
from edgeops.stack.services import (
    api_healthy,
    client_env,
    deployment_status,
    ingest_subscribed,
    spawn_ingest,
    spawn_server,
    spawn_serving,
)
from edgeops.stack.state import (
    BROKER,
    INGEST,
    MONITOR,
    PREFECT,
    Service,
    StackState,
    process_started,
    read_state,
    remove_state,
    write_state,
)
from edgeops.stack.supervisor import Child, ServiceError, Supervisor, mosquitto_binary, start_mosquitto

MONITOR_NAME = "local-monitor"
MONITOR_DEPLOYMENT = f"monitor/{MONITOR_NAME}"
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
Say = Callable[[str], None]


@dataclass(frozen=True)
class UpOptions:
    project: Path
    config: Path | None = None
    broker: str | None = None
    prefect_port: int | None = None
    monitor_every_s: float = 900.0
    timeout_s: float = 180.0


@dataclass(frozen=True)
class UpResult:
    state: StackState
    already_up: bool
    seconds: float


def stack_dir(project: Path) -> Path:
    return project / ".edgeops" / "stack"


@contextlib.contextmanager
def stack_lock(project: Path) -> Iterator[None]:
    """One ``up`` or ``down`` per project at a time; a second one is told so instead of racing the first."""
    path = stack_dir(project) / "lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ServiceError(f"another `edgeops up` or `edgeops down` is running for {project}") from None
        yield


def bring_up(options: UpOptions, say: Say) -> UpResult:
    """Start the stack, or find it running (``already_up``); a stack found partly down is restarted whole."""
    begin = time.monotonic()
    project = options.project.resolve()
    cfg = load_config(options.config)
    with stack_lock(project):
        current = read_state(project)
        if current is not None:
            statuses = probe_stack(current, cfg.mqtt)
            if all(s.ok for s in statuses):
                return UpResult(current, True, round(time.monotonic() - begin, 2))
            down = ", ".join(f"{s.name} ({s.detail})" for s in statuses if not s.ok)
            say(f"the stack is partly down: {down}; restarting it")
            tear_down(current)
            remove_state(project)
        state = start(project, cfg, options, say, begin)
    return UpResult(state, False, round(time.monotonic() - begin, 2))


def start(project: Path, cfg: ProjectConfig, options: UpOptions, say: Say, begin: float) -> StackState:
    work = stack_dir(project)
    ports = remembered_ports(work)
    deadline = begin + options.timeout_s
    supervisor = Supervisor(work / "logs", die_with_parent=False)
    written = False

    def left() -> float:
        return max(1.0, deadline - time.monotonic())

    def log(message: str) -> None:
        say(f"[{time.monotonic() - begin:5.1f}s] {message}")

    try:
        broker_url, own_broker, source = start_broker(supervisor, work, named_broker(options), ports.get("mqtt"),
                                                      cfg.mqtt)
        home = project / ".edgeops" / "prefect"
        server, api_url = spawn_server(supervisor, home, os.environ, options.prefect_port or
                                       usable_port(ports.get("prefect")))
        env = client_env(os.environ, api_url, broker_url, home)
        db_url = f"sqlite:///{project / '.edgeops' / 'telemetry.db'}"
        ready = work / "ingest.ready"
        config_file = options.config or (project / DEFAULT_FILE if (project / DEFAULT_FILE).is_file() else None)
        ingest = spawn_ingest(supervisor, env, db_url=db_url, broker_url=broker_url, prefix=cfg.mqtt.prefix,
                              ready_file=ready, config=config_file)
        root = cfg.registry.root   # an s3:// URL is passed on as it is
        registry_root = project / root if isinstance(root, Path) and not root.is_absolute() else root
        monitor = spawn_serving(supervisor, env, "edgeops.flows.serve", [monitor_spec(db_url, registry_root,
                                                                              options.monitor_every_s)],
                                project, name=MONITOR, poll_s=10)
        urls = {BROKER: broker_url, PREFECT: api_url, INGEST: db_url, MONITOR: f"{api_url.removesuffix('/api')}"
                "/deployments"}
        state = StackState(project=str(project), broker_url=broker_url, own_broker=own_broker,
                           prefect_api_url=api_url, prefect_home=str(home), telemetry_db=db_url,
                           monitor_deployment=MONITOR_DEPLOYMENT, ingest_ready_file=str(ready),
                           created=datetime.now(UTC).isoformat(timespec="seconds"),
                           services=tuple(service_of(c, urls.get(c.name)) for c in supervisor.children))
        write_state(project, state)
        written = True
        remember_ports(work, broker_url if own_broker else None, api_url)

        log(f"broker {broker_url} answers ({source})")
        supervisor.wait_until(server, lambda: api_healthy(api_url), left(), "healthy Prefect API")
        log(f"Prefect server answers: {api_url} (home {home})")
        supervisor.wait_until(ingest, lambda: ingest_subscribed(ready, ingest.pid), left(), "ingest subscription")
        log(f"telemetry ingest subscribed (→ {db_url})")
        supervisor.wait_until(monitor, lambda: deployment_status(api_url, MONITOR_DEPLOYMENT) == "READY", left(),
                              f"served deployment {MONITOR_DEPLOYMENT}")
        log(f"monitor deployment {MONITOR_DEPLOYMENT} served, every {options.monitor_every_s:g} s")
        supervisor.detach()
        return state
    except BaseException:
        supervisor.stop_all()
        if written:
            remove_state(project)
        raise


def monitor_spec(db_url: str, registry_root: Path | str, every_s: float) -> dict[str, Any]:
    return {"flow": "monitor", "name": MONITOR_NAME, "interval_s": every_s, "tags": ["edgeops", "monitoring"],
            "parameters": {"db": db_url, "registry_root": str(registry_root)},
            "description": "Drift and health from the stack's telemetry store (started by `edgeops up`)."}


def service_of(child: Child, url: str | None) -> Service:
    return Service(child.name, child.pid, process_started(child.pid), url, str(child.log))


def named_broker(options: UpOptions) -> tuple[str, str] | None:
    """The broker the user named, and where: --broker, $EDGEOPS_MQTT_URL, or mqtt.url written in the config
    file. The built-in default is not a choice: then the stack gets a broker of its own on a free port."""
    if options.broker:
        return options.broker, "--broker"
    if os.environ.get("EDGEOPS_MQTT_URL"):
        return os.environ["EDGEOPS_MQTT_URL"], "EDGEOPS_MQTT_URL"
    path = options.config or (DEFAULT_FILE if DEFAULT_FILE.is_file() else None)
    if path is not None:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}  # load_config has checked it
        url = (raw.get("mqtt") or {}).get("url")
        if url:
            return str(url), f"mqtt.url of {path}"
    return None


def start_broker(supervisor: Supervisor, work: Path, named: tuple[str, str] | None, port_hint: int | None,
                 mqtt: MqttConfig) -> tuple[str, bool, str]:
    """(URL, started by us?, how it was chosen): a named broker that answers is used as it is; a named local
    one that does not answer is started on its port; else our own Mosquitto on the remembered or a free port."""
    if named is None:
        port, source = usable_port(port_hint), "own Mosquitto"
    else:
        url, source = named
        problem = broker_problem(url, mqtt)
        if problem is None:
            return url, False, f"{source}; not started or stopped by the stack"
        address = broker_address(url)
        if address.tls or address.host not in LOOPBACK or mosquitto_binary() is None:
            raise ServiceError(f"the broker named by {source} does not answer: {problem}")
        port, source = address.port, f"own Mosquitto on the port of {source}"
    url = start_mosquitto(supervisor, work, port=port)
    supervisor.wait_until(supervisor.children[-1], lambda: broker_problem(url, timeout_s=1.0) is None, 15.0,
                          "CONNACK")
    return url, True, source


def usable_port(port: int | None) -> int | None:
    """``port`` when nothing listens on it (so it can be ours again), else None (a free one is taken). With
    SO_REUSEADDR, as Mosquitto and uvicorn bind: connections of the previous run in TIME_WAIT do not count."""
    if not port:
        return None
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return None
    return port


def remembered_ports(work: Path) -> dict[str, int]:
    try:
        data = json.loads((work / "ports.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, int)} if isinstance(data, dict) else {}


def remember_ports(work: Path, broker_url: str | None, api_url: str) -> None:
    ports = {"prefect": int(api_url.rsplit(":", 1)[1].split("/")[0])}
    if broker_url is not None:
        ports["mqtt"] = broker_address(broker_url).port
    (work / "ports.json").write_text(json.dumps(ports) + "\n", encoding="utf-8")


__all__ = ["MONITOR_DEPLOYMENT", "UpOptions", "UpResult", "bring_up", "stack_lock"]

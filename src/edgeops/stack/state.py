"""What the project remembers of its running stack (``.edgeops/stack.json``), and what every command takes from it.

Standard library only, and cheap (one small file, a few reads of /proc): ``edgeops`` reads it before it parses
its arguments, so a command run in the project talks to the stack's broker and Prefect server without flags and
without a temporary Prefect server of its own. ``EDGEOPS_MQTT_URL`` and ``PREFECT_API_URL`` set by the user win.

A pid alone does not name a process for good: the kernel hands pids out again. Each service is remembered with
the start time the kernel gives its process, so a pid that now belongs to another program is neither used nor
killed (``Service.running``).
"""

import json
import os
import sys
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from edgeops.errors import EdgeopsError
from edgeops.stack import STATE_FILE

SCHEMA = 1
BROKER, PREFECT, INGEST, MONITOR = "mosquitto", "prefect-server", "ingest", "monitor"
SELF_CONTAINED_COMMANDS = frozenset({"up", "down", "status", "demo"})
"""Commands that do not take the stack's addresses into their environment: the stack's own commands read the
file themselves (and must tell a user's ``EDGEOPS_MQTT_URL`` from the stack's), and the demo starts its own."""


class StackStateError(EdgeopsError):
    """The state file cannot be read: names the file and what to do."""


def process_started(pid: int) -> str | None:
    """When process ``pid`` started, in the kernel's clock ticks since boot; None when no such process runs
    (a zombie has finished running). Pid and start time together name one process for good."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None if Path("/proc/self").is_dir() else _ps_started(pid)
    fields_ = stat.rsplit(") ", 1)[-1].split()
    if len(fields_) < 20 or fields_[0] in ("Z", "X"):
        return None
    return fields_[19]


def _ps_started(pid: int) -> str | None:  # pragma: no cover - systems without /proc (macOS)
    import subprocess

    out = subprocess.run(["ps", "-o", "lstart=", "-p", str(pid)], capture_output=True, text=True, check=False)
    return " ".join(out.stdout.split()) or None


@dataclass(frozen=True)
class Service:
    """One process of the stack (``pid`` None: a broker the stack uses but did not start)."""

    name: str
    pid: int | None = None
    started: str | None = None
    url: str | None = None
    log: str | None = None

    def running(self) -> bool:
        """The very process the stack started is still running (not a later process with the same pid)."""
        return self.pid is not None and self.started is not None and process_started(self.pid) == self.started


@dataclass(frozen=True)
class StackState:
    project: str
    broker_url: str
    own_broker: bool
    prefect_api_url: str
    prefect_home: str
    telemetry_db: str
    monitor_deployment: str
    ingest_ready_file: str
    created: str
    services: tuple[Service, ...] = field(default_factory=tuple)
    schema: int = SCHEMA

    @property
    def ui_url(self) -> str:
        return self.prefect_api_url.removesuffix("/api")

    def service(self, name: str) -> Service | None:
        return next((s for s in self.services if s.name == name), None)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["services"] = [asdict(s) for s in self.services]
        return data

    @classmethod
    def from_json(cls, data: Any) -> "StackState":
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise ValueError(f"not a stack state of schema {SCHEMA}")
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["services"] = tuple(Service(**s) for s in data.get("services", []))
        return cls(**values)


def state_path(project: Path) -> Path:
    return project / STATE_FILE


def read_state(project: Path) -> StackState | None:
    """The stack remembered in ``project`` (None when there is none)."""
    path = state_path(project)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StackStateError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return StackState.from_json(json.loads(text))
    except (ValueError, TypeError, KeyError) as exc:
        raise StackStateError(f"{path} is not a stack state file ({exc}); remove it if no stack of this "
                              "project runs") from exc


def write_state(project: Path, state: StackState) -> Path:
    """Replace the state file atomically (a reader never sees half a file)."""
    path = state_path(project)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state.to_json(), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def remove_state(project: Path) -> None:
    state_path(project).unlink(missing_ok=True)


def stack_environment(state: StackState, environ: Mapping[str, str]) -> dict[str, str]:
    """The variables a command in the project takes from the stack: the broker and the Prefect API (with the
    stack's PREFECT_HOME, so nothing goes to ~/.prefect), each only while the stack's service runs and only
    when the user has not set the variable."""
    env: dict[str, str] = {}
    broker = state.service(BROKER)
    if not environ.get("EDGEOPS_MQTT_URL") and (not state.own_broker or (broker is not None and broker.running())):
        env["EDGEOPS_MQTT_URL"] = state.broker_url
    server = state.service(PREFECT)
    if not environ.get("PREFECT_API_URL") and server is not None and server.running():
        env["PREFECT_API_URL"] = state.prefect_api_url
        if not environ.get("PREFECT_HOME"):
            env["PREFECT_HOME"] = state.prefect_home
    return env


def adopt_stack(argv: Sequence[str], environ: MutableMapping[str, str] | None = None,
                project: Path | None = None) -> StackState | None:
    """Put the running stack's addresses into ``environ`` (default: this process's) for the command in
    ``argv``; the stack, or None when there is none (or the command is one of SELF_CONTAINED_COMMANDS)."""
    if argv and argv[0] in SELF_CONTAINED_COMMANDS:
        return None
    target = os.environ if environ is None else environ
    try:
        state = read_state(project or Path.cwd())
    except StackStateError as exc:
        print(f"edgeops: warning: {exc}", file=sys.stderr)
        return None
    if state is None:
        return None
    update = stack_environment(state, target)
    server = state.service(PREFECT)
    if not target.get("PREFECT_API_URL") and "PREFECT_API_URL" not in update and server is not None:
        print("edgeops: warning: the local stack (.edgeops/stack.json) is not running; `edgeops status` shows "
              "what stopped, `edgeops up` starts it again", file=sys.stderr)
    target.update(update)
    return state


__all__ = ["BROKER", "INGEST", "MONITOR", "PREFECT", "SELF_CONTAINED_COMMANDS", "STATE_FILE", "Service",
           "StackState", "StackStateError", "adopt_stack", "process_started", "read_state", "remove_state",
           "stack_environment", "state_path", "write_state"]

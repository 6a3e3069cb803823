"""Child processes of a local stack (``edgeops demo``): start them, watch them, and stop every one of them.

Why a class of its own: a demo that starts a broker, a Prefect server, a serving process and a few agents
must never leave one of them behind — not on success, not on an error, not on Ctrl-C. So:

* every child starts in a **session of its own** (``start_new_session``): a Ctrl-C in the terminal reaches
  only us, and we stop the children in a known order; stopping signals the child's whole *process group*,
  which also reaches what the child started itself (the Prefect runner's flow-run subprocesses, uvicorn);
* on Linux every child gets ``PR_SET_PDEATHSIG`` = SIGTERM: if we are killed with SIGKILL, the kernel still
  tells the children to stop (``die_with_parent=False`` for services meant to outlive us: ``edgeops up``
  detaches them and ``edgeops down`` stops them by process group, with ``stop_groups``);
* ``stop_all`` stops children in reverse start order (agents before the broker they publish their last
  state to), SIGTERM first, SIGKILL after a grace period.

All children are started from the thread that owns the supervisor: the death signal is tied to the thread
that forked the child, not to the process.
"""

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from edgeops.errors import EdgeopsError

PR_SET_PDEATHSIG = 1
MOSQUITTO_CANDIDATES = ("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


class ServiceError(EdgeopsError):
    """A local service did not start (or died): names it and the tail of its log."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel just handed out (racy in theory; the service's own bind error would say so)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        if not self.log.exists():
            return "(no log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class Supervisor:
    """The children of one run; a context manager that stops them all on exit."""

    def __init__(self, log_dir: Path, grace_s: float = 15.0, infra: tuple[str, ...] = ("mosquitto", "prefect-server"),
                 *, die_with_parent: bool = True) -> None:
        self.log_dir = Path(log_dir)
        self.grace_s = grace_s
        self.infra = infra
        self.die_with_parent = die_with_parent and sys.platform == "linux"
        self.children: list[Child] = []

    def __enter__(self) -> "Supervisor":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop_all()

    def spawn(self, name: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
              cwd: Path | None = None) -> Child:
        """Start ``argv`` with stdout+stderr going to ``<log_dir>/<name>.log``."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        with log.open("ab") as out:
            try:
                proc = subprocess.Popen(list(argv), env=dict(env) if env is not None else None, cwd=cwd,
                                        stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True,
                                        preexec_fn=_die_with_parent if self.die_with_parent else None)
            except OSError as exc:
                raise ServiceError(f"cannot start {name} ({argv[0]}): {exc.strerror or exc}") from exc
        child = Child(name, proc, log)
        self.children.append(child)
        return child

    def wait_until(self, child: Child, ready: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Poll ``ready`` until true; a child that exits or a timeout is a ServiceError with its log tail."""
        deadline = time.monotonic() + timeout_s
        while not ready():
            if not child.alive():
                raise ServiceError(f"{child.name} exited (code {child.proc.returncode}) before {what}; "
                                   f"log {child.log}:\n{child.log_tail()}")
            if time.monotonic() > deadline:
                raise ServiceError(f"{child.name}: no {what} after {timeout_s:.0f} s; log {child.log}:\n"
                                   f"{child.log_tail()}")
            time.sleep(0.2)

    def dead(self) -> list[Child]:
        return [c for c in self.children if not c.alive()]

    def stop(self, *children: Child) -> None:
        """Stop each child's whole process group (``stop_groups``), then reap the children."""
        stop_groups([child.pid for child in children], self.grace_s)
        for child in children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.proc.wait(5)

    def stop_all(self) -> None:
        """Stop the clients first, all together, then the services they talk to (``infra``: broker, Prefect
        server) in reverse start order, so agents can still say goodbye. Safe to call twice."""
        clients = [c for c in reversed(self.children) if c.name not in self.infra]
        self.stop(*clients)
        for child in reversed(self.children):
            if child.name in self.infra:
                self.stop(child)
        self.children.clear()

    def detach(self) -> list[Child]:
        """Let the children run on after we exit (nothing stops them on exit any more); what was running."""
        children, self.children = self.children, []
        return children


def stop_groups(pgids: Sequence[int], grace_s: float, poll_s: float = 0.1) -> list[int]:
    """SIGTERM to every process group (all at once, so they shut down in parallel), SIGKILL to what is left of
    a group after ``grace_s`` (the leader, or grandchildren that outlived it); the groups still alive after
    that (none, unless a process is stuck in the kernel). Works on any group, not only on our children."""
    for pgid in pgids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    left = [pgid for pgid in pgids if group_alive(pgid)]
    while left and time.monotonic() < deadline:
        time.sleep(poll_s)
        left = [pgid for pgid in left if group_alive(pgid)]
    for pgid in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while left and time.monotonic() < deadline:
        time.sleep(poll_s)
        left = [pgid for pgid in left if group_alive(pgid)]
    return left


def group_alive(pid: int) -> bool:
    """Whether a process of the process group ``pid`` still runs (children started by ``spawn`` lead their
    own group, so this covers what they started too). Zombies do not count: an orphan that already exited
    waits for PID 1 to reap it, and in a container PID 1 may never do so."""
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(") ", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pid and fields[0] != "Z":
                return True
    return False


def mosquitto_binary() -> str | None:
    for candidate in MOSQUITTO_CANDIDATES:
        path = shutil.which(candidate)
        if path:
            return path
    return None


def start_mosquitto(supervisor: Supervisor, work: Path, timeout_s: float = 15.0, port: int | None = None) -> str:
    """Mosquitto on ``port`` (default: a free one) of 127.0.0.1 (anonymous, no persistence: a local broker
    whose retained state goes with it)."""
    binary = mosquitto_binary()
    if binary is None:
        raise ServiceError("the mosquitto binary is missing: install it (apt-get install mosquitto, "
                           "brew install mosquitto) or set EDGEOPS_MQTT_URL to a running broker")
    port = port or free_port()
    conf = work / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\n"
                    "max_queued_messages 100000\nset_tcp_nodelay true\n")
    child = supervisor.spawn("mosquitto", [binary, "-c", str(conf)])
    supervisor.wait_until(child, lambda: port_open("127.0.0.1", port), timeout_s, "listening port")
    return f"mqtt://127.0.0.1:{port}"


__all__ = ["Child", "ServiceError", "Supervisor", "free_port", "group_alive", "mosquitto_binary", "port_open",
           "start_mosquitto", "stop_groups"]

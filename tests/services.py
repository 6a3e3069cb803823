"""Real services for tests: Mosquitto brokers (the machine's, or our own on a free port) and PostgreSQL.

A service a test needs but cannot reach fails the test (never skips): CI must prove the real thing.
"""

import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

MOSQUITTO_CANDIDATES = ("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def free_port() -> int:
    """A port the kernel just handed out; racy in theory, but never a hard-coded one."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def wait_until(predicate: Callable[[], object], timeout: float) -> bool:
    """Poll ``predicate`` every 50 ms until it holds or ``timeout`` seconds passed; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port, 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout}s")


def mosquitto_binary() -> str:
    for candidate in MOSQUITTO_CANDIDATES:
        path = shutil.which(candidate)
        if path:
            return path
    raise RuntimeError("the mosquitto binary is missing: apt-get install mosquitto (.ci/run does this)")


@dataclass
class Mosquitto:
    """A Mosquitto process of our own on a free port, with its own config; it can be killed and restarted
    on the same port (persistence on, so retained messages and persistent sessions survive a restart)."""

    workdir: Path
    extra_config: str = ""
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def config_path(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} {self.host}\n"
            f"persistence true\npersistence_location {self.workdir}/\n"
            f"log_dest file {self.workdir}/mosquitto.log\n"
            "max_queued_messages 100000\n"
            + ("" if "allow_anonymous" in self.extra_config else "allow_anonymous true\n")
            # Started as root, Mosquitto drops to user `mosquitto`, which cannot write its persistence file in
            # a root-owned temp dir: sessions would then silently vanish across a restart.
            + ("user root\n" if os.geteuid() == 0 and "\nuser " not in "\n" + self.extra_config else "")
            + self.extra_config
        )
        return conf

    def start(self) -> "Mosquitto":
        self.proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(self.config_path())],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        try:
            wait_port(self.host, self.port)
        except RuntimeError:
            self.stop()
            raise RuntimeError(f"mosquitto did not start: {self.log()[-2000:]}") from None
        return self

    def stop(self, *, kill: bool = False) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None

    def restart(self, *, down_for: float = 0.0, kill: bool = True) -> None:
        self.stop(kill=kill)
        time.sleep(down_for)
        self.start()

    def log(self) -> str:
        path = self.workdir / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextlib.contextmanager
def running_mosquitto(workdir: Path, extra_config: str = "") -> Iterator[Mosquitto]:
    broker = Mosquitto(workdir, extra_config).start()
    try:
        yield broker
    finally:
        broker.stop()


def machine_broker_url() -> str | None:
    """The broker from EDGEOPS_TEST_MQTT_URL, else the machine's Mosquitto on 127.0.0.1:1883 if it answers."""
    url = os.environ.get("EDGEOPS_TEST_MQTT_URL")
    if url:
        return url
    return "mqtt://127.0.0.1:1883" if port_open("127.0.0.1", 1883) else None


def unique_prefix() -> str:
    """Topic prefix unique to one test, so tests can share a broker and run side by side."""
    return f"edgeops-test/{uuid.uuid4().hex[:12]}"


def processes_mentioning(text: str) -> list[str]:
    """Live processes whose command line or environment names ``text`` (a test's work dir): every process a
    local stack starts has it in one of them (configs, PREFECT_HOME, the telemetry db URL). This process and its
    ancestors do not count (the test itself), nor do zombies: they have exited, and PID 1 of a container may
    never reap the orphans among them. (Not "anything with pytest in its command line": the work dir is under
    /tmp/pytest-of-<user>/, so that would overlook every process that names it.)"""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) in _this_process_and_ancestors():
            continue
        with contextlib.suppress(OSError, IndexError):
            if (proc / "stat").read_text().rsplit(") ", 1)[1].startswith("Z"):
                continue
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if text in cmdline or text in (proc / "environ").read_bytes().decode(errors="replace"):
                found.append(f"{proc.name}: {cmdline[:160]}")
    return found


def _this_process_and_ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
    return pids


POSTGRES_URL = os.environ.get("EDGEOPS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@contextlib.contextmanager
def postgres_database(prefix: str = "edgeops_test") -> Iterator[str]:
    """A fresh database on the machine's PostgreSQL (POSTGRES_URL's server); its URL, with POSTGRES_URL's driver.
    Dropped afterwards even if a connection is left open. PostgreSQL that does not answer fails the test."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def clear_retained(url: str, topics: list[str]) -> None:
    """Clear retained topics a test left on a shared broker (an empty retained payload deletes them)."""
    import paho.mqtt.client as mqtt

    host, port = url.split("://", 1)[1].rsplit(":", 1)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.connect(host, int(port))
    client.loop_start()
    for topic in topics:
        client.publish(topic, b"", qos=1, retain=True).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()

"""Real ``edgeops-agent`` processes for e2e tests: start, stop (SIGTERM), kill (SIGKILL), freeze (SIGSTOP) and
thaw (SIGCONT) one, and start it again on the same data directory, as a device that reboots would."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from edge_agent.protocol import Topics
from edgeops.mqtt import ControlClient
from edgeops.rollout.fleet import DeviceView, read_fleet

ROOT = Path(__file__).resolve().parents[1]
FleetCheck = Callable[[dict[str, DeviceView]], bool]


@dataclass
class AgentProcess:
    """One agent: its config file stays, so ``start`` after ``stop``/``kill`` is the same device coming back."""

    device: str
    config: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.config.parent / "log"

    def start(self) -> "AgentProcess":
        assert not self.running, f"{self.device} is already running"
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge_agent", "run", "--config", str(self.config), "--log-level", "WARNING"],
                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err,
                env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONFAULTHANDLER": "1"})
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def freeze(self) -> None:
        """SIGSTOP: the TCP session stays up, so the broker (and the fleet view) still sees the device online,
        but it acts on nothing until ``thaw``: a device that hangs."""
        assert self.proc is not None and self.running
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGCONT)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (a clean shutdown: the agent says it goes offline); SIGKILL when it does not exit in time."""
        if self.proc is None:
            return
        self.thaw()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout)
        if self.proc.poll() is None:  # hung: SIGABRT makes faulthandler write every thread's stack to the log
            self.proc.send_signal(signal.SIGABRT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        self.kill()

    def kill(self) -> None:
        """SIGKILL (power loss): the broker publishes the agent's Last Will (offline)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()


def spawn_agent(tmp: Path, url: str, prefix: str, device: str, key_file: Path, labels: Mapping[str, str],
                **settings: float | int) -> AgentProcess:
    """Write ``tmp/device/agent.toml`` (fast probation, fast reconnects, no telemetry timer) and start the
    agent; ``settings`` override agent config keys (e.g. ``keepalive_s``)."""
    home = tmp / device
    home.mkdir()
    values: dict[str, float | int] = {"probation_s": 0.3, "probation_min_predictions": 0, "fetch_timeout_s": 20.0,
                                      "reconnect_max_s": 0.5, "telemetry_interval_s": 3600.0, **settings}
    config = home / "agent.toml"
    config.write_text(
        f'device_id = "{device}"\ndata_dir = "{home / "data"}"\nbroker_url = "{url}"\n'
        f'public_keys = ["{key_file}"]\ntopic_prefix = "{prefix}"\n'
        + "".join(f"{k} = {v!r}\n" for k, v in values.items())
        + "[labels]\n" + "".join(f'{k} = "{v}"\n' for k, v in labels.items()))
    return AgentProcess(device, config).start()


def stop_all(agents: Iterable[AgentProcess]) -> None:
    agents = list(agents)
    for agent in agents:  # SIGTERM them all first: they shut down in parallel
        agent.thaw()
        if agent.running:
            assert agent.proc is not None
            agent.proc.send_signal(signal.SIGTERM)
    for agent in agents:
        agent.stop()


def wait_fleet(client: ControlClient, topics: Topics, what: str, ok: FleetCheck, agents: Iterable[AgentProcess] = (),
               timeout: float = 60.0) -> dict[str, DeviceView]:
    """Poll the fleet view (retained reported/status) until ``ok`` holds; fail early when one of ``agents``
    (those that should be running) exited, and show the fleet when the time is up."""
    agents = list(agents)
    deadline = time.monotonic() + timeout
    while True:
        fleet = {d.device: d for d in read_fleet(client, topics).devices}
        if ok(fleet):
            return fleet
        dead = [a.device for a in agents if a.proc is not None and a.proc.poll() is not None]
        assert not dead, f"agents exited: {dead}; log: {agents[0].log.parent.parent}"
        if time.monotonic() > deadline:
            shown = {d: (v.release, v.state, v.presence, v.desired_version) for d, v in sorted(fleet.items())}
            raise AssertionError(f"timed out waiting for {what}: {shown}")
        time.sleep(0.2)

"""What the demo's frame (run.py) and its steps (loop.py) share: options, result, the deadline clock, and the
project, agents and data the demo makes. Both import it; neither imports the other back."""

import os
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import yaml

from edgeops.errors import EdgeopsError
from edgeops.stack.supervisor import Supervisor, start_mosquitto

MODEL, TARGET = "churn", "churned"
_T = TypeVar("_T")
LABELS = {"fleet": "demo"}
ROLLOUT_POLICY = {"canary": "34%", "waves": 1, "max_failure": "5%", "device_timeout_s": 60}
Say = Callable[[str], None]


class DemoTimeout(EdgeopsError):
    """The loop did not close in time; the message names the step it was waiting for."""


@dataclass(frozen=True)
class DemoOptions:
    work_dir: Path = Path(".edgeops/demo")
    agents: int = 3
    timeout_s: float = 240.0
    shift_feature: str = "monthly charges"
    shift_factor: float = 3.0
    baseline_samples: int = 1500
    """Fleet-wide predictions before the shift: above the drift statistics' 1000-sample floor, so the first
    monitor run gives a verdict (no drift) instead of "insufficient data"."""
    telemetry_interval_s: float = 1.0
    rows: int = 2000


@dataclass
class DemoResult:
    closed: bool = False
    reason: str = ""
    work_dir: str = ""
    broker_url: str = ""
    prefect_ui: str = ""
    drift_feature: str | None = None
    drift: dict[str, Any] = field(default_factory=dict)
    drift_report: list[str] = field(default_factory=list)
    version_before: int | None = None
    version_after: int | None = None
    champion: int | None = None
    devices: dict[str, int | None] = field(default_factory=dict)
    retrain_run: str | None = None
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    pids: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Clock:
    """Elapsed time, the overall deadline, and named milestones for the summary."""

    def __init__(self, timeout_s: float) -> None:
        self.start = time.monotonic()
        self.deadline = self.start + timeout_s
        self.timeout_s = timeout_s
        self.marks: dict[str, float] = {}

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def mark(self, name: str) -> None:
        self.marks[name] = round(self.elapsed(), 2)

    def check(self, waiting_for: str) -> None:
        if time.monotonic() > self.deadline:
            raise DemoTimeout(f"the loop did not close within {self.timeout_s:.0f} s (waiting for {waiting_for})")

    def wait(self, what: str, ready: Callable[[], _T | None], poll_s: float = 0.5) -> _T:
        while True:
            value = ready()
            if value:
                return value
            self.check(what)
            time.sleep(poll_s)


def write_project(work: Path, broker_url: str, prefix: str) -> Path:
    config = work / "edgeops.yaml"
    config.write_text(yaml.safe_dump({"name": MODEL, "data": {"target": TARGET},
                                      "mqtt": {"url": broker_url, "prefix": prefix}}, sort_keys=False))
    return config


def shifted(frame: Any, feature: str, factor: float) -> Any:
    out = frame.copy()
    out[feature] = out[feature] * factor
    return out


def agent_argv(config: Path) -> list[str]:
    script = Path(sys.executable).with_name("edgeops-agent")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "edge_agent"]
    return [*base, "run", "--config", str(config), "--log-level", "WARNING"]


def agent_config(home: Path, device: str, broker_url: str, prefix: str, public_key: Path, http_port: int,
                 interval_s: float) -> Path:
    """Short telemetry interval and probation so the demo moves at a watchable pace. The latency factor is
    generous: on a small shared machine the first calls of a fresh ONNX session are slow."""
    home.mkdir(parents=True, exist_ok=True)
    labels = "".join(f'{k} = "{v}"\n' for k, v in LABELS.items())
    config = home / "agent.toml"
    config.write_text(
        f'device_id = "{device}"\ndata_dir = "{home / "data"}"\nbroker_url = "{broker_url}"\n'
        f'public_keys = ["{public_key}"]\ntopic_prefix = "{prefix}"\nhttp = "127.0.0.1:{http_port}"\n'
        f"telemetry_interval_s = {interval_s}\nprobation_s = 2.0\nprobation_min_predictions = 0\n"
        "probation_max_latency_factor = 20.0\nreconnect_max_s = 1.0\nfetch_timeout_s = 30.0\n"
        f"[labels]\n{labels}")
    return config


def samples_stored(db_url: str, version: int) -> int:
    from edgeops.telemetry.store import TelemetryStore

    store = TelemetryStore(db_url)
    try:
        return sum(w.count for w in store.windows(model=MODEL, version=version))
    finally:
        store.close()


def new_prefix(external_broker: bool) -> str:
    """A broker of our own gets the default prefix; a shared one a unique prefix we can clean up after."""
    return f"edgeops-demo-{secrets.token_hex(4)}" if external_broker else "edgeops"


def start_broker(supervisor: Supervisor, work: Path) -> tuple[str, bool]:
    """$EDGEOPS_MQTT_URL when set (external), else our own Mosquitto."""
    url = os.environ.get("EDGEOPS_MQTT_URL")
    if url:
        return url, True
    return start_mosquitto(supervisor, work), False


def utc_now() -> datetime:
    return datetime.now(UTC)


__all__ = ["LABELS", "MODEL", "ROLLOUT_POLICY", "TARGET", "Clock", "DemoOptions", "DemoResult", "DemoTimeout", "Say",
           "agent_argv", "agent_config", "new_prefix", "samples_stored", "shifted", "start_broker", "utc_now",
           "write_project"]

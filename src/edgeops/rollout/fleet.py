"""The fleet view: who is out there, what they run, and whether they are online — read from the retained
``reported`` and ``status`` messages, so it needs no database and is current the moment it is read.

``build_fleet`` is pure (topic → payload in, rows out) for tests; ``read_fleet`` gathers the retained
messages from a broker. A malformed message never hides the rest of the fleet: it becomes a ``problem``.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any, TypeVar

from edge_agent.protocol import ProtocolError, Reported, Status, Topics, parse_label
from edgeops.errors import EdgeopsError
from edgeops.mqtt import ControlClient

_M = TypeVar("_M", Reported, Status)


@dataclass(frozen=True)
class DeviceView:
    """One device as its retained ``reported`` and ``status`` messages describe it."""

    device: str
    labels: dict[str, str] = field(default_factory=dict)
    model: str | None = None
    version: int | None = None
    state: str | None = None
    online: bool | None = None
    last_seen: str | None = None
    last_error: str | None = None
    desired_version: int | None = None
    rollout_id: str | None = None
    agent_version: str = ""

    @property
    def release(self) -> str:
        if self.model is None:
            return "-"
        return self.model if self.version is None else f"{self.model}@{self.version}"

    @property
    def presence(self) -> str:
        return {True: "online", False: "offline", None: "unknown"}[self.online]

    def to_json(self) -> dict[str, Any]:
        return {"device": self.device, "labels": self.labels, "model": self.model, "version": self.version,
                "state": self.state, "online": self.online, "last_seen": self.last_seen,
                "last_error": self.last_error, "desired_version": self.desired_version,
                "rollout_id": self.rollout_id, "agent_version": self.agent_version}


@dataclass(frozen=True)
class FleetSnapshot:
    """Every device under the prefix, and the messages that could not be read."""

    devices: list[DeviceView]
    problems: list[str] = field(default_factory=list)

    def select(self, selector: Mapping[str, str]) -> list[DeviceView]:
        return [d for d in self.devices if matches(d.labels, selector)]


def parse_selector(items: Iterable[str]) -> dict[str, str]:
    """``["site=berlin", "line=2"]`` (or ``"site=berlin,line=2"`` in one item) → labels that must all match."""
    selector: dict[str, str] = {}
    for item in items:
        for part in filter(None, (p.strip() for p in item.split(","))):
            try:
                key, value = parse_label(part)
            except ProtocolError as exc:
                raise EdgeopsError(f"bad target {part!r}: {exc.reason}") from exc
            if selector.get(key, value) != value:
                raise EdgeopsError(f"target gives two values for label {key!r}")
            selector[key] = value
    return selector


def matches(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _later(a: str | None, b: str | None) -> str | None:
    """The later of two ISO timestamps (either may be missing or unparseable)."""
    def parse(ts: str | None) -> datetime | None:
        try:
            return datetime.fromisoformat(ts.replace("Z", "+00:00")) if ts else None
        except ValueError:
            return None
    pa, pb = parse(a), parse(b)
    if pa is None or pb is None:
        return a if pa is not None else b if pb is not None else None
    return a if pa >= pb else b


def build_fleet(retained: Mapping[str, bytes], topics: Topics) -> FleetSnapshot:
    """Fleet rows from retained ``reported``/``status`` payloads keyed by topic."""
    reported: dict[str, Reported] = {}
    status: dict[str, Status] = {}
    problems: list[str] = []
    for topic, payload in sorted(retained.items()):
        try:
            device, channel = topics.parse_device_topic(topic)
            if channel == "reported":
                reported[device] = parse_state(Reported, device, payload)
            elif channel == "status":
                status[device] = parse_state(Status, device, payload)
        except ProtocolError as exc:
            problems.append(f"{topic}: {exc}")
    rows = []
    for device in sorted(set(reported) | set(status)):
        rep, st = reported.get(device), status.get(device)
        rows.append(DeviceView(
            device=device, labels=rep.labels if rep else {}, model=rep.model if rep else None,
            version=rep.version if rep else None, state=rep.state if rep else None,
            online=None if st is None else st.status == "online",
            last_seen=_later(rep.ts if rep else None, st.ts if st else None),
            last_error=rep.last_error if rep else None, desired_version=rep.desired_version if rep else None,
            rollout_id=rep.rollout_id if rep else None, agent_version=rep.agent_version if rep else ""))
    return FleetSnapshot(rows, problems)


def parse_state(kind: type[_M], device: str, payload: bytes) -> _M:
    """A device's retained ``reported`` or ``status`` payload, parsed; ProtocolError when malformed or when it
    names another device than its topic does (a device may only speak for itself).

    Parsed once per distinct payload: a rollout reads the fleet's retained state to plan, and its controller
    then reads the same messages again (the control client hands them on); the bytes are immutable and
    parsing is pure, so the second reading costs a lookup instead of thousands of parses."""
    message: _M = _parse(kind, payload)  # type: ignore[arg-type]  # classes are Hashable (python/mypy#11470)
    if message.device != device:
        raise ProtocolError(f"message names device {message.device!r} on the topic of {device!r}", field="device")
    return message


@lru_cache(maxsize=16384)  # about one entry per device; ~1 KB each
def _parse(kind: type[_M], payload: bytes) -> _M:
    message: _M = kind.parse(payload)   # parse() is typed Any for every message class
    return message


def read_fleet(client: ControlClient, topics: Topics) -> FleetSnapshot:
    """The fleet as the broker's retained messages describe it now."""
    retained = client.collect_retained(topics.all_devices("reported"), topics.all_devices("status"),
                                       sync_root=topics.prefix)
    return build_fleet(retained, topics)

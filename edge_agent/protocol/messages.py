"""Device-channel messages. Each carries ``schema``, ``device`` and ``ts`` (UTC ISO-8601)."""

import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, ClassVar, Literal

from .canonical import canonical_json, parse_json
from .errors import ProtocolError
from .fields import optional, require
from .names import check_labels, check_name, check_version
from .schema import DESIRED, EVENT, REPORTED, STATUS, check_schema, tag
from .signature import Signature

LIFECYCLE_STATES = ("idle", "serving", "fetching", "verifying", "self_testing", "activating",
                    "probation", "rejected", "rolled_back")
EVENT_KINDS = ("installed", "rejected", "rolled_back")
TRANSIENT_STATES = frozenset({"fetching", "verifying", "self_testing", "activating"})
"""States an update passes through on its way to a settled one (serving, probation, rejected, rolled_back,
idle). See ``Reported.qos``."""


_second: tuple[int, str] = (-1, "")  # the last whole second formatted, and its text


def now_iso() -> str:
    return iso_ms(time.time())


def iso_ms(unix_s: float) -> str:
    """``unix_s`` as UTC ``2026-11-27T18:01:54.123Z`` (milliseconds truncated, as ``isoformat`` does). Every
    message carries one, so the date and time of day are formatted once per second and only the milliseconds
    per call: ``datetime.now(UTC).isoformat`` costs ~4 µs, a fifth of building and encoding a whole report."""
    global _second
    second, micros = divmod(round(unix_s * 1_000_000), 1_000_000)
    cached = _second
    if cached[0] != second:  # threads racing here both format the same second: harmless
        cached = _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{cached[1]}.{micros // 1000:03d}Z"


def _envelope(schema: str, device: str, ts: str) -> dict[str, Any]:
    return {"schema": tag(schema), "device": device, "ts": ts}


def _common(obj: dict[str, Any], schema: str) -> tuple[str, str]:
    check_schema(obj, schema)
    return check_name(require(obj, "device", str), "device"), require(obj, "ts", str)


class _Message:
    SCHEMA: ClassVar[str]

    def to_json(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Any:
        raise NotImplementedError

    @classmethod
    def parse(cls, payload: bytes | str) -> Any:
        """Parse untrusted bytes; ProtocolError names what is wrong."""
        return cls.from_json(parse_json(payload))


MAX_COUNTER = 2**63 - 1


def parse_instant(text: str, field: str) -> float:
    """A UTC ISO-8601 instant (``2026-12-06T04:42:50.123Z``, as ``now_iso`` writes) as Unix seconds. An instant
    without a zone is refused: read as local time it would move an expiry by hours on a device in another zone."""
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        raise ProtocolError(f"{text[:40]!r} is not an ISO-8601 instant", field=field) from None
    if instant.tzinfo is None:
        raise ProtocolError(f"{text[:40]!r} has no time zone (write UTC with a Z)", field=field)
    return instant.timestamp()


@dataclass(frozen=True)
class Desired(_Message):
    """What a device should run, signed by the control plane (1.1).

    ``model`` and ``version`` both null is an explicit *clear* ("keep serving what runs"), which the control
    plane signs like any other desired state (an empty retained payload still means the same, unsigned).
    ``counter`` grows with every desired state the control plane signs for this device, ``expires`` is the
    instant after which a device no longer acts on it, and ``signature`` is Ed25519 over the canonical JSON of
    the message without its ``signature`` member (as for manifests). A 1.0 sender wrote none of the three;
    whether an agent accepts such a message is its policy (``desired_signatures``), not the parser's.
    """

    SCHEMA: ClassVar[str] = DESIRED
    device: str
    model: str | None
    version: int | None
    rollout_id: str | None = None
    counter: int | None = None
    expires: str | None = None
    signature: Signature | None = None
    ts: str = field(default_factory=now_iso)

    def __post_init__(self) -> None:
        if (self.model is None) != (self.version is None):
            raise ProtocolError("model and version are both set, or both null (a clear)", field="model")

    @property
    def clears(self) -> bool:
        """An explicit clear: the device keeps serving what it runs."""
        return self.model is None

    @property
    def expires_at(self) -> float | None:
        """``expires`` as Unix seconds (checked when parsed)."""
        return None if self.expires is None else parse_instant(self.expires, "expires")

    def to_json(self, *, signed: bool = True) -> dict[str, Any]:
        obj = {**_envelope(DESIRED, self.device, self.ts), "model": self.model, "version": self.version,
               "rollout_id": self.rollout_id, "counter": self.counter, "expires": self.expires}
        if signed and self.signature is not None:
            obj["signature"] = self.signature.to_json()
        return obj

    def signing_bytes(self) -> bytes:
        """The exact bytes the signature covers (receivers take them from the message as received)."""
        return canonical_json(self.to_json(signed=False))

    def with_signature(self, signature: Signature) -> "Desired":
        return replace(self, signature=signature)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "Desired":
        device, ts = _common(obj, DESIRED)
        model, version = optional(obj, "model", str), optional(obj, "version", int)
        counter, expires, sig = optional(obj, "counter", int), optional(obj, "expires", str), obj.get("signature")
        if counter is not None and not 1 <= counter <= MAX_COUNTER:
            raise ProtocolError(f"must be within 1..{MAX_COUNTER}", field="counter")
        if expires is not None:
            parse_instant(expires, "expires")
        return cls(device=device, ts=ts, model=None if model is None else check_name(model, "model"),
                   version=None if version is None else check_version(version),
                   rollout_id=optional(obj, "rollout_id", str), counter=counter, expires=expires,
                   signature=None if sig is None else Signature.from_json(sig))


@dataclass(frozen=True)
class Reported(_Message):
    """What a device runs now and what it is doing (retained, so the fleet view reads it at any time)."""

    SCHEMA: ClassVar[str] = REPORTED
    device: str
    state: str
    model: str | None = None
    version: int | None = None
    desired_version: int | None = None
    rollout_id: str | None = None
    last_error: str | None = None
    agent_version: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    ts: str = field(default_factory=now_iso)

    def __post_init__(self) -> None:
        if self.state not in LIFECYCLE_STATES:
            raise ProtocolError(f"unknown state {self.state!r}", field="state")

    @property
    def qos(self) -> int:
        """The QoS to publish this report with: 1 for a settled state, 0 for a transient one. A transient report
        is always followed by the settled report that replaces it as the retained state, and no verdict
        depends on it, so losing one to a dropped connection costs nothing — while at QoS 1 each would cost
        the device and the broker a PUBACK (four of an update's five reports are transient)."""
        return 0 if self.state in TRANSIENT_STATES else 1

    def to_json(self) -> dict[str, Any]:
        return {**_envelope(REPORTED, self.device, self.ts), "state": self.state, "model": self.model,
                "version": self.version, "desired_version": self.desired_version,
                "rollout_id": self.rollout_id, "last_error": self.last_error,
                "agent_version": self.agent_version, "labels": self.labels}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "Reported":
        device, ts = _common(obj, REPORTED)
        model = optional(obj, "model", str)
        return cls(device=device, ts=ts, state=require(obj, "state", str),
                   model=None if model is None else check_name(model, "model"),
                   version=optional(obj, "version", int), desired_version=optional(obj, "desired_version", int),
                   rollout_id=optional(obj, "rollout_id", str), last_error=optional(obj, "last_error", str),
                   agent_version=optional(obj, "agent_version", str, default=""),
                   labels=check_labels(optional(obj, "labels", dict, default={})))


@dataclass(frozen=True)
class Status(_Message):
    """``online`` on connect; ``offline`` as the Last Will (its ts is the connect time) or on clean exit."""

    SCHEMA: ClassVar[str] = STATUS
    device: str
    status: Literal["online", "offline"]
    ts: str = field(default_factory=now_iso)

    def __post_init__(self) -> None:
        if self.status not in ("online", "offline"):
            raise ProtocolError(f"unknown status {self.status!r}", field="status")

    def to_json(self) -> dict[str, Any]:
        return {**_envelope(STATUS, self.device, self.ts), "status": self.status}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "Status":
        device, ts = _common(obj, STATUS)
        return cls(device=device, ts=ts, status=require(obj, "status", str))  # type: ignore[arg-type]


@dataclass(frozen=True)
class AgentEvent(_Message):
    """What happened to a release on a device: installed, rejected or rolled back, and why."""

    SCHEMA: ClassVar[str] = EVENT
    device: str
    event: str
    model: str
    version: int
    reason: str | None = None
    rollout_id: str | None = None
    ts: str = field(default_factory=now_iso)

    def __post_init__(self) -> None:
        if self.event not in EVENT_KINDS:
            raise ProtocolError(f"unknown event {self.event!r}", field="event")

    def to_json(self) -> dict[str, Any]:
        return {**_envelope(EVENT, self.device, self.ts), "event": self.event, "model": self.model,
                "version": self.version, "reason": self.reason, "rollout_id": self.rollout_id}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "AgentEvent":
        device, ts = _common(obj, EVENT)
        return cls(device=device, ts=ts, event=require(obj, "event", str),
                   model=check_name(require(obj, "model", str), "model"),
                   version=check_version(require(obj, "version", int)),
                   reason=optional(obj, "reason", str), rollout_id=optional(obj, "rollout_id", str))

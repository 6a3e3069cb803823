"""Device-channel messages. Each carries ``schema``, ``device`` and ``ts`` (UTC ISO-8601)."""

import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from math import isfinite
from typing import Any, ClassVar, Literal

from .canonical import canonical_json, parse_json
from .errors import ProtocolError
from .feedback import FeedbackCredit
from .fields import check_type, float_list, optional, require
from .histogram import Counts
from .manifest import Signature
from .names import check_labels, check_name, check_version, is_name, is_version
from .performance import ScoreCounts
from .schema import CURRENT, DESIRED, EVENT, REPORTED, STATUS, TELEMETRY, check_schema, tag

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


EPOCH_CHARS = 32
_HEX = frozenset("0123456789abcdef")


def is_epoch(value: object) -> bool:
    """An outbox epoch: "" (a 1.0 sender, which had none) or 1-32 lowercase hex digits."""
    return type(value) is str and len(value) <= EPOCH_CHARS and _HEX.issuperset(value)


@dataclass(frozen=True)
class TelemetryWindow(_Message):
    """One window summary. ``seq`` counts windows within the device's outbox ``epoch`` (a random id drawn when
    the outbox is created, 1.1), so ingestion is idempotent on (device, epoch, seq): a device whose outbox is
    replaced (a reflash, a new data directory) starts seq again at 0 under a new epoch, and its windows are
    new facts, not redeliveries of old ones.

    ``features`` maps column → Counts on the manifest's reference bins (same order); ``predictions`` the
    same for the outputs. ``latency_ms`` holds p50/p95/p99/max. ``dropped`` counts windows a full outbox
    discarded since the last delivered one, so loss is reported, never silent.

    ``feedback`` sums the labels that *arrived* in this window (1.0 meaning, kept for older control planes);
    ``feedback_for`` (1.2) credits the same labels to the release and window of the predictions they are about
    (protocol/feedback.py). A receiver that reads ``feedback_for`` ignores ``feedback`` of such a window.
    ``scores`` (1.2, classifiers whose release carries a score calibration) counts predicted probabilities per
    class (performance.py); the member is absent when there are none.
    """

    SCHEMA: ClassVar[str] = TELEMETRY
    device: str
    seq: int
    model: str
    version: int
    start: str
    end: str
    count: int
    errors: dict[str, int] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)
    features: dict[str, Counts] = field(default_factory=dict)
    predictions: Counts | None = None
    feedback: dict[str, float] = field(default_factory=dict)
    dropped: int = 0
    epoch: str = ""
    feedback_for: tuple[FeedbackCredit, ...] = ()
    scores: ScoreCounts | None = None
    ts: str = field(default_factory=now_iso)

    def to_json(self) -> dict[str, Any]:
        obj = {**_envelope(TELEMETRY, self.device, self.ts), "epoch": self.epoch, "seq": self.seq,
               "model": self.model, "version": self.version, "start": self.start, "end": self.end, "count": self.count,
               "errors": self.errors, "latency_ms": self.latency_ms,
               "features": {col: c.to_json() for col, c in self.features.items()},
               "predictions": None if self.predictions is None else self.predictions.to_json(),
               "feedback": self.feedback, "dropped": self.dropped}
        if self.feedback_for:
            obj["feedback_for"] = [credit.to_json() for credit in self.feedback_for]
        if self.scores is not None:
            obj["scores"] = self.scores.to_json()
        return obj

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "TelemetryWindow":
        fast = cls._plain(obj)
        if fast is not None:
            return fast
        device, ts = _common(obj, TELEMETRY)
        seq = require(obj, "seq", int)
        if seq < 0:
            raise ProtocolError("must be non-negative", field="seq")
        epoch = optional(obj, "epoch", str, default="")
        if not is_epoch(epoch):
            raise ProtocolError(f"must be up to {EPOCH_CHARS} lowercase hex digits", field="epoch")
        errors = require(obj, "errors", dict)
        latency = require(obj, "latency_ms", dict)
        feedback = optional(obj, "feedback", dict, default={})
        credits = optional(obj, "feedback_for", list, default=[])
        preds, scores = obj.get("predictions"), obj.get("scores")
        return cls(
            device=device, ts=ts, seq=seq, model=check_name(require(obj, "model", str), "model"),
            version=check_version(require(obj, "version", int)), start=require(obj, "start", str),
            end=require(obj, "end", str), count=require(obj, "count", int),
            errors={k: check_type(v, int, f"errors.{k}") for k, v in errors.items()},
            latency_ms=dict(zip(latency, float_list(list(latency.values()), "latency_ms"), strict=True)),
            features={col: Counts.from_json(c, f"features.{col}")
                      for col, c in require(obj, "features", dict).items()},
            predictions=None if preds is None else Counts.from_json(preds, "predictions"),
            feedback={k: check_type(v, float, f"feedback.{k}") for k, v in feedback.items()},
            dropped=optional(obj, "dropped", int, default=0), epoch=epoch,
            feedback_for=tuple(FeedbackCredit.from_json(c, f"feedback_for[{i}]") for i, c in enumerate(credits)),
            scores=None if scores is None else ScoreCounts.from_json(scores),
        )

    @classmethod
    def _plain(cls, obj: Any) -> "TelemetryWindow | None":
        """The window of a well-formed object checked with cheap tests (exact builtin types, C-level passes over
        the values), else None, and the checked path above decides and names the error. It never raises and
        accepts only what the checked path accepts, with the same result, so verdicts and messages stay those of
        the checked path (tests/unit/test_protocol_window_fast.py compares the two). Why: the ingest validates
        every window it stores, and the checked path cost more than the JSON decoding."""
        if type(obj) is not dict or obj.get("feedback_for") is not None:   # credits are rare: the checked path
            return None
        schema = obj.get("schema")
        if type(schema) is not dict or type(name := schema.get("name")) is not str or name != TELEMETRY \
                or type(tag_version := schema.get("version")) is not str or tag_version not in _FAST_TAG_VERSIONS:
            return None
        device, ts, seq, model = obj.get("device"), obj.get("ts"), obj.get("seq"), obj.get("model")
        version, start, end, count = obj.get("version"), obj.get("start"), obj.get("end"), obj.get("count")
        if type(device) is not str or not is_name(device) or type(ts) is not str or type(seq) is not int \
                or seq < 0 or type(model) is not str or not is_name(model) or type(version) is not int \
                or not is_version(version) or type(start) is not str or type(end) is not str or type(count) is not int:
            return None
        errors, latency, feedback = obj.get("errors"), obj.get("latency_ms"), obj.get("feedback")
        if feedback is None:
            feedback = {}
        dropped, epoch = obj.get("dropped"), obj.get("epoch")
        if dropped is None:
            dropped = 0
        if epoch is None:
            epoch = ""
        if not is_epoch(epoch) or type(errors) is not dict or not {*map(type, errors.values())} <= _INT \
                or type(dropped) is not int:
            return None
        latency_values, feedback_values = _plain_floats(latency), _plain_floats(feedback)
        if latency_values is None or feedback_values is None:
            return None
        features = obj.get("features")
        if type(features) is not dict:
            return None
        counts = {}
        for col, c in features.items():
            if (parsed := Counts._plain(c)) is None:
                return None
            counts[col] = parsed
        preds = obj.get("predictions")
        predictions = None if preds is None else Counts._plain(preds)
        if preds is not None and predictions is None:
            return None
        raw_scores = obj.get("scores")
        scores = None if raw_scores is None else ScoreCounts._plain(raw_scores)
        if raw_scores is not None and scores is None:
            return None
        return cls(device=device, ts=ts, seq=seq, model=model, version=version, start=start, end=end, count=count,
                   errors=dict(errors), latency_ms=latency_values,
                   features=counts, predictions=predictions,
                   feedback=feedback_values, dropped=dropped, epoch=epoch,
                   scores=scores)


_FAST_TAG_VERSIONS = frozenset({CURRENT[TELEMETRY], "1.1", "1.0"})   # other minors are fine too: the checked path
_INT = frozenset({int})
_NUMBER_TYPES = frozenset({int, float})


def _plain_floats(value: Any) -> dict[str, float] | None:
    """An object of plain finite numbers with its values as floats (ints converted, as check_type does), else None."""
    if type(value) is not dict or not {*map(type, value.values())} <= _NUMBER_TYPES:
        return None
    try:
        floats = list(map(float, value.values()))
    except OverflowError:   # an int beyond any float: the checked path names it
        return None
    return dict(zip(value, floats, strict=True)) if all(map(isfinite, floats)) else None

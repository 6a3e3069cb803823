"""The telemetry window message: a device's counts for one window (features, predictions, scores, labels).

Its own module because it needs the histogram, performance and feedback classes that the state messages
(messages.py) do not: a command that only reads device state loads none of them.
"""

from dataclasses import dataclass, field
from math import isfinite
from typing import Any, ClassVar

from .errors import ProtocolError
from .feedback import FeedbackCredit
from .fields import check_type, float_list, optional, require
from .histogram import Counts
from .messages import _common, _envelope, _Message, now_iso
from .names import check_name, check_version, is_name, is_version
from .performance import ScoreCounts
from .schema import CURRENT, TELEMETRY

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

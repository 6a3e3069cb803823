"""Prediction ids and feedback credits: what lets ground truth that arrives later count for the model version
and the time of the prediction it is about, on the device and on the control plane alike.

A prediction id is ``{model}@{version}:{window}:{row}``: the release that answered, the start of the telemetry
window that counted the prediction (Unix milliseconds, hex) and the prediction's place in that window (hex),
e.g. ``churn@3:19a4c2f01b3:2f``. The agent hands these out; a label that comes back with one is credited to
that release and that window whenever and wherever it arrives (the agent's ``/v1/feedback``, or a warehouse
table ingested by the control plane), and the id stays meaningful across agent restarts and rollouts. Model
names cannot hold ``@`` or ``:``, so the id splits without ambiguity.

A ``FeedbackCredit`` is what a telemetry window (1.2) reports about labels it received: per original release
and window, how many labels and how many were right (classifiers) or the sum and sum of squares of the
absolute errors (regressors) — the sums a confidence interval needs, never a raw row.
"""

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from math import isfinite
from typing import Any

from .errors import ProtocolError
from .fields import check_type, optional, require
from .names import MAX_VERSION, check_name, check_version, is_name

MAX_PREDICTION_ID = 128
_ID = re.compile(r"([A-Za-z0-9][A-Za-z0-9_.-]{0,63})@([1-9][0-9]{0,9}):([0-9a-f]{1,12}):([0-9a-f]{1,12})")


@dataclass(frozen=True, slots=True)
class PredictionRef:
    """What a prediction id says: the release that answered, its window's start (ms) and the row in it."""

    model: str
    version: int
    window_ms: int
    row: int

    @property
    def window_start(self) -> datetime:
        return datetime.fromtimestamp(self.window_ms / 1000, UTC)

    @property
    def id(self) -> str:
        return f"{prediction_id_head(self.model, self.version, self.window_ms)}{self.row:x}"


def prediction_id_head(model: str, version: int, window_ms: int) -> str:
    """The part of an id shared by every prediction of one window; the row's index (hex) completes it."""
    return f"{model}@{version}:{window_ms:x}:"


def parse_prediction_id(value: object, field: str = "prediction_id") -> PredictionRef:
    """A prediction id taken apart; ProtocolError (naming ``field``) for anything else."""
    match = _ID.fullmatch(value) if isinstance(value, str) and len(value) <= MAX_PREDICTION_ID else None
    if match is None or not is_name(match[1]) or int(match[2]) > MAX_VERSION:
        shown = repr(value)[:80] if isinstance(value, str) else type(value).__name__
        raise ProtocolError(f"{shown} is not a prediction id (model@version:window:row, as the agent answers)",
                            field=field)
    return PredictionRef(match[1], int(match[2]), int(match[3], 16), int(match[4], 16))


@dataclass(frozen=True)
class FeedbackCredit:
    """Labels received in one window about the predictions of an earlier (or the same) window ``start`` of
    ``model@version``. Classifiers set ``correct``; regressors ``abs_error_sum`` and ``abs_error_sq_sum``."""

    model: str
    version: int
    start: str
    labelled: int
    correct: int | None = None
    abs_error_sum: float | None = None
    abs_error_sq_sum: float | None = None

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"model": self.model, "version": self.version, "start": self.start,
                               "labelled": self.labelled}
        if self.correct is not None:
            obj["correct"] = self.correct
        else:
            obj["abs_error_sum"] = self.abs_error_sum
            obj["abs_error_sq_sum"] = self.abs_error_sq_sum
        return obj

    @classmethod
    def from_json(cls, obj: Any, field: str) -> "FeedbackCredit":
        obj = check_type(obj, dict, field)
        labelled = require(obj, "labelled", int, field)
        if labelled < 1:
            raise ProtocolError("must be at least 1", field=f"{field}.labelled")
        start = require(obj, "start", str, field)
        try:
            if len(start) > 40 or datetime.fromisoformat(start).tzinfo is None:
                raise ValueError
        except ValueError:
            raise ProtocolError(f"{start[:40]!r} is not an ISO-8601 instant with a zone", field=f"{field}.start") \
                from None
        correct = optional(obj, "correct", int, field)
        sums = [optional(obj, key, float, field) for key in ("abs_error_sum", "abs_error_sq_sum")]
        if correct is not None:
            if not 0 <= correct <= labelled:
                raise ProtocolError("must be within 0..labelled", field=f"{field}.correct")
        elif None in sums or any(not (isfinite(s) and s >= 0) for s in sums):
            raise ProtocolError("give correct (classifiers) or both non-negative abs_error_sum and "
                                "abs_error_sq_sum (regressors)", field=field)
        return cls(model=check_name(require(obj, "model", str, field), f"{field}.model"),
                   version=check_version(require(obj, "version", int, field), f"{field}.version"), start=start,
                   labelled=labelled, correct=correct, abs_error_sum=None if correct is not None else sums[0],
                   abs_error_sq_sum=None if correct is not None else sums[1])

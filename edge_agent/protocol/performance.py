"""What estimating a model's performance without labels needs on the wire: score counts and a calibration.

A classifier's window may carry ``ScoreCounts``: for every class c (manifest ``classes`` order), how many rows
had their probability of c in each of ``bins`` equal bins of [0, 1], split by whether c was the predicted
class (the first class of highest probability, numpy's ``argmax``). Those are counts, as private as the
feature bins, yet enough for an expected confusion matrix per class (CBPE): accuracy and F1.

The release manifest (1.2) may carry the reference to read them with, measured on held-out data when the
model was trained: ``ScoreCalibration`` (classifiers: the same cells, with how many held-out rows fell in each,
how many of those were of class c, and their mean probability) or ``ErrorCalibration`` (regressors: per bin
of the prediction reference, plus underflow and overflow, the rows, mean and standard deviation of the
absolute error). How the control plane turns them into estimates is src/edgeops/telemetry/performance.py.
"""

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from .errors import ProtocolError
from .fields import check_type, count_list, float_list, require

SCORE_BINS = 20
MAX_SCORE_BINS = 100
MAX_SCORED_CLASSES = 64
"""Classifiers with more classes get no score counts: K × 2 × bins counts per window would grow past what a
window should cost (64 classes × 40 counts is ~8 KB of JSON)."""
_INT = frozenset({int})


def score_bin(p: float, bins: int = SCORE_BINS) -> int:
    """Bin i of ``bins`` holds i/bins <= p < (i+1)/bins; p = 1 falls in the last bin, and a probability a
    rounding put just outside [0, 1] in the nearest one. NaN has no bin (-1). The agent and the training code
    bin whole arrays with numpy, tested equal to this."""
    if math.isnan(p):
        return -1
    if not 0.0 <= p < 1.0:
        return 0 if p < 0.0 else bins - 1
    return min(math.floor(p * bins), bins - 1)


def _matrix(value: Any, field: str, bins: int, rows: int | None = None) -> tuple[tuple[int, ...], ...]:
    """A list of ``rows`` lists of ``bins`` non-negative ints (rows: 1 to MAX_SCORED_CLASSES when not given)."""
    value = check_type(value, list, field)
    if rows is None and not 1 <= len(value) <= MAX_SCORED_CLASSES:
        raise ProtocolError(f"needs 1 to {MAX_SCORED_CLASSES} classes", field=field)
    if rows is not None and len(value) != rows:
        raise ProtocolError(f"has {len(value)} classes, expected {rows}", field=field)
    out = []
    for i, row in enumerate(value):
        counts = count_list(row, f"{field}[{i}]")
        if len(counts) != bins:
            raise ProtocolError(f"has {len(counts)} counts for {bins} bins", field=f"{field}[{i}]")
        out.append(tuple(counts))
    return tuple(out)


def _bins(obj: dict[str, Any], path: str) -> int:
    bins = require(obj, "bins", int, path)
    if not 1 <= bins <= MAX_SCORE_BINS:
        raise ProtocolError(f"must be within 1..{MAX_SCORE_BINS}", field=f"{path}.bins")
    return bins


@dataclass(frozen=True)
class ScoreCounts:
    """Per class, counts of its probability on ``bins`` equal bins of [0, 1]: ``predicted[c]`` over the rows
    that predicted c, ``other[c]`` over the rest (module docstring)."""

    predicted: tuple[tuple[int, ...], ...]
    other: tuple[tuple[int, ...], ...]
    bins: int = SCORE_BINS

    @property
    def classes(self) -> int:
        return len(self.predicted)

    @property
    def rows(self) -> int:
        """Rows counted: each is in exactly one class's ``predicted`` counts."""
        return sum(map(sum, self.predicted))

    def to_json(self) -> dict[str, Any]:
        return {"bins": self.bins, "predicted": [list(r) for r in self.predicted],
                "other": [list(r) for r in self.other]}

    @classmethod
    def _plain(cls, obj: Any) -> "ScoreCounts | None":
        """The counts of a well-formed object checked with exact type tests, else None (the checked path then
        decides and names the error), like Counts._plain: the ingest reads thousands of windows a second."""
        if type(obj) is not dict or type(bins := obj.get("bins")) is not int or not 1 <= bins <= MAX_SCORE_BINS:
            return None
        predicted, other = obj.get("predicted"), obj.get("other")
        if type(predicted) is not list or type(other) is not list or len(predicted) != len(other) \
                or not 1 <= len(predicted) <= MAX_SCORED_CLASSES:
            return None
        for row in (*predicted, *other):
            if type(row) is not list or len(row) != bins or {*map(type, row)} != _INT or min(row) < 0:
                return None
        return cls(tuple(map(tuple, predicted)), tuple(map(tuple, other)), bins)

    @classmethod
    def from_json(cls, obj: Any, path: str = "scores") -> "ScoreCounts":
        fast = cls._plain(obj)
        if fast is not None:
            return fast
        obj = check_type(obj, dict, path)
        bins = _bins(obj, path)
        predicted = _matrix(require(obj, "predicted", list, path), f"{path}.predicted", bins)
        other = _matrix(require(obj, "other", list, path), f"{path}.other", bins, len(predicted))
        return cls(predicted, other, bins)


@dataclass(frozen=True)
class ScoreCells:
    """Held-out rows in each (class, bin) cell of one side (predicted or other) of a ScoreCalibration: how
    many, how many of them were of that class, and their mean probability of it."""

    rows: tuple[tuple[int, ...], ...]
    hits: tuple[tuple[int, ...], ...]
    mean: tuple[tuple[float, ...], ...]

    def to_json(self) -> dict[str, Any]:
        return {"rows": [list(r) for r in self.rows], "hits": [list(r) for r in self.hits],
                "mean": [list(r) for r in self.mean]}

    @classmethod
    def from_json(cls, obj: Any, path: str, bins: int, classes: int | None = None) -> "ScoreCells":
        obj = check_type(obj, dict, path)
        rows = _matrix(require(obj, "rows", list, path), f"{path}.rows", bins, classes)
        hits = _matrix(require(obj, "hits", list, path), f"{path}.hits", bins, len(rows))
        means = check_type(require(obj, "mean", list, path), list, f"{path}.mean")
        if len(means) != len(rows):
            raise ProtocolError(f"has {len(means)} classes, expected {len(rows)}", field=f"{path}.mean")
        mean = tuple(tuple(float_list(m, f"{path}.mean[{i}]")) for i, m in enumerate(means))
        for i, (n, h, m) in enumerate(zip(rows, hits, mean, strict=True)):
            if len(m) != bins:
                raise ProtocolError(f"has {len(m)} values for {bins} bins", field=f"{path}.mean[{i}]")
            if any(hb > nb for hb, nb in zip(h, n, strict=True)):
                raise ProtocolError("a cell has more hits than rows", field=f"{path}.hits[{i}]")
            if any(not 0.0 <= v <= 1.0 for v in m):
                raise ProtocolError("mean probabilities must be within [0, 1]", field=f"{path}.mean[{i}]")
        return cls(rows, hits, mean)


@dataclass(frozen=True)
class ScoreCalibration:
    """A classifier's calibration reference: ``predicted`` and ``other`` cells as in ScoreCounts."""

    predicted: ScoreCells
    other: ScoreCells
    bins: int = SCORE_BINS
    kind: ClassVar[str] = "scores"

    @property
    def classes(self) -> int:
        return len(self.predicted.rows)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "bins": self.bins, "predicted": self.predicted.to_json(),
                "other": self.other.to_json()}

    @classmethod
    def from_json(cls, obj: dict[str, Any], path: str) -> "ScoreCalibration":
        bins = _bins(obj, path)
        predicted = ScoreCells.from_json(require(obj, "predicted", dict, path), f"{path}.predicted", bins)
        other = ScoreCells.from_json(require(obj, "other", dict, path), f"{path}.other", bins,
                                     len(predicted.rows))
        return cls(predicted, other, bins)


@dataclass(frozen=True)
class ErrorCalibration:
    """A regressor's calibration reference: per bin of the prediction reference, then underflow and overflow,
    the held-out rows whose prediction fell there and the mean and standard deviation of their absolute
    error."""

    rows: tuple[int, ...]
    mean: tuple[float, ...]
    sd: tuple[float, ...]
    kind: ClassVar[str] = "errors"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "rows": list(self.rows), "mean": list(self.mean), "sd": list(self.sd)}

    @classmethod
    def from_json(cls, obj: dict[str, Any], path: str) -> "ErrorCalibration":
        rows = count_list(require(obj, "rows", list, path), f"{path}.rows")
        mean = float_list(require(obj, "mean", list, path), f"{path}.mean")
        sd = float_list(require(obj, "sd", list, path), f"{path}.sd")
        if not len(rows) == len(mean) == len(sd) or len(rows) < 3:
            raise ProtocolError("rows, mean and sd need one value per bin (plus underflow and overflow)",
                                field=path)
        if any(v < 0 for v in (*mean, *sd)):
            raise ProtocolError("errors must be non-negative", field=path)
        return cls(tuple(rows), tuple(mean), tuple(sd))


Calibration = ScoreCalibration | ErrorCalibration


def parse_calibration(obj: Any, path: str = "calibration") -> Calibration | None:
    """A manifest's ``calibration`` member: null (none, or a 1.0 manifest) or one of the two kinds."""
    if obj is None:
        return None
    obj = check_type(obj, dict, path)
    kind = require(obj, "kind", str, path)
    if kind == ScoreCalibration.kind:
        return ScoreCalibration.from_json(obj, path)
    if kind == ErrorCalibration.kind:
        return ErrorCalibration.from_json(obj, path)
    raise ProtocolError(f"unknown calibration kind {kind!r}", field=f"{path}.kind")

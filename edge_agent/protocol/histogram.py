"""Reference bins and telemetry counts share one shape, so drift compares like with like."""

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from .bins import MISSING, OVERFLOW, UNDERFLOW, UNSEEN, categorical_bin, numeric_bin, numeric_bin_count
from .errors import ProtocolError
from .fields import check_type, count_list, float_list, optional, require

MAX_BINS = 1024
_EXTRA = ("underflow", "overflow", "unseen", "missing")
_INT = {int}


@dataclass(frozen=True)
class NumericBins:
    """Quantile edges from training; see bins.py for the binning rule."""

    edges: tuple[float, ...]
    kind: Literal["numeric"] = field(default="numeric", init=False)

    def __post_init__(self) -> None:
        if not 1 <= len(self.edges) <= MAX_BINS + 1:
            raise ProtocolError(f"needs 1 to {MAX_BINS + 1} edges", field="edges")
        if any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
            raise ProtocolError("edges must be strictly ascending", field="edges")

    @property
    def size(self) -> int:
        return numeric_bin_count(list(self.edges))

    def index(self, value: float | None) -> int:
        return numeric_bin(list(self.edges), value)

    def to_json(self) -> dict[str, Any]:
        return {"kind": "numeric", "edges": list(self.edges)}


@dataclass(frozen=True)
class CategoricalBins:
    """Training categories in a fixed order (for predictions of a classifier: the classes as strings)."""

    categories: tuple[str, ...]
    kind: Literal["categorical"] = field(default="categorical", init=False)

    def __post_init__(self) -> None:
        if not 1 <= len(self.categories) <= MAX_BINS:
            raise ProtocolError(f"needs 1 to {MAX_BINS} categories", field="categories")
        if len(set(self.categories)) != len(self.categories):
            raise ProtocolError("categories must be distinct", field="categories")

    @property
    def size(self) -> int:
        return len(self.categories)

    def index(self, value: str | None) -> int:
        return categorical_bin(list(self.categories), value)

    def to_json(self) -> dict[str, Any]:
        return {"kind": "categorical", "categories": list(self.categories)}


Bins = NumericBins | CategoricalBins


@dataclass(frozen=True)
class Counts:
    """Counts on some ``Bins``: one per bin, plus the values that fell outside them."""

    counts: tuple[int, ...]
    underflow: int = 0
    overflow: int = 0
    unseen: int = 0
    missing: int = 0

    @classmethod
    def empty(cls, bins: Bins) -> "Counts":
        return cls(counts=(0,) * bins.size)

    @property
    def total(self) -> int:
        return sum(self.counts) + self.underflow + self.overflow + self.unseen + self.missing

    def vector(self) -> list[int]:
        """Counts with the out-of-bin buckets appended, in a fixed order, for distance statistics."""
        return [*self.counts, self.underflow, self.overflow, self.unseen, self.missing]

    def to_json(self) -> dict[str, Any]:
        return {"counts": list(self.counts), "underflow": self.underflow, "overflow": self.overflow,
                "unseen": self.unseen, "missing": self.missing}

    @classmethod
    def _plain(cls, obj: Any, size: int | None = None) -> "Counts | None":
        """The Counts of a well-formed object (plain non-negative ints everywhere, ``size`` counts if given)
        checked in a few C-level passes, else None: the caller then takes the checked path, which gives the
        verdict and builds the error (and its field path). Never raises, so a caller validating a whole message
        can try it on every part before deciding (the ingest validates thousands of these a second)."""
        if type(obj) is dict and type(counts := obj.get("counts")) is list and counts \
                and {*map(type, counts)} == _INT and min(counts) >= 0 and (size is None or len(counts) == size):
            extra = (obj.get("underflow", 0), obj.get("overflow", 0), obj.get("unseen", 0), obj.get("missing", 0))
            if {*map(type, extra)} == _INT and min(extra) >= 0:
                return cls(tuple(counts), *extra)
        return None

    @classmethod
    def from_json(cls, obj: Any, path: str, bins: Bins | None = None) -> "Counts":
        fast = cls._plain(obj, None if bins is None else bins.size)
        if fast is not None:
            return fast
        obj = check_type(obj, dict, path)
        counts = count_list(require(obj, "counts", list, path), f"{path}.counts")
        if bins is not None and len(counts) != bins.size:
            raise ProtocolError(f"has {len(counts)} counts for {bins.size} bins", field=f"{path}.counts")
        checked = {k: optional(obj, k, int, path, 0) for k in _EXTRA}
        if any(v < 0 for v in checked.values()):
            raise ProtocolError("counts must be non-negative", field=path)
        return cls(counts=tuple(counts), **checked)


class CountAccumulator:
    """Mutable counts for the device's hot path; ``freeze()`` gives the immutable Counts."""

    __slots__ = ("_index", "bins", "counts", "extra")

    def __init__(self, bins: Bins) -> None:
        self.bins = bins
        self.counts = [0] * bins.size
        self.extra = {UNDERFLOW: 0, OVERFLOW: 0, UNSEEN: 0, MISSING: 0}
        self._index = (
            {c: i for i, c in enumerate(bins.categories)} if isinstance(bins, CategoricalBins) else None
        )

    def add(self, value: Any) -> None:
        if isinstance(self.bins, CategoricalBins):
            i = categorical_bin(self.bins.categories, None if value is None else str(value), self._index)
        else:
            try:
                number = None if value is None else float(value)
            except OverflowError:  # an integer beyond float64 is beyond every edge
                number = math.inf if value > 0 else -math.inf
            i = numeric_bin(list(self.bins.edges), number)
        if i >= 0:
            self.counts[i] += 1
        else:
            self.extra[i] += 1

    def freeze(self) -> Counts:
        return Counts(tuple(self.counts), underflow=self.extra[UNDERFLOW], overflow=self.extra[OVERFLOW],
                      unseen=self.extra[UNSEEN], missing=self.extra[MISSING])


@dataclass(frozen=True)
class Reference:
    """Bins and training counts of one feature (or of the predictions)."""

    bins: Bins
    counts: Counts

    def to_json(self) -> dict[str, Any]:
        return {**self.bins.to_json(), **self.counts.to_json()}

    @classmethod
    def from_json(cls, obj: Any, path: str) -> "Reference":
        obj = check_type(obj, dict, path)
        kind = require(obj, "kind", str, path)
        bins: Bins
        try:
            if kind == "numeric":
                bins = NumericBins(tuple(float_list(require(obj, "edges", list, path), f"{path}.edges")))
            elif kind == "categorical":
                cats = require(obj, "categories", list, path)
                bins = CategoricalBins(tuple(check_type(c, str, f"{path}.categories") for c in cats))
            else:
                raise ProtocolError(f"unknown bin kind {kind!r}", field=f"{path}.kind")
        except ProtocolError as exc:
            if exc.field and exc.field.startswith(path):
                raise
            raise ProtocolError(exc.reason, field=f"{path}.{exc.field}" if exc.field else path) from exc
        return cls(bins=bins, counts=Counts.from_json(obj, path, bins))

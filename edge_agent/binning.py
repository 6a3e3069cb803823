"""Counting many values at once on a release's reference bins, exactly as protocol/bins.py counts one.

The telemetry window does not bin a row when it is recorded: rows wait in the window and are counted here in
bulk (every tick of the owner thread, or when the window closes), so numpy's cost per call is paid once per
pile, not once per request. ``Binner`` holds one column's bins as numpy arrays, made once per release.

The rule for a numeric value (bins.py) is applied to what ``float()`` makes of it: None and text that is no
number are *missing*, as NaN is; an integer too large for a float (JSON has no limit on digits) is beyond every
edge: *overflow*, or *underflow* when negative. ``CountAccumulator.add`` follows the same rule one value at a
time.
"""

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .protocol import MISSING, OVERFLOW, UNDERFLOW, CategoricalBins, CountAccumulator, categorical_bin

_TEXT_OR_NULL = frozenset({str, type(None)})


def as_floats(values: Sequence[Any] | np.ndarray) -> np.ndarray:
    """Values as float64: NaN for missing and for anything that is not a number; ±inf for an integer beyond
    float64 (beyond every edge, so it counts as overflow or underflow, as one by one)."""
    if isinstance(values, np.ndarray) and values.dtype == np.float64:
        return values
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        out = np.empty(len(values), dtype=np.float64)
        for i, value in enumerate(values):
            out[i] = _as_float(value)
        return out


def _as_float(value: Any) -> float:
    if value is None:
        return np.nan
    try:
        return float(value)
    except OverflowError:
        return np.inf if value > 0 else -np.inf
    except (TypeError, ValueError):
        return np.nan


class Binner:
    """One column's bins, ready for numpy; ``count`` adds many values to an accumulator on the same bins."""

    __slots__ = ("acc_index", "categorical", "edges")

    def __init__(self, bins: Any) -> None:
        self.categorical = isinstance(bins, CategoricalBins)
        self.acc_index = {c: i for i, c in enumerate(bins.categories)} if self.categorical else None
        self.edges = None if self.categorical else np.asarray(bins.edges, dtype=np.float64)

    def count(self, acc: CountAccumulator, values: Sequence[Any] | np.ndarray) -> None:
        if self.categorical:
            self.count_texts(acc, [values])
        else:
            self._count_numbers(acc, as_floats(values))

    def count_texts(self, acc: CountAccumulator, pieces: Iterable[Sequence[Any] | np.ndarray]) -> None:
        """Count the values of several pieces (lists) on categorical bins, each distinct text once."""
        counted: Counter[Any] = Counter()
        for values in pieces:
            if not set(map(type, values)) <= _TEXT_OR_NULL:  # 1, 1.0 and True are equal keys but not equal text
                values = [None if value is None else str(value) for value in values]
            counted.update(values)
        self.count_distinct(acc, counted.items())

    def count_distinct(self, acc: CountAccumulator, counted: Iterable[tuple[Any, int]]) -> None:
        """Add ``n`` times each text (or None) of (text, n) pairs: a category is binned once, not once per row."""
        categories, index = acc.bins.categories, self.acc_index  # type: ignore[union-attr]
        for value, n in counted:
            i = categorical_bin(categories, value, index)
            if i >= 0:
                acc.counts[i] += n
            else:
                acc.extra[i] += n

    def _count_numbers(self, acc: CountAccumulator, arr: np.ndarray) -> None:
        edges = self.edges
        assert edges is not None
        if not len(arr):
            return
        missing, under, over = np.isnan(arr), arr < edges[0], arr > edges[-1]
        inside = arr[~(missing | under | over)]
        if len(edges) == 1:
            acc.counts[0] += len(inside)
        elif len(inside):
            idx = np.searchsorted(edges, inside, side="right") - 1
            np.minimum(idx, len(edges) - 2, out=idx)  # the last edge itself is in the last bin
            for i, n in enumerate(np.bincount(idx, minlength=len(edges) - 1).tolist()):
                acc.counts[i] += n
        acc.extra[MISSING] += int(missing.sum())
        acc.extra[UNDERFLOW] += int(under.sum())
        acc.extra[OVERFLOW] += int(over.sum())


def add_values(acc: CountAccumulator, values: Sequence[Any]) -> None:
    """Add many values at once, exactly as ``acc.add`` would one by one (the rule of protocol/bins.py)."""
    Binner(acc.bins).count(acc, values)


class MatrixBinner:
    """Several numeric columns' bins at once: values as one matrix (rows × columns, float64, NaN for missing)
    are counted with one ``searchsorted`` per column and one ``bincount`` for all, the rule of ``Binner``."""

    def __init__(self, edges: Sequence[np.ndarray]) -> None:
        self.edges = list(edges)
        sizes = [max(len(e) - 1, 1) for e in self.edges]
        self.sizes = sizes
        self.offsets = np.cumsum([0, *sizes[:-1]]).astype(np.int64)[:, None]
        self.total = int(sum(sizes))
        self.limits = np.array([max(len(e) - 2, 0) for e in self.edges], dtype=np.int64)[:, None]
        self.low = np.array([e[0] for e in self.edges], dtype=np.float64)[:, None]
        self.high = np.array([e[-1] for e in self.edges], dtype=np.float64)[:, None]

    def count(self, accs: Sequence[CountAccumulator], matrix: np.ndarray) -> None:
        if not matrix.size:
            return
        values = np.ascontiguousarray(matrix.T)  # one row per column
        idx = np.empty(values.shape, dtype=np.int64)
        for j, edges in enumerate(self.edges):
            idx[j] = np.searchsorted(edges, values[j], side="right")
        idx -= 1
        np.minimum(idx, self.limits, out=idx)  # the last edge itself is in the last bin
        missing, under, over = np.isnan(values), values < self.low, values > self.high
        inside = ~(missing | under | over)
        idx += self.offsets
        counts = np.bincount(idx[inside], minlength=self.total).tolist()
        extra = zip(missing.sum(axis=1).tolist(), under.sum(axis=1).tolist(), over.sum(axis=1).tolist(), strict=True)
        for j, (acc, (n_missing, n_under, n_over)) in enumerate(zip(accs, extra, strict=True)):
            start = int(self.offsets[j, 0])
            for i, n in enumerate(counts[start:start + self.sizes[j]]):
                acc.counts[i] += n
            acc.extra[MISSING] += n_missing
            acc.extra[UNDERFLOW] += n_under
            acc.extra[OVERFLOW] += n_over

"""Reference bins: the training distribution of every feature and of the predictions, in the manifest.

Devices count their live inputs on these bins and the control plane compares the counts (drift). Counting
here must follow edge_agent/protocol/bins.py exactly, or drift would appear where there is none; this module
does the same thing vectorised with numpy, and tests/unit/test_export.py checks it against
``protocol.numeric_bin`` value by value, including the edges themselves and NaN.
"""

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from edge_agent.protocol import CategoricalBins, Counts, NumericBins, Reference
from edge_agent.protocol.bins import MISSING_TEXTS
from edge_agent.protocol.histogram import MAX_BINS


def quantile_edges(values: Iterable[float] | np.ndarray, bins: int) -> tuple[float, ...]:
    """Edges at the 0, 1/bins, ..., 1 quantiles of the non-missing values, deduplicated (a value that fills
    several quantiles would give empty bins) and strictly ascending, as NumericBins requires."""
    arr = np.asarray(values, dtype="float64")
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return (0.0,)
    edges = np.unique(np.quantile(arr, np.linspace(0.0, 1.0, bins + 1)))
    return tuple(float(e) for e in edges)


def numeric_bin_indices(edges: tuple[float, ...] | list[float], values: np.ndarray) -> np.ndarray:
    """protocol.numeric_bin for a whole array: bin index, or UNDERFLOW (-1) / OVERFLOW (-2) / MISSING (-3)."""
    arr = np.asarray(values, dtype="float64")
    e = np.asarray(edges, dtype="float64")
    if len(e) == 1:
        idx = np.zeros(arr.shape, dtype="int64")
    else:
        idx = np.minimum(np.searchsorted(e, arr, side="right") - 1, len(e) - 2)
    idx = np.where(arr < e[0], -1, idx)
    idx = np.where(arr > e[-1], -2, idx)
    return np.where(np.isnan(arr), -3, idx).astype("int64")


def numeric_counts(edges: tuple[float, ...], values: np.ndarray) -> Counts:
    bins = NumericBins(tuple(edges))
    idx = numeric_bin_indices(edges, values)
    counts = np.bincount(idx[idx >= 0], minlength=bins.size)
    return Counts(counts=tuple(int(c) for c in counts), underflow=int((idx == -1).sum()),
                  overflow=int((idx == -2).sum()), missing=int((idx == -3).sum()))


def numeric_reference(values: np.ndarray, bins: int) -> Reference:
    """Quantile bins of ``values`` and their counts."""
    edges = quantile_edges(values, bins)
    return Reference(bins=NumericBins(edges), counts=numeric_counts(edges, values))


def categorical_reference(values: pd.Series, missing_token: str | None = None,
                          categories: Iterable[str] | None = None) -> Reference:
    """Category counts of text ``values``. Missing: None, NaN, pandas' NA, ``missing_token``, and the texts of
    protocol.MISSING_TEXTS ("nan", "<NA>": what the device makes of NaN and NA) — the device's rule.

    ``categories`` fixes the order (e.g. the encoder's vocabulary); by default the observed categories by
    falling frequency. More than the protocol's 1024 bins keeps the most frequent ones; the rest count as
    unseen, as they would on the device."""
    text = values.astype(object).where(values.notna(), None)
    is_missing = text.isna() | text.isin(sorted(MISSING_TEXTS))
    if missing_token is not None:
        is_missing |= text == missing_token
    present = text[~is_missing].map(str)
    freq = present.value_counts()
    by_frequency = sorted(freq.index, key=lambda c: (-int(freq[c]), c))  # ties by name: same bytes every run
    source = by_frequency if categories is None else categories
    order = [str(c) for c in source if c != missing_token]
    if len(order) > MAX_BINS:
        kept = set(by_frequency[:MAX_BINS])
        order = [c for c in order if c in kept][:MAX_BINS]
    if not order:
        order = [missing_token or ""]
    counts = tuple(int(freq.get(c, 0)) for c in order)
    return Reference(bins=CategoricalBins(tuple(order)),
                     counts=Counts(counts=counts, unseen=int(len(present) - sum(counts)),
                                   missing=int(is_missing.sum())))


def prediction_reference(predictions: np.ndarray, task: str, classes: list[Any] | None, bins: int) -> Reference:
    """Predicted classes as text (str() of each class, in class order) or numeric bins of predicted values."""
    if task == "regression":
        return numeric_reference(np.asarray(predictions, dtype="float64"), bins)
    labels = pd.Series([str(_plain(p)) for p in predictions], dtype=object)
    return categorical_reference(labels, categories=[str(c) for c in classes or []])


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


__all__ = ["categorical_reference", "numeric_bin_indices", "numeric_counts", "numeric_reference",
           "prediction_reference", "quantile_edges"]

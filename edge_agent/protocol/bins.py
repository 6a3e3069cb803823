"""How a value falls into a reference bin: one rule for training (numpy) and the device (this file).

Numeric bins come from training quantiles as ascending ``edges`` e0 < e1 < ... < ek, giving k bins.
Bin i holds e_i <= v < e_(i+1); the last bin is closed on the right (it holds ek itself), so every training
value lands in a bin. v < e0 is *underflow*, v > ek is *overflow*; NaN/None is *missing*.
A single distinct training value (k == 0) gives edges [e0]: v == e0 is bin 0 and k is taken as 1.

Categorical bins are the training categories in manifest order; anything else is *unseen*; None is
*missing*, and so are NaN and pandas' NA, which reach the counters as their text (``str(nan)`` is ``"nan"``,
``str(pd.NA)`` is ``"<NA>"``): MISSING_TEXTS. The reference (src/edgeops/train/reference.py) counts the same values
as missing, so a missing value is missing on both sides. The control plane's vectorised binning is tested
against these functions.
"""

import bisect
from collections.abc import Sequence

UNDERFLOW = -1
OVERFLOW = -2
MISSING = -3
UNSEEN = -4
MISSING_TEXTS = frozenset({"nan", "<NA>"})   # str() of float NaN and of pandas' NA: missing, never a category


def numeric_bin_count(edges: list[float]) -> int:
    return max(len(edges) - 1, 1)


def numeric_bin(edges: list[float], value: float | None) -> int:
    """Index of ``value``'s bin, or UNDERFLOW / OVERFLOW / MISSING."""
    if value is None or value != value:  # NaN is the one value unequal to itself; no int is, however large
        return MISSING
    if value < edges[0]:
        return UNDERFLOW
    if value > edges[-1]:
        return OVERFLOW
    if len(edges) == 1:
        return 0
    return min(bisect.bisect_right(edges, value) - 1, len(edges) - 2)


def categorical_bin(categories: Sequence[str], value: str | None, index: dict[str, int] | None = None) -> int:
    """Index of ``value`` in ``categories`` or UNSEEN / MISSING. Pass a prebuilt ``index`` on hot paths."""
    if value is None or value in MISSING_TEXTS:
        return MISSING
    if index is None:
        index = {c: i for i, c in enumerate(categories)}
    return index.get(value, UNSEEN)

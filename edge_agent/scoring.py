"""Score counts on the device: a batch's predicted probabilities counted into ScoreCounts' cells.

Kept apart from telemetry.py, which only holds them in the open window: the counting is a few numpy operations
per batch (no loop over rows), binned off the hot path like the feature counts.
"""

import functools
import math

import numpy as np

from .protocol import MAX_SCORED_CLASSES, ScoreCounts


def score_cells(probabilities: np.ndarray, bins: int) -> np.ndarray:
    """Counts of a batch's probabilities (rows × classes) in ScoreCounts' cells, as one flat array laid out
    class × (predicted, other) × bin: protocol.score_bin for every value (truncation is its floor for p >= 0;
    the bounds, applied before the cast to integers, put what lies outside [0, 1] in the nearest bin, however
    far) and numpy's argmax for the predicted class. A row with a NaN or infinite probability (no model gives
    one) has no cell. Ufuncs with ``out=`` rather than np.clip or fancy indexing: on a batch of 100 rows numpy's
    per-call cost is most of the work."""
    p = np.asarray(probabilities, dtype=np.float64)
    k = p.shape[1]
    if not math.isfinite(p.sum()):  # the sum is finite exactly when every value is (probabilities cannot overflow)
        p = p[np.isfinite(p).all(axis=1)]
    scaled = p * bins
    np.minimum(scaled, bins - 1, out=scaled)  # bounded before the cast: a huge value would wrap to a negative int
    np.maximum(scaled, 0, out=scaled)
    idx = scaled.astype(np.int64)
    classes = _CLASSES[:, :k] if k <= _CLASSES.shape[1] else np.arange(k)[None, :]
    other = np.not_equal(classes, p.argmax(axis=1)[:, None])
    idx += _offsets(k, bins)  # class c's "predicted" cells start at 2c × bins, its "other" cells one block later
    idx += other * bins
    return np.bincount(idx.ravel(), minlength=k * 2 * bins)


_CLASSES = np.arange(MAX_SCORED_CLASSES)[None, :]


@functools.lru_cache(maxsize=64)
def _offsets(classes: int, bins: int) -> np.ndarray:
    return np.arange(0, classes * 2 * bins, 2 * bins)


def freeze_scores(cells: np.ndarray, bins: int) -> ScoreCounts:
    """The flat counts of ``score_cells`` (summed) as the window's ScoreCounts."""
    per_class = cells.reshape(-1, 2, bins).tolist()
    return ScoreCounts(predicted=tuple(tuple(c[0]) for c in per_class),
                       other=tuple(tuple(c[1]) for c in per_class), bins=bins)

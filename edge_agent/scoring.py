"""Score counts on the device: a batch's predicted probabilities counted into ScoreCounts' cells.

Kept apart from telemetry.py, which only holds them in the open window: the counting is a few numpy operations
per batch (no loop over rows), binned off the hot path like the feature counts.
"""

import numpy as np

from .protocol import ScoreCounts


def score_cells(probabilities: np.ndarray, bins: int) -> np.ndarray:
    """Counts of a batch's probabilities (rows × classes) in ScoreCounts' cells, as one flat array laid out
    class × (predicted, other) × bin: protocol.score_bin for every value (truncation is its floor for p >= 0,
    and the clip puts what a rounding left outside [0, 1] in the nearest bin) and numpy's argmax for the
    predicted class. A row with a NaN or infinite probability (no model gives one) has no cell."""
    p = np.asarray(probabilities, dtype=np.float64)
    k = p.shape[1]
    finite = np.isfinite(p)
    if not finite.all():
        p = p[finite.all(axis=1)]
    idx = (p * bins).astype(np.int64)
    np.clip(idx, 0, bins - 1, out=idx)
    idx += np.arange(bins, k * 2 * bins, 2 * bins)  # class c's "other" cells start at (2c + 1) × bins ...
    idx[np.arange(len(p)), p.argmax(axis=1)] -= bins  # ... and its "predicted" cells one block before
    return np.bincount(idx.ravel(), minlength=k * 2 * bins)


def freeze_scores(cells: np.ndarray, bins: int) -> ScoreCounts:
    """The flat counts of ``score_cells`` (summed) as the window's ScoreCounts."""
    per_class = cells.reshape(-1, 2, bins).tolist()
    return ScoreCounts(predicted=tuple(tuple(c[0]) for c in per_class),
                       other=tuple(tuple(c[1]) for c in per_class), bins=bins)

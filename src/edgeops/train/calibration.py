"""Calibration references, measured on the held-out rows when a model is trained and carried by its release.

A device reports how its predicted probabilities (classifiers) or predicted values (regressors) fell on fixed
bins; these tables say what such a bin meant on data whose labels were known: how often the class was the true
one, or how large the error was. telemetry/performance.py reads live counts with them. The ONNX model's own outputs are
used (not scikit-learn's), so a row falls in the same bin here as on the device; the binning rule is
protocol.score_bin, vectorised and tested equal to it.
"""

from typing import Any

import numpy as np

from edge_agent.protocol import (
    MAX_SCORED_CLASSES,
    SCORE_BINS,
    ErrorCalibration,
    NumericBins,
    ScoreCalibration,
    ScoreCells,
)
from edgeops.train.reference import numeric_bin_indices


def score_bin_indices(probabilities: np.ndarray, bins: int = SCORE_BINS) -> np.ndarray:
    """protocol.score_bin for a whole array: bin index, -1 for NaN."""
    p = np.asarray(probabilities, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        idx = np.clip(np.floor(p * bins), 0, bins - 1)
    return np.where(np.isnan(p), -1, np.nan_to_num(idx)).astype(np.int64)


def class_indices(labels: Any, classes: list[Any]) -> np.ndarray:
    """Each label's position in ``classes`` (-1 for a label that is not a class), compared by text as the
    agent compares ONNX labels with manifest classes."""
    position = {str(c): i for i, c in enumerate(classes)}
    return np.array([position.get(str(_plain(v)), -1) for v in labels], dtype=np.int64)


def score_calibration(probabilities: np.ndarray, truth: np.ndarray, bins: int = SCORE_BINS) -> ScoreCalibration | None:
    """The calibration table of held-out ``probabilities`` (rows × classes) with the ``truth`` class indices;
    None for more than MAX_SCORED_CLASSES classes (devices send no score counts then). Rows with a non-finite
    probability are left out, as the agent leaves them out."""
    p = np.asarray(probabilities, dtype=np.float64)
    k = p.shape[1]
    if not 1 <= k <= MAX_SCORED_CLASSES:
        return None
    finite = np.isfinite(p).all(axis=1)
    p, truth = p[finite], np.asarray(truth)[finite]
    idx = score_bin_indices(p, bins)
    predicted = np.argmax(p, axis=1)
    cell = np.arange(k)[None, :] * bins + idx
    is_predicted = np.arange(k)[None, :] == predicted[:, None]
    is_true = np.arange(k)[None, :] == truth[:, None]
    middle = (np.arange(bins) + 0.5) / bins

    def cells(side: np.ndarray) -> ScoreCells:
        rows = np.bincount(cell[side], minlength=k * bins).reshape(k, bins)
        hits = np.bincount(cell[side & is_true], minlength=k * bins).reshape(k, bins)
        sums = np.bincount(cell[side], weights=p[side], minlength=k * bins).reshape(k, bins)
        mean = np.clip(np.where(rows > 0, sums / np.maximum(rows, 1), middle[None, :]), 0.0, 1.0)
        return ScoreCells(rows=_ints(rows), hits=_ints(hits), mean=tuple(tuple(_short(v) for v in r) for r in mean))

    return ScoreCalibration(predicted=cells(is_predicted), other=cells(~is_predicted), bins=bins)


def error_calibration(predictions: np.ndarray, truth: np.ndarray, bins: NumericBins) -> ErrorCalibration:
    """Per prediction bin (then underflow and overflow) the held-out rows and the mean and standard deviation of
    their absolute error. Rows with a missing prediction or target are left out."""
    pred = np.asarray(predictions, dtype=np.float64)
    error = np.abs(np.asarray(truth, dtype=np.float64) - pred)
    idx = numeric_bin_indices(bins.edges, pred)
    size = bins.size
    idx = np.where(idx == -1, size, np.where(idx == -2, size + 1, idx))
    keep = (idx >= 0) & np.isfinite(error)
    idx, error = idx[keep], error[keep]
    rows = np.bincount(idx, minlength=size + 2)
    total = np.bincount(idx, weights=error, minlength=size + 2)
    squares = np.bincount(idx, weights=error ** 2, minlength=size + 2)
    mean = np.where(rows > 0, total / np.maximum(rows, 1), 0.0)
    sd = np.sqrt(np.maximum(np.where(rows > 0, squares / np.maximum(rows, 1), 0.0) - mean ** 2, 0.0))
    return ErrorCalibration(rows=tuple(int(r) for r in rows), mean=tuple(_short(v) for v in mean),
                            sd=tuple(_short(v) for v in sd))


def _ints(matrix: np.ndarray) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(int(v) for v in row) for row in matrix)


def _short(value: float) -> float:
    """Six significant digits: the tables' own sampling noise is far larger, and the manifest stays small."""
    return float(f"{float(value):.6g}")


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


__all__ = ["class_indices", "error_calibration", "score_bin_indices", "score_calibration"]

"""Performance without labels: accuracy and F1 (classifiers, CBPE-style) or MAE (regressors, DLE-like) estimated
from the counts devices send, read with the calibration table their release carries, with an interval.

Classifiers. For class c a window counts its probability p_c per bin, split by whether c was predicted
(protocol/performance.py). The calibration table says how often, on held-out rows, the class was the true one
in each such cell. An expected confusion matrix per class follows: TP_c sums the predicted-c cells times their
hit rate, FN_c the other-c cells times theirs; accuracy is Σ TP_c / rows, F1_c is 2 TP_c / (predicted_c + TP_c
+ FN_c) (binary: the positive class, ``classes[1]``, as training scores it; multiclass: the macro mean over the
classes that occur).

A cell's hit rate is shrunk, because the holdout is small and most cells are thin: first the cells of all
classes in that bin are pooled and pulled toward their mean probability (worth ``PRIOR_ROWS`` held-out rows:
a calibrated model's probability is its hit rate), then each class's cell is pulled toward the pool (worth
``CLASS_PRIOR_ROWS`` rows). The interval adds two variances: the realized count is a sum of Bernoulli trials
(Poisson-binomial: Σ q(1 − q) over rows), and every cell's hit rate is itself an estimate from few rows (a Beta
variance with half a hit and half a miss added, shared by all rows in the cell, so it does not shrink with
traffic). F1's interval is the delta method on the same two. Neither covers what the bins cannot see: traffic
whose probabilities move within a bin.

Regressors. Per prediction bin (plus underflow and overflow) the holdout's mean absolute error, shrunk toward
the overall one (``PRIOR_ROWS_ERRORS`` rows); MAE is their mean weighted by the live counts, its variance the
spread of single errors plus the tables' own noise.

Assumptions, in words users can check (docs/monitoring.md): the probabilities mean the same on live data as
on the holdout (no concept shift: the relation between inputs and labels is unchanged), and the mix of labels
moves only through the inputs (label shift without a covariate change is invisible to this method).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from statistics import NormalDist
from typing import Any, Literal

import numpy as np

from edge_agent.protocol import (
    ErrorCalibration,
    ReleaseManifest,
    ScoreCalibration,
    ScoreCells,
    TelemetryWindow,
)
from edgeops.config.monitor import PerformanceThresholds
from edgeops.telemetry.drift import parse_ts

PRIOR_ROWS = 1.0
CLASS_PRIOR_ROWS = 10.0
PRIOR_ROWS_ERRORS = 2.0
CONFIDENCE = 0.95

Scope = tuple[str, int, str | None]   # (model, version, device); device None = the whole fleet


@dataclass(frozen=True)
class Estimate:
    """One estimated metric over ``rows`` predictions, its interval, and the release's own test value."""

    metric: str
    value: float
    low: float
    high: float
    rows: int
    reference: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "value": round(self.value, 4), "low": round(self.low, 4),
                "high": round(self.high, 4), "rows": self.rows, "reference": self.reference}


@dataclass(frozen=True)
class ScopeEstimate:
    """The estimates for one model version in one scope (a device, or the fleet when ``device`` is None);
    ``reason`` says why there are none."""

    model: str
    version: int
    device: str | None
    windows: int
    estimates: tuple[Estimate, ...] = ()
    reason: str | None = None

    def get(self, metric: str) -> Estimate | None:
        return next((e for e in self.estimates if e.metric == metric), None)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version, "device": self.device, "windows": self.windows,
                "estimates": [e.to_dict() for e in self.estimates], "reason": self.reason}


TrendPoint = tuple[str, ScopeEstimate]   # (the slot's start, UTC ISO; the fleet's estimate in it)


# --- the calibration tables -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class HitRates:
    """Shrunk hit rates of one side of a ScoreCalibration (classes × bins), their variances, and what the
    covariance between classes of a bin needs (each class's weight on the shared pool, the pool's variance)."""

    rate: np.ndarray
    variance: np.ndarray
    pool_weight: np.ndarray
    pool_variance: np.ndarray


def hit_rates(cells: ScoreCells) -> HitRates:
    rows, hits = np.asarray(cells.rows, dtype=float), np.asarray(cells.hits, dtype=float)
    mean = np.asarray(cells.mean, dtype=float)
    pooled_rows, pooled_hits = rows.sum(axis=0), hits.sum(axis=0)
    pooled_mean = np.where(pooled_rows > 0, (rows * mean).sum(axis=0) / np.maximum(pooled_rows, 1),
                           mean.mean(axis=0))
    pool = (pooled_hits + PRIOR_ROWS * pooled_mean) / (pooled_rows + PRIOR_ROWS)
    pool_variance = _beta_variance(pooled_hits + PRIOR_ROWS * pooled_mean, pooled_rows + PRIOR_ROWS)
    rate = (hits + CLASS_PRIOR_ROWS * pool) / (rows + CLASS_PRIOR_ROWS)
    weight = CLASS_PRIOR_ROWS / (rows + CLASS_PRIOR_ROWS)
    variance = _beta_variance(hits + CLASS_PRIOR_ROWS * pool, rows + CLASS_PRIOR_ROWS) + weight ** 2 * pool_variance
    return HitRates(rate, variance, weight, pool_variance)


def _beta_variance(hits: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The variance of a hit rate seen ``hits`` times in ``rows``, with half a hit and half a miss added (Jeffreys):
    without them 20 hits in 20 rows would claim a hit rate of 1 known to within 0.5 %, when 0.9 is quite
    consistent with it (it gives 20 of 20 one time in eight)."""
    smoothed = (hits + 0.5) / (rows + 1)
    variance: np.ndarray = smoothed * (1 - smoothed) / (rows + 2)
    return variance


# --- estimators -----------------------------------------------------------------------------------------------
def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def _interval(metric: str, value: float, variance: float, rows: int, confidence: float,
              reference: float | None, upper: float | None = 1.0) -> Estimate:
    half = _z(confidence) * float(np.sqrt(max(variance, 0.0)))
    low, high = max(value - half, 0.0), value + half
    if upper is not None:
        value, high = min(value, upper), min(high, upper)
    return Estimate(metric, float(value), float(low), float(high), rows, reference)


def _expected(counts: np.ndarray, rates: HitRates) -> tuple[np.ndarray, np.ndarray]:
    """Per class: expected hits over the cells' counts and the variance of the realized hits."""
    mean = (counts * rates.rate).sum(axis=1)
    variance = (counts * rates.rate * (1 - rates.rate)).sum(axis=1) + (counts ** 2 * rates.variance).sum(axis=1)
    return mean, variance


def estimate_classifier(predicted: np.ndarray, other: np.ndarray, calibration: ScoreCalibration,
                        task: str, metrics: dict[str, float] | None = None,
                        confidence: float = CONFIDENCE) -> tuple[Estimate, ...]:
    """Accuracy and F1 of the rows counted in ``predicted`` / ``other`` (classes × bins, summed ScoreCounts)."""
    metrics = metrics or {}
    rows = int(predicted.sum())
    if rows == 0:
        return ()
    pos, neg = hit_rates(calibration.predicted), hit_rates(calibration.other)
    tp, tp_var = _expected(predicted, pos)
    fn, fn_var = _expected(other, neg)
    # Accuracy: classes of a bin share the pooled hit rate, so their calibration noise is correlated.
    own = (predicted ** 2 * (pos.variance - pos.pool_weight ** 2 * pos.pool_variance)).sum()
    shared = (((predicted * pos.pool_weight).sum(axis=0)) ** 2 * pos.pool_variance).sum()
    trials = (predicted * pos.rate * (1 - pos.rate)).sum()
    accuracy = _interval("accuracy", tp.sum() / rows, (trials + own + shared) / rows ** 2, rows, confidence,
                         metrics.get("accuracy"))
    counted = predicted.sum(axis=1)
    denominator = counted + tp + fn
    f1 = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1e-12), 0.0)
    d_tp = 2 * (counted + fn) / np.maximum(denominator, 1e-12) ** 2
    d_fn = -2 * tp / np.maximum(denominator, 1e-12) ** 2
    f1_var = d_tp ** 2 * tp_var + d_fn ** 2 * fn_var
    if task == "binary":
        chosen = np.array([False, True]) if len(f1) == 2 else np.ones(len(f1), dtype=bool)
    else:
        chosen = (counted > 0) | (tp + fn >= 1.0)   # the classes that occur, as scikit-learn's macro F1 takes them
    k = int(chosen.sum())
    f1_estimate = _interval("f1", float(f1[chosen].mean()), float(f1_var[chosen].sum()) / k ** 2, rows, confidence,
                            metrics.get("f1"))
    return accuracy, f1_estimate


def estimate_regressor(counts: np.ndarray, calibration: ErrorCalibration, metrics: dict[str, float] | None = None,
                       confidence: float = CONFIDENCE) -> tuple[Estimate, ...]:
    """MAE of the rows counted in ``counts`` (the prediction bins, then underflow and overflow)."""
    n = np.asarray(counts, dtype=float)
    rows = int(n.sum())
    if rows == 0:
        return ()
    r, m, s = (np.asarray(v, dtype=float) for v in (calibration.rows, calibration.mean, calibration.sd))
    total = max(r.sum(), 1.0)
    overall = (r * m).sum() / total
    spread = max((r * (s ** 2 + m ** 2)).sum() / total - overall ** 2, 0.0)
    k = PRIOR_ROWS_ERRORS
    mean = (r * m + k * overall) / (r + k)
    variance_one = (r * s ** 2 + k * spread) / (r + k)   # of one row's absolute error in the bin
    variance = ((n * variance_one).sum() + (n ** 2 * variance_one / (r + k)).sum()) / rows ** 2
    return (_interval("mae", float((n * mean).sum() / rows), float(variance), rows, confidence,
                      (metrics or {}).get("mae"), upper=None),)


# --- per scope ------------------------------------------------------------------------------------------------
@dataclass
class _Sums:
    windows: int = 0
    skipped: int = 0
    scores: list[np.ndarray] = field(default_factory=list)      # [predicted, other] summed
    predictions: np.ndarray | None = None                       # bins + underflow + overflow, summed


def _add(sums: _Sums, window: TelemetryWindow, manifest: ReleaseManifest) -> None:
    sums.windows += 1
    cal = manifest.calibration
    if isinstance(cal, ScoreCalibration):
        s = window.scores
        if s is None or s.bins != cal.bins or s.classes != cal.classes:
            sums.skipped += 1
            return
        arrays = [np.asarray(s.predicted, dtype=float), np.asarray(s.other, dtype=float)]
        sums.scores = arrays if not sums.scores else [a + b for a, b in zip(sums.scores, arrays, strict=True)]
    elif isinstance(cal, ErrorCalibration):
        p = window.predictions
        if p is None or len(p.counts) + 2 != len(cal.rows):
            sums.skipped += 1
            return
        vector = np.asarray([*p.counts, p.underflow, p.overflow], dtype=float)
        sums.predictions = vector if sums.predictions is None else sums.predictions + vector


def estimate_performance(windows: Iterable[TelemetryWindow], references: Callable[[str, int], Any], *,
                         per_device: bool = True, confidence: float = CONFIDENCE) -> list[ScopeEstimate]:
    """Estimates per model version, fleet-wide and (``per_device``) per device, from stored windows and the
    releases ``references(model, version)`` returns (a ReleaseManifest, or None when unknown)."""
    sums: dict[Scope, _Sums] = {}
    manifests: dict[tuple[str, int], ReleaseManifest | None] = {}
    for w in windows:
        key = (w.model, w.version)
        if key not in manifests:
            manifests[key] = references(*key)
        manifest = manifests[key]
        if manifest is None:
            continue
        for scope in ((w.model, w.version, None), *([(w.model, w.version, w.device)] if per_device else [])):
            _add(sums.setdefault(scope, _Sums()), w, manifest)
    out = []
    for (model, version, device), total in sorted(sums.items(), key=lambda kv: (kv[0][0], kv[0][1],
                                                                                kv[0][2] or "")):
        manifest = manifests[model, version]
        assert manifest is not None
        out.append(_scope_estimate(model, version, device, total, manifest, confidence))
    return out


def _scope_estimate(model: str, version: int, device: str | None, total: _Sums, manifest: ReleaseManifest,
                    confidence: float) -> ScopeEstimate:
    cal, metrics = manifest.calibration, dict(manifest.metrics)
    estimates: tuple[Estimate, ...] = ()
    reason = None
    if cal is None:
        reason = "the release carries no calibration (made before manifest 1.2): estimation is not available"
    elif isinstance(cal, ScoreCalibration) and total.scores:
        estimates = estimate_classifier(total.scores[0], total.scores[1], cal, manifest.outputs.task, metrics,
                                        confidence)
    elif isinstance(cal, ErrorCalibration) and total.predictions is not None:
        estimates = estimate_regressor(total.predictions, cal, metrics, confidence)
    if cal is not None and not estimates:
        reason = ("no score counts in the windows (agents before telemetry 1.2?)" if isinstance(cal, ScoreCalibration)
                  else "no predictions counted yet")
    return ScopeEstimate(model, version, device, total.windows, estimates, reason)


def estimate_trend(windows: Iterable[TelemetryWindow], references: Callable[[str, int], Any], *,
                   slot_s: float = 3600.0, confidence: float = CONFIDENCE) -> dict[tuple[str, int], list[TrendPoint]]:
    """Fleet-wide estimates per model version and time slot (windows grouped by the ``slot_s`` slot their end
    falls in), oldest first: the series a chart of estimated performance over time draws."""
    slots: dict[float, list[TelemetryWindow]] = {}
    for w in windows:
        end = parse_ts(w.end).timestamp()
        slots.setdefault(end - end % slot_s, []).append(w)
    out: dict[tuple[str, int], list[TrendPoint]] = {}
    for start in sorted(slots):
        slot = datetime.fromtimestamp(start, UTC).isoformat()
        for scope in estimate_performance(slots[start], references, per_device=False, confidence=confidence):
            out.setdefault((scope.model, scope.version), []).append((slot, scope))
    return out


# --- the verdict ----------------------------------------------------------------------------------------------
PerformanceVerdict = Literal["ok", "degraded", "insufficient_data"]


@dataclass(frozen=True)
class Judged:
    """One scope's estimates, the one judged, and the verdict with its reason and threshold."""

    scope: ScopeEstimate
    verdict: PerformanceVerdict
    estimate: Estimate | None = None
    threshold: float | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {**self.scope.to_dict(), "verdict": self.verdict, "judged": None if self.estimate is None
                else self.estimate.metric, "threshold": self.threshold, "reason": self.reason}


def estimate_threshold(metric: str, reference: float, thresholds: PerformanceThresholds) -> float:
    """The level an estimate of ``metric`` is judged against: the release's test value minus the tolerance
    (accuracy, F1), or times (1 + tolerance) for MAE. The verdict and the report's chart draw the same line."""
    if metric == "mae":
        return reference * (1 + thresholds.mae_tolerance)
    return reference - (thresholds.accuracy_tolerance if metric == "accuracy" else thresholds.f1_tolerance)


def judge_estimate(scope: ScopeEstimate, thresholds: PerformanceThresholds) -> Judged:
    """The verdict on one scope's estimate against the release's own test metric (module docstring)."""
    regression = scope.get("mae") is not None
    metric = "mae" if regression else thresholds.metric
    estimate = scope.get(metric)
    if estimate is None:
        return Judged(scope, "insufficient_data", reason=scope.reason or f"no {metric} estimate")
    if estimate.rows < thresholds.min_rows:
        return Judged(scope, "insufficient_data", estimate,
                      reason=f"{estimate.rows} < {thresholds.min_rows} predictions")
    if estimate.reference is None:
        return Judged(scope, "insufficient_data", estimate, reason=f"the release has no test {metric} to compare")
    threshold = estimate_threshold(metric, estimate.reference, thresholds)
    if regression:
        if estimate.low > threshold:
            return Judged(scope, "degraded", estimate, threshold,
                          f"estimated MAE {estimate.value:.3g} (at least {estimate.low:.3g}) > {threshold:.3g}")
        return Judged(scope, "ok", estimate, threshold)
    if estimate.high < threshold:
        return Judged(scope, "degraded", estimate, threshold,
                      f"estimated {metric} {estimate.value:.3f} (at most {estimate.high:.3f}) < {threshold:.3f}")
    return Judged(scope, "ok", estimate, threshold)


def judge_performance(windows: Iterable[TelemetryWindow], references: Callable[[str, int], Any],
                      thresholds: PerformanceThresholds, *, per_device: bool = True) -> list[Judged]:
    return [judge_estimate(scope, thresholds)
            for scope in estimate_performance(windows, references, per_device=per_device,
                                              confidence=thresholds.confidence)]


__all__ = ["CONFIDENCE", "Estimate", "HitRates", "Judged", "PerformanceVerdict",
           "ScopeEstimate", "TrendPoint", "estimate_classifier", "estimate_performance", "estimate_regressor",
           "estimate_threshold", "estimate_trend", "hit_rates", "judge_estimate", "judge_performance"]

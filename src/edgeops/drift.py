"""Drift and health statistics over binned telemetry counts. Plain functions: no Prefect, no I/O.

Devices send counts on the manifest's reference bins (``Counts.vector()``: the bins, then underflow, overflow,
unseen, missing). We sum windows (per device and fleet-wide), then compare the summed counts with the
reference counts of the release with three statistics, each chosen for a reason:

* **PSI** (population stability index) — the industry's effect size; ``sum((o - r) * ln(o / r))`` over bin
  proportions. Empty bins make the log infinite, so both distributions get a pseudo-count ``smoothing`` (the
  epsilon, 0.5 per bin by default, i.e. a Jeffreys prior) before normalising; bins empty on *both* sides are
  dropped first so unused buckets (e.g. ``unseen`` of a numeric feature) add nothing.
* **Jensen–Shannon distance** (``scipy.spatial.distance.jensenshannon``, base 2, so in [0, 1]) — bounded and
  finite with empty bins, so it needs no smoothing; computed on the raw proportions.
* **chi-square goodness of fit** (``scipy.stats.chisquare``) with expected counts = reference proportions
  scaled to the observed total. Bins with an expected count below ``min_expected`` (Cochran's rule, 5) are
  pooled into one bin; if the pool is still too small it is folded into the smallest remaining bin. With fewer
  than two bins left there is no test (p = 1). This is the significance test.

Verdict (``DriftThresholds``): fewer than ``min_samples`` (1000) observations, or fewer than ``min_per_bin`` (50)
per reference bin → ``insufficient_data``. Why so many: with k bins and n samples from the *same* distribution
the JS distance is about √(k / (8 n ln 2)) — 0.05 for k=8, n=500, right under the 0.1 threshold. At 50 per bin
the noise is ≈ 0.05 whatever k is, and reaching JS 0.1 by chance needs a chi-square p far below 0.01. Otherwise
``drift`` when an effect size is large (PSI ≥ 0.2 *or* JS ≥ 0.1) *and* chi-square is significant
(p < 0.01). Requiring both keeps large samples from flagging trivial differences (chi-square alone would) and
small samples from flagging noise (PSI alone is noisy at small n).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
from scipy.spatial.distance import jensenshannon
from scipy.stats import chisquare

from edge_agent.protocol import Counts, Reference, TelemetryWindow

Verdict = Literal["ok", "drift", "insufficient_data"]
HealthVerdict = Literal["ok", "degraded", "insufficient_data"]
PREDICTION = "__prediction__"


@dataclass(frozen=True)
class DriftThresholds:
    """Documented defaults; see the module docstring for how they combine."""

    psi: float = 0.2            # PSI ≥ 0.2: "significant shift" in common practice (0.1–0.2: moderate)
    js: float = 0.1             # JS distance (base 2) ≥ 0.1
    chi2_p: float = 0.01        # chi-square p-value below this is significant
    min_samples: int = 1000     # no verdict on fewer observations ...
    min_per_bin: float = 50.0   # ... nor on fewer than this many per reference bin (JS noise ≈ √(k / 8n·ln2))
    min_expected: float = 5.0   # Cochran's rule for chi-square bins
    smoothing: float = 0.5      # PSI pseudo-count per bin (the epsilon)

    def __post_init__(self) -> None:
        if self.psi <= 0 or not 0 < self.js <= 1 or not 0 < self.chi2_p < 1:
            raise ValueError("drift thresholds: psi > 0, 0 < js <= 1, 0 < chi2_p < 1")
        if self.min_samples < 1 or self.min_expected <= 0 or self.smoothing <= 0:
            raise ValueError("drift thresholds: min_samples >= 1, min_expected > 0, smoothing > 0")


@dataclass(frozen=True)
class HealthThresholds:
    max_error_rate: float = 0.05
    max_latency_p95_ms: float | None = None     # None: latency is reported, not judged
    min_requests: int = 50
    min_accuracy: float | None = None
    max_mae: float | None = None


def _pair(reference: Sequence[float], observed: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(reference, dtype=float)
    obs = np.asarray(observed, dtype=float)
    if ref.shape != obs.shape or ref.ndim != 1:
        raise ValueError(f"reference has {ref.size} bins, observed {obs.size}")
    if (ref < 0).any() or (obs < 0).any():
        raise ValueError("counts must be non-negative")
    return ref, obs


def population_stability_index(reference: Sequence[float], observed: Sequence[float],
                               smoothing: float = 0.5) -> float:
    """PSI with ``smoothing`` pseudo-counts per bin; bins empty on both sides are dropped."""
    ref, obs = _pair(reference, observed)
    used = (ref > 0) | (obs > 0)
    ref, obs = ref[used] + smoothing, obs[used] + smoothing
    p, q = ref / ref.sum(), obs / obs.sum()
    return float(np.sum((q - p) * np.log(q / p)))


def jensen_shannon_distance(reference: Sequence[float], observed: Sequence[float]) -> float:
    """JS distance, base 2 (0 = same distribution, 1 = disjoint)."""
    ref, obs = _pair(reference, observed)
    return float(jensenshannon(ref / ref.sum(), obs / obs.sum(), base=2.0))


@dataclass(frozen=True)
class ChiSquare:
    statistic: float
    p_value: float
    bins: int          # bins left after pooling (dof = bins - 1)


def pool_expected(expected: np.ndarray, observed: np.ndarray,
                  min_expected: float) -> tuple[np.ndarray, np.ndarray]:
    """Pool bins whose expected count is below ``min_expected``; fold a still-small pool into the smallest bin."""
    keep = expected >= min_expected
    e, o = list(expected[keep]), list(observed[keep])
    pool_e, pool_o = float(expected[~keep].sum()), float(observed[~keep].sum())
    if pool_e >= min_expected:
        e.append(pool_e)
        o.append(pool_o)
    elif e and (pool_e > 0 or pool_o > 0):
        i = int(np.argmin(e))
        e[i] += pool_e
        o[i] += pool_o
    return np.asarray(e), np.asarray(o)


def chi_square_test(reference: Sequence[float], observed: Sequence[float], min_expected: float = 5.0) -> ChiSquare:
    """Goodness of fit of ``observed`` to the reference proportions (see the module docstring for pooling)."""
    ref, obs = _pair(reference, observed)
    n = obs.sum()
    if n <= 0 or ref.sum() <= 0:
        return ChiSquare(0.0, 1.0, 0)
    e, o = pool_expected(ref / ref.sum() * n, obs, min_expected)
    if len(e) < 2:
        return ChiSquare(0.0, 1.0, len(e))
    result = chisquare(o, e)
    return ChiSquare(float(result.statistic), float(result.pvalue), len(e))


@dataclass(frozen=True)
class DriftResult:
    """Drift of one feature (or of the predictions, name ``__prediction__``) against its reference."""

    name: str
    n: int
    reference_n: int
    verdict: Verdict
    psi: float | None = None
    js: float | None = None
    chi2: float | None = None
    p_value: float | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "n": self.n, "reference_n": self.reference_n, "verdict": self.verdict,
                "psi": self.psi, "js": self.js, "chi2": self.chi2, "p_value": self.p_value, "reason": self.reason}


def compare_counts(name: str, reference: Sequence[float], observed: Sequence[float],
                   thresholds: DriftThresholds = DriftThresholds()) -> DriftResult:
    """All three statistics and the verdict for one feature."""
    n, ref_n = int(sum(observed)), int(sum(reference))
    if len(reference) != len(observed):
        return DriftResult(name, n, ref_n, "insufficient_data",
                           reason=f"{len(observed)} bins observed, reference has {len(reference)}")
    if ref_n == 0:
        return DriftResult(name, n, ref_n, "insufficient_data", reason="empty reference")
    needed = max(thresholds.min_samples, math.ceil(thresholds.min_per_bin * sum(1 for r in reference if r > 0)))
    if n < needed:
        return DriftResult(name, n, ref_n, "insufficient_data", reason=f"{n} < {needed} samples")
    psi = population_stability_index(reference, observed, thresholds.smoothing)
    js = jensen_shannon_distance(reference, observed)
    chi = chi_square_test(reference, observed, thresholds.min_expected)
    large = [f"PSI {psi:.3f} ≥ {thresholds.psi}"] if psi >= thresholds.psi else []
    large += [f"JS {js:.3f} ≥ {thresholds.js}"] if js >= thresholds.js else []
    significant = chi.p_value < thresholds.chi2_p
    verdict: Verdict = "drift" if large and significant else "ok"
    reason = "; ".join(large) + (f"; chi-square p={chi.p_value:.2g}" if verdict == "drift" else "")
    return DriftResult(name, n, ref_n, verdict, psi, js, chi.statistic, chi.p_value, reason)


# --- summing windows ---------------------------------------------------------------------------------------

def parse_ts(text: str) -> datetime:
    """An ISO-8601 timestamp as an aware UTC datetime (a naive one is taken as UTC)."""
    ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


@dataclass
class WindowTotals:
    """Running sums of windows of one (model, version) and one scope (a device, or the fleet).

    Latency quantiles cannot be summed exactly from window quantiles, so we keep two aggregates of the windows'
    p95: the mean weighted by window counts (an estimate) and the maximum, which is a true upper bound of the
    pooled p95 (if every window has 95% of its values at or below its p95, the pool has 95% at or below the max).
    """

    model: str
    version: int
    windows: int = 0
    count: int = 0
    dropped: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    features: dict[str, np.ndarray] = field(default_factory=dict)
    predictions: np.ndarray | None = None
    mismatched: int = 0
    p95_sum: float = 0.0
    p95_weight: int = 0
    p95_max: float | None = None
    feedback: dict[str, float] = field(default_factory=dict)
    devices: set[str] = field(default_factory=set)

    @property
    def p95_estimate(self) -> float | None:
        """The count-weighted mean of the windows' p95 (see the class docstring), None without latencies."""
        return self.p95_sum / self.p95_weight if self.p95_weight else None

    def add(self, window: TelemetryWindow) -> None:
        self.windows += 1
        self.count += window.count
        self.dropped += window.dropped
        self.devices.add(window.device)
        for kind, n in window.errors.items():
            self.errors[kind] = self.errors.get(kind, 0) + n
        for col, counts in window.features.items():
            self.features[col] = self._sum(self.features.get(col), counts)
        if window.predictions is not None:
            self.predictions = self._sum(self.predictions, window.predictions)
        p95 = window.latency_ms.get("p95")
        if p95 is not None and window.count > 0:
            self.p95_sum += p95 * window.count
            self.p95_weight += window.count
            self.p95_max = p95 if self.p95_max is None else max(self.p95_max, p95)
        for key, value in normalise_feedback(window.feedback).items():
            self.feedback[key] = self.feedback.get(key, 0.0) + value

    def _sum(self, total: np.ndarray | None, counts: Counts) -> np.ndarray | None:
        vec = np.asarray(counts.vector(), dtype=np.int64)
        if total is None:
            return vec
        if total.shape != vec.shape:    # a device that binned differently: keep it out, and say so
            self.mismatched += 1
            return total
        total += vec
        return total


def normalise_feedback(feedback: dict[str, float]) -> dict[str, float]:
    """Feedback as sums: ``labelled`` (predictions with ground truth), ``correct`` (classifiers) and
    ``abs_error_sum`` (regressors). Windows may send means instead (``accuracy`` / ``mae`` with ``labelled``);
    those are turned into sums here so windows combine with the right weights."""
    labelled = float(feedback.get("labelled", feedback.get("n", 0.0)))
    out = {"labelled": labelled} if labelled > 0 else {}
    if "correct" in feedback:
        out["correct"] = float(feedback["correct"])
    elif "accuracy" in feedback and labelled > 0:
        out["correct"] = float(feedback["accuracy"]) * labelled
    if "abs_error_sum" in feedback:
        out["abs_error_sum"] = float(feedback["abs_error_sum"])
    elif "mae" in feedback and labelled > 0:
        out["abs_error_sum"] = float(feedback["mae"]) * labelled
    return out


Scope = tuple[str, int, str | None]   # (model, version, device); device None = the whole fleet


def sum_windows(windows: Iterable[TelemetryWindow], since: datetime | None = None) -> dict[Scope, WindowTotals]:
    """Sum windows per (model, version, device) and fleet-wide (device None), keeping those that ended at or
    after ``since`` (the sliding time window). One pass; cost is linear in the number of windows."""
    totals: dict[Scope, WindowTotals] = {}
    for window in windows:
        if since is not None and parse_ts(window.end) < since:
            continue
        for key in ((window.model, window.version, window.device), (window.model, window.version, None)):
            if key not in totals:
                totals[key] = WindowTotals(window.model, window.version)
            totals[key].add(window)
    return totals


# --- health ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Health:
    requests: int
    errors: int
    error_rate: float | None
    latency_p95_ms: float | None       # count-weighted mean of window p95 (estimate)
    latency_p95_max_ms: float | None   # max of window p95 (upper bound)
    labelled: int
    accuracy: float | None
    mae: float | None
    dropped: int
    verdict: HealthVerdict
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def assess_health(totals: WindowTotals, thresholds: HealthThresholds = HealthThresholds()) -> Health:
    """Error rate = errors / requests (a window's ``count`` includes failed requests); latency and live
    accuracy/MAE as described on WindowTotals and normalise_feedback."""
    errors = sum(totals.errors.values())
    rate = errors / totals.count if totals.count else None
    p95 = totals.p95_estimate
    labelled = int(totals.feedback.get("labelled", 0))
    accuracy = totals.feedback["correct"] / labelled if labelled and "correct" in totals.feedback else None
    mae = totals.feedback["abs_error_sum"] / labelled if labelled and "abs_error_sum" in totals.feedback else None
    problems = []
    if rate is not None and rate > thresholds.max_error_rate:
        problems.append(f"error rate {rate:.1%} > {thresholds.max_error_rate:.1%}")
    if thresholds.max_latency_p95_ms is not None and p95 is not None and p95 > thresholds.max_latency_p95_ms:
        problems.append(f"p95 latency {p95:.1f} ms > {thresholds.max_latency_p95_ms} ms")
    if thresholds.min_accuracy is not None and accuracy is not None and accuracy < thresholds.min_accuracy:
        problems.append(f"accuracy {accuracy:.3f} < {thresholds.min_accuracy}")
    if thresholds.max_mae is not None and mae is not None and mae > thresholds.max_mae:
        problems.append(f"MAE {mae:.3g} > {thresholds.max_mae}")
    verdict: HealthVerdict = "degraded" if problems else "ok"
    if not problems and totals.count < thresholds.min_requests:
        verdict, problems = "insufficient_data", [f"{totals.count} < {thresholds.min_requests} requests"]
    return Health(totals.count, errors, rate, p95, totals.p95_max, labelled, accuracy, mae, totals.dropped,
                  verdict, "; ".join(problems))


# --- one report per scope ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ScopeReport:
    model: str
    version: int
    device: str | None
    windows: int
    devices: int
    features: tuple[DriftResult, ...]
    prediction: DriftResult | None
    health: Health

    @property
    def verdict(self) -> Verdict:
        results = [*self.features, *([self.prediction] if self.prediction else [])]
        if any(r.verdict == "drift" for r in results):
            return "drift"
        return "ok" if results and any(r.verdict == "ok" for r in results) else "insufficient_data"

    @property
    def drifted(self) -> list[str]:
        results = [*self.features, *([self.prediction] if self.prediction else [])]
        return [r.name for r in results if r.verdict == "drift"]

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version, "device": self.device, "windows": self.windows,
                "devices": self.devices, "verdict": self.verdict, "drifted": self.drifted,
                "features": [r.to_dict() for r in self.features],
                "prediction": None if self.prediction is None else self.prediction.to_dict(),
                "health": self.health.to_dict()}


def assess_scope(totals: WindowTotals, reference: dict[str, Reference], prediction_reference: Reference | None,
                 device: str | None = None, thresholds: DriftThresholds = DriftThresholds(),
                 health: HealthThresholds = HealthThresholds()) -> ScopeReport:
    """Drift of every referenced feature and of the predictions, plus health, for one scope."""
    features = tuple(
        compare_counts(col, ref.counts.vector(), _observed(totals.features.get(col), ref), thresholds)
        for col, ref in sorted(reference.items())
    )
    prediction = None
    if prediction_reference is not None:
        prediction = compare_counts(PREDICTION, prediction_reference.counts.vector(),
                                    _observed(totals.predictions, prediction_reference), thresholds)
    return ScopeReport(totals.model, totals.version, device, totals.windows, len(totals.devices), features,
                       prediction, assess_health(totals, health))


def _observed(total: np.ndarray | None, ref: Reference) -> list[int]:
    return [0] * len(ref.counts.vector()) if total is None else [int(v) for v in total]


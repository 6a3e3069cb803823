"""Drift and health statistics over binned telemetry counts. Plain functions: no Prefect, no I/O.

Devices send counts on the manifest's reference bins (``Counts.vector()``: the bins, then underflow, overflow,
unseen, missing). The reference counts are a *sample* (the training rows) of known size, so the decision is a
two-sample test — the chi-square test of homogeneity of drift_stats, which accounts for the noise of both
samples — at a significance level set by a false-alarm budget over features and time (drift_checks). There is
no minimum sample size: the test's power grows with the data, and with too little data it simply does not
reject; only a table with fewer than two usable columns gets no verdict.

Two effect sizes are reported beside the p-value, because users know them:

* **PSI** (population stability index) — ``sum((o - r) * ln(o / r))`` over bin proportions, with a pseudo-count
  ``smoothing`` per bin (0.5, a Jeffreys prior) so empty bins stay finite; bins empty on both sides are dropped.
* **Jensen–Shannon distance** (``scipy.spatial.distance.jensenshannon``, base 2, in [0, 1]).

Both are biased upward at small samples (two samples of the same distribution differ by chance), so each comes
with its noise level (drift_stats.noise_levels): the value expected with no drift at these sample sizes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
from scipy.spatial.distance import jensenshannon

from edge_agent.protocol import Counts, Reference, TelemetryWindow
from edgeops.config.monitor import DriftThresholds
from edgeops.telemetry.drift_stats import drift_pvalues, homogeneity, noise_levels
from edgeops.telemetry.realized import Realized

Verdict = Literal["ok", "drift", "insufficient_data"]
HealthVerdict = Literal["ok", "degraded", "insufficient_data"]
PREDICTION = "__prediction__"
DEFAULT_DRIFT = DriftThresholds()


@dataclass(frozen=True)
class HealthThresholds:
    max_error_rate: float = 0.05
    max_latency_p95_ms: float | None = None     # None: latency is reported, not judged
    min_requests: int = 50


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
    bins: int          # columns of the pooled 2 × k table (dof = bins - 1)


def chi_square_test(reference: Sequence[float], observed: Sequence[float], min_expected: float = 5.0) -> ChiSquare:
    """Two-sample chi-square test of homogeneity (reference sample vs observed sample) on pooled bins."""
    ref, obs = _pair(reference, observed)
    stat, dof, p = homogeneity(ref, obs[None, :], min_expected)
    return ChiSquare(float(stat[0]), float(p[0]), int(dof[0]) + 1 if dof[0] > 0 else 0)


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
    psi_noise: float | None = None     # PSI / JS expected with no drift at these sample sizes
    js_noise: float | None = None
    alpha: float | None = None         # the significance level the p-value was judged at

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def compare_counts(name: str, reference: Sequence[float], observed: Sequence[float],
                   thresholds: DriftThresholds = DEFAULT_DRIFT, alpha: float | None = None, *,
                   numeric: bool = False) -> DriftResult:
    """Test, effect sizes and verdict for one feature (``numeric``: on quantile bins, see drift_pvalues);
    ``alpha`` defaults to one series' share of the budget."""
    alpha = thresholds.alpha(1) if alpha is None else alpha
    n, ref_n = int(sum(observed)), int(sum(reference))
    if len(reference) != len(observed):
        return DriftResult(name, n, ref_n, "insufficient_data",
                           reason=f"{len(observed)} bins observed, reference has {len(reference)}")
    if ref_n == 0 or n == 0:
        return DriftResult(name, n, ref_n, "insufficient_data", reason="empty reference" if ref_n == 0 else
                           "no observations")
    ref, obs = _pair(reference, observed)
    p, stat, _outside = drift_pvalues(ref, obs[None, :], thresholds.min_expected, numeric=numeric)
    if p[0] >= 1.0 and chi_square_test(reference, observed, thresholds.min_expected).bins < 2:
        return DriftResult(name, n, ref_n, "insufficient_data", reason=f"{n} observations: fewer than two bins "
                           f"with {thresholds.min_expected:g} expected values", alpha=alpha)
    p_value = float(p[0])
    psi = population_stability_index(reference, observed, thresholds.smoothing)
    js = jensen_shannon_distance(reference, observed)
    psi_noise, js_noise = noise_levels(int(((ref > 0) | (obs > 0)).sum()), n, ref_n)
    verdict: Verdict = "drift" if p_value < alpha else "ok"
    reason = f"p={p_value:.2g} < {alpha:.2g}; PSI {psi:.3f}, JS {js:.3f}" if verdict == "drift" else ""
    return DriftResult(name, n, ref_n, verdict, psi, js, float(stat[0]), p_value, reason, psi_noise, js_noise,
                       alpha)


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
        if not window.feedback_for:   # else its labels are credited to their predictions' windows (realized.py)
            for key, value in normalise_feedback(window.feedback).items():
                self.feedback[key] = self.feedback.get(key, 0.0) + value

    def _sum(self, total: np.ndarray | None, counts: Counts) -> np.ndarray:
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
    realized: Realized | None = None

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["realized"] = None if self.realized is None else self.realized.to_dict()
        return out


def assess_health(totals: WindowTotals, thresholds: HealthThresholds = HealthThresholds(),
                  realized: Realized | None = None) -> Health:
    """Error rate = errors / requests (a window's ``count`` includes failed requests); latency as described on
    WindowTotals. Accuracy / MAE are ``realized``'s (realized.py: labels credited to their predictions, an
    interval, a verdict only with enough labels), carried here to be shown beside health; without it, the windows'
    own feedback is. Neither decides health: health is whether the service answers (errors, latency), and a
    realized degradation is a performance finding (telemetry/performance_events.py), not a second health one."""
    errors = sum(totals.errors.values())
    rate = errors / totals.count if totals.count else None
    p95 = totals.p95_estimate
    labelled = int(totals.feedback.get("labelled", 0))
    accuracy = totals.feedback["correct"] / labelled if labelled and "correct" in totals.feedback else None
    mae = totals.feedback["abs_error_sum"] / labelled if labelled and "abs_error_sum" in totals.feedback else None
    if realized is not None:
        labelled = realized.labelled
        accuracy = realized.value if realized.metric == "accuracy" else None
        mae = realized.value if realized.metric == "mae" else None
    problems = []
    if rate is not None and rate > thresholds.max_error_rate:
        problems.append(f"error rate {rate:.1%} > {thresholds.max_error_rate:.1%}")
    if thresholds.max_latency_p95_ms is not None and p95 is not None and p95 > thresholds.max_latency_p95_ms:
        problems.append(f"p95 latency {p95:.1f} ms > {thresholds.max_latency_p95_ms} ms")
    verdict: HealthVerdict = "degraded" if problems else "ok"
    if not problems and totals.count < thresholds.min_requests:
        verdict, problems = "insufficient_data", [f"{totals.count} < {thresholds.min_requests} requests"]
    return Health(totals.count, errors, rate, p95, totals.p95_max, labelled, accuracy, mae, totals.dropped,
                  verdict, "; ".join(problems), realized)


# --- one report per scope ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Timeline:
    """The check points of one scope in the monitored span (drift_checks): when each was judged, which series
    rejected, and whether a drift episode is open at the end (replayed from a closed state at the span's start;
    the monitor flow keeps the real state between runs in the telemetry store)."""

    checks: tuple[str, ...]
    rejecting: tuple[tuple[str, ...], ...]
    recovered: tuple[bool, ...]
    active: bool
    opened: str | None
    drifted: tuple[str, ...]
    alpha: float
    series: tuple[str, ...] = ()
    p: np.ndarray | None = field(default=None, compare=False, repr=False)
    """The smallest p-value of each check point and series (check points × ``series``), over the scales tested:
    a check point rejects a series exactly when it is below ``alpha``. The report charts it over time."""

    def to_dict(self) -> dict[str, Any]:
        rejected = [c for c, r in zip(self.checks, self.rejecting, strict=True) if r]
        return {"checks": len(self.checks), "first": self.checks[0] if self.checks else None,
                "last": self.checks[-1] if self.checks else None, "active": self.active, "opened": self.opened,
                "drifted": list(self.drifted), "alpha": self.alpha, "rejected": len(rejected),
                "first_rejected": rejected[0] if rejected else None,
                "last_rejected": rejected[-1] if rejected else None}


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
    timeline: Timeline | None = None

    @property
    def verdict(self) -> Verdict:
        results = [*self.features, *([self.prediction] if self.prediction else [])]
        if self.timeline is not None:
            if self.timeline.active:
                return "drift"
            return "ok" if self.timeline.checks and any(r.verdict != "insufficient_data" for r in results) \
                else "insufficient_data"
        if any(r.verdict == "drift" for r in results):
            return "drift"
        return "ok" if results and any(r.verdict == "ok" for r in results) else "insufficient_data"

    @property
    def drifted(self) -> list[str]:
        if self.timeline is not None:
            return list(self.timeline.drifted) if self.timeline.active else []
        results = [*self.features, *([self.prediction] if self.prediction else [])]
        return [r.name for r in results if r.verdict == "drift"]

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version, "device": self.device, "windows": self.windows,
                "devices": self.devices, "verdict": self.verdict, "drifted": self.drifted,
                "features": [r.to_dict() for r in self.features],
                "prediction": None if self.prediction is None else self.prediction.to_dict(),
                "health": self.health.to_dict(),
                "timeline": None if self.timeline is None else self.timeline.to_dict()}


def assess_scope(totals: WindowTotals, reference: dict[str, Reference], prediction_reference: Reference | None,
                 device: str | None = None, thresholds: DriftThresholds = DEFAULT_DRIFT,
                 health: HealthThresholds = HealthThresholds()) -> ScopeReport:
    """Drift of every referenced feature and of the predictions (one check point over ``totals``, at the
    per-test level of the budget), plus health, for one scope."""
    alpha = thresholds.alpha(len(reference) + (prediction_reference is not None))
    features = tuple(
        compare_counts(col, ref.counts.vector(), _observed(totals.features.get(col), ref), thresholds, alpha,
                       numeric=ref.bins.kind == "numeric")
        for col, ref in sorted(reference.items())
    )
    prediction = None
    if prediction_reference is not None:
        prediction = compare_counts(PREDICTION, prediction_reference.counts.vector(),
                                    _observed(totals.predictions, prediction_reference), thresholds, alpha,
                                    numeric=prediction_reference.bins.kind == "numeric")
    return ScopeReport(totals.model, totals.version, device, totals.windows, len(totals.devices), features,
                       prediction, assess_health(totals, health))


def _observed(total: np.ndarray | None, ref: Reference) -> list[int]:
    return [0] * len(ref.counts.vector()) if total is None else [int(v) for v in total]


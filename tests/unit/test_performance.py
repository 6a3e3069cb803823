"""Performance without labels: the estimators against direct computations on synthetic, seeded data whose true
probabilities are known, and the per-scope assembly from windows and manifests."""

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from releases import build_release, new_key

from edge_agent.protocol import Counts, ErrorCalibration, ScoreCounts, TelemetryWindow
from edge_agent.scoring import score_cells
from edgeops.telemetry.performance import (
    Estimate,
    PerformanceThresholds,
    ScopeEstimate,
    estimate_classifier,
    estimate_performance,
    estimate_regressor,
    estimate_trend,
    hit_rates,
    judge_estimate,
)
from edgeops.train.calibration import error_calibration, score_calibration

pytestmark = pytest.mark.unit

BINS = 20


def draw(rng: np.random.Generator, n: int, k: int, concentration: float) -> tuple[np.ndarray, np.ndarray]:
    """True class probabilities (Dirichlet) and labels drawn from them: a perfectly calibrated model."""
    p = rng.dirichlet(np.full(k, concentration), size=n)
    labels = (rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
    return p, np.minimum(labels, k - 1)


def counted(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cells = score_cells(p, BINS).reshape(p.shape[1], 2, BINS)
    return cells[:, 0].astype(float), cells[:, 1].astype(float)


def direct(p: np.ndarray) -> tuple[float, np.ndarray]:
    """CBPE on the true probabilities, row by row: expected accuracy and expected F1 per class."""
    top = p.argmax(axis=1)
    k = p.shape[1]
    accuracy = float(p[np.arange(len(p)), top].mean())
    f1 = []
    for c in range(k):
        tp = p[top == c, c].sum()
        fn = p[top != c, c].sum()
        f1.append(2 * tp / ((top == c).sum() + tp + fn))
    return accuracy, np.array(f1)


def realized(p: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    top = p.argmax(axis=1)
    f1 = []
    for c in range(p.shape[1]):
        tp = ((top == c) & (labels == c)).sum()
        f1.append(2 * tp / ((top == c).sum() + (labels == c).sum()))
    return float((top == labels).mean()), np.array(f1)


@pytest.mark.parametrize(("k", "task"), [(2, "binary"), (4, "multiclass")])
def test_estimates_match_cbpe_on_the_true_probabilities_under_shift(k: int, task: str) -> None:
    rng = np.random.default_rng(20 + k)
    held_p, held_y = draw(rng, 20_000, k, 1.0)
    calibration = score_calibration(held_p, held_y, BINS)
    assert calibration is not None
    live_p, live_y = draw(rng, 50_000, k, 0.4)   # a shift: more confident rows than the holdout had
    accuracy, f1 = estimate_classifier(*counted(live_p), calibration, task)
    want_accuracy, want_f1 = direct(live_p)
    assert accuracy.value == pytest.approx(want_accuracy, abs=0.005)
    want = want_f1[1] if task == "binary" else want_f1.mean()
    # F1's false negatives come mostly from the first bin, whose holdout mean (0.025 here) differs from the
    # shifted rows' (about 0.01): within-bin differences are what 20 bins cost.
    assert f1.value == pytest.approx(want, abs=0.01)
    real_accuracy, real_f1 = realized(live_p, live_y)
    assert accuracy.low <= real_accuracy <= accuracy.high
    real = real_f1[1] if task == "binary" else real_f1.mean()
    assert abs(real - f1.value) <= max(f1.high - f1.value, 0.01)   # the interval leaves out the bins' resolution
    assert accuracy.rows == 50_000


def test_the_table_corrects_an_overconfident_model() -> None:
    """The model reports sharpened probabilities; labels follow the true ones. The raw probabilities overstate
    accuracy, the calibration table brings the estimate back to the truth."""
    rng = np.random.default_rng(7)

    def sharpened(n: int, concentration: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        true_p, labels = draw(rng, n, 3, concentration)
        reported = true_p ** 2 / (true_p ** 2).sum(axis=1, keepdims=True)
        return reported, true_p, labels

    held, _, held_y = sharpened(20_000, 1.0)
    calibration = score_calibration(held, held_y, BINS)
    assert calibration is not None
    live, live_true, _ = sharpened(30_000, 0.7)
    accuracy, _ = estimate_classifier(*counted(live), calibration, "multiclass")
    truth = float(live_true[np.arange(len(live)), live.argmax(axis=1)].mean())
    naive = float(live.max(axis=1).mean())
    assert abs(accuracy.value - truth) < 0.01 and abs(naive - truth) > 0.1


def test_the_interval_covers_the_realized_accuracy_about_as_often_as_it_says() -> None:
    rng = np.random.default_rng(11)
    held_p, held_y = draw(rng, 400, 3, 1.0)   # a small holdout: its own noise must be in the interval
    calibration = score_calibration(held_p, held_y, BINS)
    assert calibration is not None
    covered, runs = 0, 300
    for _ in range(runs):
        live_p, live_y = draw(rng, 300, 3, 0.7)
        accuracy, _ = estimate_classifier(*counted(live_p), calibration, "multiclass")
        covered += accuracy.low <= realized(live_p, live_y)[0] <= accuracy.high
    assert 0.88 <= covered / runs <= 0.995


def test_thin_cells_lean_on_the_pool_and_an_empty_pool_on_the_probability() -> None:
    held_p = np.array([[0.9, 0.1]] * 30 + [[0.1, 0.9]] * 2)
    held_y = np.array([0] * 27 + [1] * 3 + [1, 1])
    calibration = score_calibration(held_p, held_y, BINS)
    assert calibration is not None
    rates = hit_rates(calibration.predicted)
    assert rates.rate[0, 18] == pytest.approx((27 + 10 * (29 + 0.9) / 33) / 40)   # 30 rows, pool of 32 rows
    assert rates.rate[1, 18] == pytest.approx((2 + 10 * (29 + 0.9) / 33) / 12)   # two rows, both hits
    assert rates.rate[0, 10] == pytest.approx(0.525)   # nothing held out: the bin's middle
    assert rates.variance[0, 10] > rates.variance[0, 18]


def test_mae_is_the_per_bin_error_weighted_by_live_predictions() -> None:
    rng = np.random.default_rng(3)

    def errors(pred: np.ndarray) -> np.ndarray:
        return rng.normal(0, 0.5 + np.abs(pred), len(pred))   # errors grow with the prediction

    from edge_agent.protocol import NumericBins
    bins = NumericBins(tuple(np.linspace(-3, 3, 11)))
    held = rng.normal(0, 1, 20_000)
    held_error = np.abs(errors(held))
    calibration = error_calibration(held, held + held_error, bins)

    def where(pred: np.ndarray) -> np.ndarray:
        return np.where(pred < -3, 10, np.where(pred > 3, 11, np.digitize(pred, bins.edges[1:-1])))

    live = rng.normal(1.0, 0.8, 20_000)   # shifted toward larger predictions: larger errors
    live_error = np.abs(errors(live))
    vector = np.bincount(where(live), minlength=12)
    (mae,) = estimate_regressor(vector, calibration)
    per_bin = np.array([held_error[where(held) == b].mean() for b in range(12)])
    assert mae.value == pytest.approx((vector * per_bin).sum() / len(live), rel=0.005)   # shrinkage: slight
    assert mae.value == pytest.approx(live_error.mean(), rel=0.03)
    assert mae.low <= live_error.mean() <= mae.high
    assert live_error.mean() - held_error.mean() > 0.2   # the shift mattered


def window(device: str, version: int, scores: ScoreCounts | None, predictions: Counts | None = None) -> TelemetryWindow:
    return TelemetryWindow(device=device, seq=0, model="churn", version=version, start="2026-01-01T00:00:00Z",
                           end="2026-01-01T00:01:00Z", count=10, predictions=predictions, scores=scores)


def test_estimates_per_version_fleet_wide_and_per_device(tmp_path: Path) -> None:
    key = new_key()
    calibrated = build_release("churn", 2, key, calibrated=True).manifest
    old = dataclasses.replace(build_release("churn", 1, key).manifest)   # no calibration, as a 1.0 manifest
    manifests: dict[int, Any] = {1: old, 2: calibrated}
    rng = np.random.default_rng(1)
    p, _ = draw(rng, 200, 2, 1.0)

    def scores(rows: np.ndarray) -> ScoreCounts:
        predicted, other = counted(rows)
        return ScoreCounts(tuple(map(tuple, predicted.astype(int).tolist())),
                           tuple(map(tuple, other.astype(int).tolist())), BINS)

    windows = [window("a", 2, scores(p[:120])), window("b", 2, scores(p[120:])), window("b", 2, None),
               window("a", 1, None, Counts((5, 5)))]
    out = {(e.version, e.device): e for e in estimate_performance(windows, lambda m, v: manifests.get(v))}
    assert set(out) == {(1, None), (1, "a"), (2, None), (2, "a"), (2, "b")}
    fleet, a, b = out[2, None], out[2, "a"], out[2, "b"]
    assert fleet.get("accuracy").rows == 200 and a.get("accuracy").rows == 120   # type: ignore[union-attr]
    assert b.windows == 2 and b.get("accuracy").rows == 80   # type: ignore[union-attr]
    assert fleet.get("accuracy").reference == 0.8   # type: ignore[union-attr]
    assert out[1, None].estimates == () and "not available" in (out[1, None].reason or "")
    lone = estimate_performance([window("c", 2, None)], lambda m, v: manifests.get(v))
    assert lone[0].estimates == () and "no score counts" in (lone[0].reason or "")


def test_a_regressor_scope_is_estimated_from_its_prediction_counts() -> None:
    manifest = build_release("load", 1, new_key(), task="regression", calibrated=True).manifest
    assert isinstance(manifest.calibration, ErrorCalibration)
    size = manifest.prediction_reference.bins.size
    counts = Counts(tuple([10] * size), underflow=2, overflow=1)
    (scope,) = estimate_performance([window("a", 1, None, counts)], lambda m, v: manifest, per_device=False)
    (mae,) = scope.estimates
    assert mae.metric == "mae" and mae.rows == 10 * size + 3 and mae.low <= mae.value <= mae.high


def scope_with(*estimates: Estimate, reason: str | None = None) -> ScopeEstimate:
    return ScopeEstimate("churn", 2, None, 5, estimates, reason)


@pytest.mark.parametrize(("estimates", "verdict", "why"), [
    ((Estimate("accuracy", 0.70, 0.66, 0.74, 500, 0.83),), "degraded", "at most 0.740) < 0.780"),
    ((Estimate("accuracy", 0.76, 0.72, 0.80, 500, 0.83),), "ok", ""),      # the interval reaches the threshold
    ((Estimate("accuracy", 0.50, 0.20, 0.70, 150, 0.83),), "insufficient_data", "150 < 200 predictions"),
    ((Estimate("accuracy", 0.50, 0.45, 0.55, 500, None),), "insufficient_data", "no test accuracy"),
    ((), "insufficient_data", "not available"),
    ((Estimate("mae", 2.0, 1.6, 2.4, 500, 1.2),), "degraded", "> 1.5"),
    ((Estimate("mae", 2.0, 1.4, 2.6, 500, 1.2),), "ok", ""),
])
def test_the_verdict_is_the_interval_against_the_release_s_test_metric(estimates: tuple[Estimate, ...], verdict: str,
                                                                     why: str) -> None:
    judged = judge_estimate(scope_with(*estimates, reason="the release ... not available" if not estimates else None),
                            PerformanceThresholds())
    assert judged.verdict == verdict and why in judged.reason


def test_f1_can_be_the_judged_metric() -> None:
    scope = scope_with(Estimate("accuracy", 0.9, 0.88, 0.92, 900, 0.9), Estimate("f1", 0.4, 0.3, 0.5, 900, 0.7))
    assert judge_estimate(scope, PerformanceThresholds()).verdict == "ok"
    judged = judge_estimate(scope, PerformanceThresholds(metric="f1", f1_tolerance=0.1))
    assert judged.verdict == "degraded" and judged.threshold == pytest.approx(0.6)
    with pytest.raises(ValueError):
        PerformanceThresholds(metric="auc")


def test_the_trend_is_one_fleet_estimate_per_version_and_hour() -> None:
    manifest = build_release("churn", 2, new_key(), calibrated=True).manifest
    rng = np.random.default_rng(9)

    def at(device: str, hour: int, p_one: np.ndarray) -> TelemetryWindow:
        predicted, other = counted(np.column_stack([1 - p_one, p_one]))
        scores = ScoreCounts(tuple(map(tuple, predicted.astype(int).tolist())),
                             tuple(map(tuple, other.astype(int).tolist())), BINS)
        end = f"2026-01-01T{hour:02d}:30:00Z"
        return TelemetryWindow(device=device, seq=hour, model="churn", version=2, start=end, end=end, count=100,
                               scores=scores)

    windows = [at("a", 1, rng.choice([0.02, 0.98], 100)), at("b", 1, rng.choice([0.02, 0.98], 100)),
               at("a", 2, rng.uniform(0.4, 0.6, 100))]
    trend = estimate_trend(windows, lambda m, v: manifest)
    (slots,) = trend.values()
    assert [slot for slot, _ in slots] == ["2026-01-01T01:00:00+00:00", "2026-01-01T02:00:00+00:00"]
    first, second = (scope.get("accuracy") for _, scope in slots)
    assert first is not None and second is not None
    assert first.rows == 200 and second.rows == 100 and first.value > 0.9 > 0.7 > second.value

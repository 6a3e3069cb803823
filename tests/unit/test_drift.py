"""Drift statistics agree with scipy, stay quiet on stationary streams, and catch injected shifts."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency

from edge_agent.protocol import Counts, NumericBins, Reference, TelemetryWindow
from edgeops.telemetry.drift import (
    DriftThresholds,
    HealthThresholds,
    assess_health,
    assess_scope,
    chi_square_test,
    compare_counts,
    jensen_shannon_distance,
    population_stability_index,
    sum_windows,
)

pytestmark = pytest.mark.unit

REF = [120, 340, 510, 620, 480, 300, 150, 60, 0, 0, 0, 0]   # 8 bins + under/overflow/unseen/missing


def test_jensen_shannon_equals_scipy() -> None:
    obs = [100, 300, 500, 700, 500, 250, 100, 40, 3, 0, 0, 7]
    expected = jensenshannon(np.array(REF) / sum(REF), np.array(obs) / sum(obs), base=2)
    assert jensen_shannon_distance(REF, obs) == pytest.approx(expected, rel=1e-12)


def test_the_statistic_is_scipy_cressie_read_when_no_bin_is_pooled() -> None:
    ref, obs = [100, 200, 300, 400], [130, 190, 280, 400]
    want = chi2_contingency(np.array([ref, obs]),
                            correction=False, lambda_="cressie-read")
    got = chi_square_test(ref, obs)
    assert (got.statistic, got.p_value, got.bins) == pytest.approx((want.statistic, want.pvalue, 4), rel=1e-9)


def test_chi_square_pools_rare_columns_by_both_samples_as_scipy_would_on_the_pooled_table() -> None:
    ref, obs = [500, 500, 3, 1, 0], [480, 505, 9, 4, 2]
    # column totals [980, 1005, 12, 5, 2] × 1000 / 2004 expected in the smaller sample: [489, 501, 6.0, 2.5, 1.0]
    # → the last two pool to 3.5 < 5 and join the smallest kept column (the third)
    want = chi2_contingency(np.array([[500, 500, 3 + 1], [480, 505, 9 + 4 + 2]]),
                            correction=False, lambda_="cressie-read")
    got = chi_square_test(ref, obs)
    assert got.bins == 3
    assert got.p_value == pytest.approx(want.pvalue, rel=1e-9)


def test_psi_matches_its_definition_with_pseudo_counts() -> None:
    ref, obs = [50, 30, 20, 0], [40, 30, 25, 5]
    p = (np.array(ref) + 0.5) / (100 + 2.0)
    q = (np.array(obs) + 0.5) / (100 + 2.0)
    assert population_stability_index(ref, obs) == pytest.approx(float(np.sum((q - p) * np.log(q / p))))
    assert population_stability_index(ref, ref) == 0.0
    assert population_stability_index([*ref, 0], [*obs, 0]) == pytest.approx(population_stability_index(ref, obs))


def test_mismatched_bins_are_an_error_for_the_statistics_and_a_reason_for_the_verdict() -> None:
    with pytest.raises(ValueError, match="bins"):
        population_stability_index([1, 2], [1, 2, 3])
    result = compare_counts("x", [1, 2], [1, 2, 3])
    assert result.verdict == "insufficient_data" and "reference has 2" in result.reason


def test_no_floor_on_the_sample_size_only_on_a_testable_table() -> None:
    far = [0, 0, 0, 0, 0, 0, 0, 0, 0, 90, 0, 0]      # 90 values, all above the reference's range
    assert compare_counts("x", REF, far).verdict == "drift"
    assert compare_counts("x", REF, [0, 0, 0, 3, *[0] * 8]).verdict == "insufficient_data"   # one column left
    assert compare_counts("x", REF, [0] * 12).verdict == "insufficient_data"


@pytest.mark.parametrize("n", [1_000, 5_000, 50_000])
def test_stationary_streams_raise_no_drift(n: int) -> None:
    probs = np.array(REF) / sum(REF)
    verdicts = [compare_counts("x", REF, np.random.default_rng(seed).multinomial(n, probs).tolist()).verdict
                for seed in range(300)]
    assert verdicts.count("drift") == 0


def _binned(sample: np.ndarray, edges: np.ndarray) -> list[int]:
    inner = np.clip(np.searchsorted(edges, sample, side="right") - 1, 0, len(edges) - 2)
    counts = np.bincount(inner[(sample >= edges[0]) & (sample <= edges[-1])], minlength=len(edges) - 1)
    return [*counts.tolist(), int((sample < edges[0]).sum()), int((sample > edges[-1]).sum()), 0, 0]


@pytest.mark.parametrize("shift", [0.5, 1.0, 3.0])
def test_mean_shifts_are_detected(shift: float) -> None:
    rng = np.random.default_rng(7)
    train = rng.normal(size=5_000)
    edges = np.quantile(train, np.linspace(0, 1, 11))
    ref = _binned(train, edges)
    assert compare_counts("x", ref, _binned(rng.normal(size=3_000), edges)).verdict == "ok"
    drifted = compare_counts("x", ref, _binned(rng.normal(loc=shift, size=3_000), edges))
    assert drifted.verdict == "drift", drifted


def test_values_outside_the_reference_bins_are_drift() -> None:
    obs = [v * 2 for v in REF[:8]] + [0, 0, 0, 1200]   # a third of the values now missing
    result = compare_counts("x", REF, obs)
    assert result.verdict == "drift" and result.p_value is not None and result.p_value < 1e-6


def test_thresholds_are_validated() -> None:
    with pytest.raises(ValueError, match="false_alarms"):
        DriftThresholds(false_alarms=0)
    with pytest.raises(ValueError, match="recent_windows"):
        DriftThresholds(recent_windows=0)


# --- summing windows and health ------------------------------------------------------------------------------

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def window(device: str, seq: int, counts: list[int], *, count: int = 100, errors: int = 0, p95: float = 10.0,
           feedback: dict[str, float] | None = None, minutes: int = 0, version: int = 1) -> TelemetryWindow:
    end = (T0 + timedelta(minutes=minutes)).isoformat()
    return TelemetryWindow(device=device, seq=seq, model="churn", version=version, start=end, end=end,
                           count=count, errors={"input": errors} if errors else {},
                           latency_ms={"p50": p95 / 2, "p95": p95}, features={"x": Counts(tuple(counts))},
                           predictions=Counts((count // 2, count - count // 2)), feedback=feedback or {})


def test_windows_sum_per_device_and_fleet_within_the_time_window() -> None:
    windows = [window("a", 0, [1, 2, 3], minutes=0), window("a", 1, [1, 1, 1], minutes=10),
               window("b", 0, [5, 0, 0], minutes=10), window("b", 1, [1, 2], minutes=11)]
    totals = sum_windows(windows, since=T0 + timedelta(minutes=5))
    assert set(totals) == {("churn", 1, "a"), ("churn", 1, "b"), ("churn", 1, None)}
    assert totals["churn", 1, None].features["x"][:3].tolist() == [6, 1, 1]
    assert totals["churn", 1, None].mismatched == 1 and totals["churn", 1, None].windows == 3
    assert totals["churn", 1, "a"].features["x"][:3].tolist() == [1, 1, 1]
    assert totals["churn", 1, None].devices == {"a", "b"}


def test_health_weights_latency_by_count_and_bounds_it_by_the_max() -> None:
    windows = [window("a", 0, [1], count=300, errors=3, p95=10.0, feedback={"labelled": 10, "correct": 9}),
               window("a", 1, [1], count=100, errors=37, p95=50.0, feedback={"labelled": 30, "accuracy": 0.5})]
    health = assess_health(sum_windows(windows)["churn", 1, None], HealthThresholds(max_error_rate=0.05))
    assert health.error_rate == pytest.approx(0.1)
    assert health.latency_p95_ms == pytest.approx(20.0) and health.latency_p95_max_ms == 50.0
    assert health.accuracy == pytest.approx(24 / 40) and health.mae is None
    assert health.verdict == "degraded" and "error rate" in health.reason


def test_regression_feedback_gives_mae_and_small_traffic_gives_no_verdict() -> None:
    windows = [window("a", 0, [1], count=20, feedback={"labelled": 4, "abs_error_sum": 2.0}),
               window("a", 1, [1], count=20, feedback={"labelled": 6, "mae": 1.0})]
    health = assess_health(sum_windows(windows)["churn", 1, None])
    assert health.mae == pytest.approx(0.8)
    assert health.verdict == "insufficient_data"


def test_scope_report_flags_the_drifted_feature() -> None:
    ref = Reference(NumericBins((0.0, 1.0, 2.0, 3.0)), Counts((100, 100, 100)))
    pred_ref = Reference(NumericBins((0.0, 1.0, 2.0)), Counts((1500, 1500)))
    windows = [window("a", i, [180, 10, 10], count=200) for i in range(10)]
    totals = sum_windows(windows)["churn", 1, "a"]
    report = assess_scope(totals, {"x": ref}, pred_ref, device="a")
    assert report.verdict == "drift" and report.drifted == ["x"]
    assert report.prediction is not None and report.prediction.verdict == "ok"
    assert report.to_dict()["features"][0]["verdict"] == "drift"

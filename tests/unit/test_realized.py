"""Realized accuracy / MAE (realized.py): an interval and a minimum label count before any verdict, thresholds
relative to the release's own test metrics."""

import math

import numpy as np
import pytest
from scipy import stats

from edgeops.config.monitor import RealizedThresholds
from edgeops.telemetry.drift import WindowTotals, assess_health
from edgeops.telemetry.realized import LabelTotals, accuracy_interval, judge_realized, mae_interval

pytestmark = pytest.mark.unit

TEST_ACCURACY = {"accuracy": 0.85}


def accuracy_labels(correct: int, labelled: int) -> LabelTotals:
    totals = LabelTotals()
    totals.add(labelled, correct=correct)
    return totals


def error_labels(errors: list[float]) -> LabelTotals:
    totals = LabelTotals()
    for e in errors:
        totals.add(1, abs_error_sum=abs(e), abs_error_sq_sum=e * e)
    return totals


def test_the_accuracy_interval_is_wilsons() -> None:
    low, high = accuracy_interval(8, 10, 0.95)
    z = stats.norm.ppf(0.975)
    centre, half = (0.8 + z * z / 20) / (1 + z * z / 10), z / (1 + z * z / 10) * math.sqrt(0.16 / 10 + z * z / 400)
    assert (low, high) == pytest.approx((centre - half, centre + half))
    assert accuracy_interval(0, 5, 0.95)[0] == 0.0 and accuracy_interval(5, 5, 0.95)[1] == pytest.approx(1.0)


def test_the_mae_interval_is_a_t_interval_from_the_sums_devices_send() -> None:
    errors = np.random.default_rng(3).exponential(2.0, 40)
    low, high = mae_interval(error_labels(errors.tolist()), 0.9)   # type: ignore[misc]
    expected = stats.t.interval(0.9, 39, loc=errors.mean(), scale=stats.sem(errors))
    assert (low, high) == pytest.approx(expected)
    assert mae_interval(error_labels([1.0]), 0.9) is None   # one label has no spread
    old = error_labels([1.0, 2.0])
    old.add(3, abs_error_sum=3.0)   # an older agent's window: a mean, no squares
    assert mae_interval(old, 0.9) is None


def test_three_wrong_labels_are_no_verdict_however_bad_they_look() -> None:
    result = judge_realized(accuracy_labels(0, 3), "binary", TEST_ACCURACY, RealizedThresholds(min_accuracy=0.9))
    assert result.verdict == "insufficient_data" and result.reason == "3 labels < 50"
    assert result.value == 0.0 and result.low == 0.0 and result.high is not None and result.high > 0.5


def test_accuracy_is_degraded_only_when_the_whole_interval_is_below_test_accuracy_minus_the_tolerance() -> None:
    threshold = 0.85 - 0.05
    bad = judge_realized(accuracy_labels(60, 100), "binary", TEST_ACCURACY)
    assert bad.verdict == "degraded" and bad.threshold == pytest.approx(threshold)
    assert bad.high is not None and bad.high < threshold
    assert bad.reason.startswith("accuracy 0.6 [0.502, 0.691] over 100 labels < 0.8")
    close = judge_realized(accuracy_labels(36, 50), "multiclass", TEST_ACCURACY)   # 0.72, but 50 labels
    assert close.verdict == "ok" and close.high is not None and close.high > threshold
    good = judge_realized(accuracy_labels(430, 500), "binary", TEST_ACCURACY)
    assert good.verdict == "ok" and good.reason == ""


def test_mae_is_degraded_when_the_whole_interval_is_above_test_mae_times_one_plus_the_tolerance() -> None:
    rng = np.random.default_rng(0)
    worse = judge_realized(error_labels(rng.normal(0, 2.0, 200).tolist()), "regression", {"mae": 1.0})
    assert worse.metric == "mae" and worse.threshold == 1.25 and worse.verdict == "degraded"
    assert worse.low is not None and worse.low > 1.25
    same = judge_realized(error_labels(rng.normal(0, 1.25, 200).tolist()), "regression", {"mae": 1.0})
    assert same.verdict == "ok"
    absolute = judge_realized(error_labels(rng.normal(0, 1.25, 200).tolist()), "regression", {"mae": 1.0},
                              RealizedThresholds(max_mae=0.5))
    assert absolute.threshold == 0.5 and absolute.verdict == "degraded"


def test_without_a_test_metric_or_a_threshold_there_is_no_verdict() -> None:
    result = judge_realized(accuracy_labels(0, 500), "binary", {"f1": 0.9})
    assert result.verdict == "insufficient_data" and "set monitor.labels.min_accuracy" in result.reason
    empty = judge_realized(LabelTotals(), "regression", {"mae": 1.0})
    assert (empty.verdict, empty.labelled, empty.value) == ("insufficient_data", 0, None)


def test_a_degraded_realized_verdict_is_shown_with_health_but_does_not_make_it_degraded() -> None:
    """Health is whether the service answers; a realized degradation is a performance finding and raises
    edgeops.performance.degraded (telemetry/performance_events.py), not a second, health event."""
    totals = WindowTotals("churn", 3, count=1000)
    health = assess_health(totals, realized=judge_realized(accuracy_labels(60, 100), "binary", TEST_ACCURACY))
    assert health.verdict == "ok" and health.reason == ""
    assert (health.labelled, health.accuracy, health.mae) == (100, 0.6, None)
    assert health.to_dict()["realized"]["verdict"] == "degraded"
    assert "accuracy 0.6 [0.502, 0.691] over 100 labels" in health.to_dict()["realized"]["reason"]


@pytest.mark.parametrize("bad", [{"min_labels": 0}, {"confidence": 1.0}, {"accuracy_tolerance": -0.1},
                                 {"mae_tolerance": -1.0}, {"min_accuracy": 1.5}, {"max_mae": -1.0}])
def test_thresholds_out_of_range_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=f"{next(iter(bad))} out of range"):
        RealizedThresholds(**bad)  # type: ignore[arg-type]

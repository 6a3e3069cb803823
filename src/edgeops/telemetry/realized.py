"""Realized performance: accuracy or MAE measured from labels, with a confidence interval, and a verdict only
once there are enough labels. Plain functions: no I/O, no Prefect.

Labels are credited to the release and the time of their prediction (telemetry 1.2 ``feedback_for``, or a label
table ingested on the control plane) and summed per model version and scope as ``LabelTotals``. A verdict needs
``min_labels`` labels; with fewer it is ``insufficient_data``, whatever they say. Accuracy comes with a Wilson
score interval (``scipy.stats.binomtest(...).proportion_ci(method="wilson")``: it keeps its coverage at small
counts and near 0 and 1, where the normal approximation does not); MAE with a Student t interval over the
absolute errors, whose mean and standard deviation come from the sums of errors and of squared errors (all a
device sends). A version is ``degraded`` only when the whole interval is on the wrong side of the threshold —
its upper bound below the minimum accuracy, its lower bound above the maximum MAE — so a verdict is wrong by
chance at most (1 − confidence) / 2 of the time on one look.

Thresholds default to the release's own holdout metrics (manifest ``metrics``): test accuracy −
``accuracy_tolerance``, test MAE × (1 + ``mae_tolerance``). ``min_accuracy`` / ``max_mae`` set absolute ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from scipy import stats

from edgeops.config.monitor import RealizedThresholds

DEFAULT_THRESHOLDS = RealizedThresholds()

Verdict = Literal["ok", "degraded", "insufficient_data"]


@dataclass
class LabelTotals:
    """Sums of labels of one model version and scope."""

    labelled: int = 0
    correct: float = 0.0
    abs_error_sum: float = 0.0
    abs_error_sq_sum: float = 0.0
    unspread: int = 0
    """Labels whose squared error is unknown (the ``feedback`` of windows from agents before telemetry 1.2)."""

    def add(self, labelled: int, correct: float | None = None, abs_error_sum: float | None = None,
            abs_error_sq_sum: float | None = None) -> None:
        self.labelled += int(labelled)
        self.correct += correct or 0.0
        self.abs_error_sum += abs_error_sum or 0.0
        if abs_error_sum is not None and abs_error_sq_sum is None:
            self.unspread += int(labelled)
        self.abs_error_sq_sum += abs_error_sq_sum or 0.0

    def add_feedback(self, sums: Mapping[str, float]) -> None:
        """Add a window's ``feedback`` as ``drift.normalise_feedback`` sums it (labels counted on arrival)."""
        if sums.get("labelled"):
            self.add(int(sums["labelled"]), sums.get("correct"), sums.get("abs_error_sum"))


@dataclass(frozen=True)
class Realized:
    metric: str | None          # "accuracy" (classifiers) or "mae" (regressors)
    labelled: int
    value: float | None
    low: float | None
    high: float | None
    threshold: float | None
    verdict: Verdict
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def describe(self) -> str:
        """``accuracy 0.612 [0.548, 0.672] over 230 labels`` (or what there is)."""
        if self.metric is None or self.value is None:
            return "no labels"
        interval = f" [{self.low:.3g}, {self.high:.3g}]" if self.low is not None and self.high is not None else ""
        name = "accuracy" if self.metric == "accuracy" else "MAE"
        return f"{name} {self.value:.3g}{interval} over {self.labelled} labels"


def accuracy_interval(correct: int, labelled: int, confidence: float) -> tuple[float, float]:
    """Wilson score interval of a proportion."""
    ci = stats.binomtest(correct, labelled).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def mae_interval(totals: LabelTotals, confidence: float) -> tuple[float, float] | None:
    """Student t interval of the mean absolute error; None without the spread (fewer than two labels, or some
    from agents that did not send squared errors)."""
    n = totals.labelled
    if n < 2 or totals.unspread:
        return None
    mean = totals.abs_error_sum / n
    variance = max(totals.abs_error_sq_sum - n * mean * mean, 0.0) / (n - 1)
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * math.sqrt(variance / n)
    return max(mean - half, 0.0), mean + half


def judge_realized(totals: LabelTotals, task: str, metrics: Mapping[str, float],
                   thresholds: RealizedThresholds = DEFAULT_THRESHOLDS) -> Realized:
    """Realized accuracy (classifiers) or MAE (regressors) of ``totals``, its interval and the verdict against
    the thresholds; ``metrics`` are the release's holdout metrics (the default thresholds are relative to them)."""
    n = totals.labelled
    regression = task == "regression"
    metric = "mae" if regression else "accuracy"
    if n <= 0:
        return Realized(metric, 0, None, None, None, None, "insufficient_data", "no labels")
    if regression:
        value = totals.abs_error_sum / n
        interval = mae_interval(totals, thresholds.confidence)
        threshold = thresholds.max_mae if thresholds.max_mae is not None else (
            metrics["mae"] * (1 + thresholds.mae_tolerance) if "mae" in metrics else None)
    else:
        correct = min(max(round(totals.correct), 0), n)
        value = correct / n
        interval = accuracy_interval(correct, n, thresholds.confidence)
        threshold = thresholds.min_accuracy if thresholds.min_accuracy is not None else (
            metrics["accuracy"] - thresholds.accuracy_tolerance if "accuracy" in metrics else None)
    low, high = interval if interval is not None else (None, None)
    result = Realized(metric, n, value, low, high, threshold, "insufficient_data")
    name = "accuracy" if metric == "accuracy" else "MAE"
    if n < thresholds.min_labels:
        return replace(result, reason=f"{n} labels < {thresholds.min_labels}")
    if threshold is None:
        key = "min_accuracy" if metric == "accuracy" else "max_mae"
        return replace(result, reason=f"no {name} threshold: the release has no test {name} (set "
                       f"monitor.labels.{key})")
    if low is None or high is None:
        return replace(result, reason="MAE without its spread (labels from agents before telemetry 1.2)")
    shown = f"{name} {value:.3g} [{low:.3g}, {high:.3g}] over {n} labels"
    if regression and low > threshold:
        return replace(result, verdict="degraded", reason=f"{shown} > {threshold:.3g}")
    if not regression and high < threshold:
        return replace(result, verdict="degraded", reason=f"{shown} < {threshold:.3g}")
    return replace(result, verdict="ok")

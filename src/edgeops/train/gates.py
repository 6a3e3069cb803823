"""Metric gates: a candidate model is registered as a release only when its holdout metrics pass.

Two kinds of gate (config ``gates``): *absolute* (accuracy ≥ 0.9, rmse ≤ 12) and *regression* against the
current champion (accuracy may drop by at most 0.02). Direction comes from the metric: log_loss, rmse and
mae are better when lower. A gate on a metric the task does not produce (rmse for a classifier) is skipped,
so one config can serve several models; a gate on a metric the task should produce but that is missing
(roc_auc when the holdout lacks a class) fails, because an unmeasured model must not pass silently.
"""

import math
from dataclasses import dataclass
from typing import Any, Literal

from edgeops.config import CLASSIFICATION_METRICS, LOWER_IS_BETTER, REGRESSION_METRICS, GateConfig

GateKind = Literal["absolute", "regression"]
FLOAT_SLACK = 1e-12
"""Rounding slack: 0.52 - 0.50 is 0.020000000000000018 in binary floating point, and must pass a 0.02 gate."""


@dataclass(frozen=True)
class GateCheck:
    metric: str
    kind: GateKind
    threshold: float
    value: float | None
    champion_value: float | None
    passed: bool
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "kind": self.kind, "threshold": self.threshold, "value": self.value,
                "champion_value": self.champion_value, "passed": self.passed, "message": self.message}


@dataclass(frozen=True)
class GateResult:
    passed: bool
    checks: list[GateCheck]

    @property
    def reasons(self) -> list[str]:
        """Messages of the failed checks, for the one-line rejection reason."""
        return [c.message for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "checks": [c.to_dict() for c in self.checks]}

    def to_markdown(self) -> str:
        head = "**Gates passed**" if self.passed else "**Gates failed**: " + "; ".join(self.reasons)
        if not self.checks:
            return head + "\n\nNo gates configured for this task."
        rows = ["| metric | gate | threshold | value | champion | result |", "|---|---|---|---|---|---|"]
        for c in self.checks:
            rows.append(f"| {c.metric} | {c.kind} | {_fmt(c.threshold)} | {_fmt(c.value)} | "
                        f"{_fmt(c.champion_value)} | {'pass' if c.passed else 'FAIL'} |")
        return head + "\n\n" + "\n".join(rows)


def task_metrics(task: str) -> tuple[str, ...]:
    return REGRESSION_METRICS if task == "regression" else CLASSIFICATION_METRICS


def evaluate_gates(metrics: dict[str, float], task: str, gates: GateConfig,
                   champion_metrics: dict[str, float] | None) -> GateResult:
    """Check ``metrics`` against the absolute gates and, when there is a champion, the regression gates."""
    relevant = task_metrics(task)
    checks = [_absolute(m, t, metrics.get(m)) for m, t in sorted(gates.absolute.items()) if m in relevant]
    if champion_metrics:
        for metric, allowed in sorted(gates.max_regression.items()):
            if metric in relevant and metric in champion_metrics:
                checks.append(_regression(metric, allowed, metrics.get(metric), champion_metrics[metric]))
    return GateResult(passed=all(c.passed for c in checks), checks=checks)


def _absolute(metric: str, threshold: float, value: float | None) -> GateCheck:
    lower = metric in LOWER_IS_BETTER
    if value is None or not math.isfinite(value):
        return GateCheck(metric, "absolute", threshold, None, None, False, f"{metric} was not measured")
    passed = value <= threshold + FLOAT_SLACK if lower else value >= threshold - FLOAT_SLACK
    sign = "<=" if lower else ">="
    message = f"{metric} {_fmt(value)} {'meets' if passed else 'misses'} {sign} {_fmt(threshold)}"
    return GateCheck(metric, "absolute", threshold, value, None, passed, message)


def _regression(metric: str, allowed: float, value: float | None, champion: float) -> GateCheck:
    lower = metric in LOWER_IS_BETTER
    if value is None or not math.isfinite(value):
        return GateCheck(metric, "regression", allowed, None, champion, False, f"{metric} was not measured")
    worse_by = value - champion if lower else champion - value
    passed = worse_by <= allowed + FLOAT_SLACK
    if passed:
        message = f"{metric} {_fmt(value)} vs champion {_fmt(champion)}: within the allowed {_fmt(allowed)}"
    else:
        message = (f"{metric} {_fmt(value)} is {_fmt(worse_by)} worse than the champion's {_fmt(champion)} "
                   f"(allowed {_fmt(allowed)})")
    return GateCheck(metric, "regression", allowed, value, champion, passed, message)


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


__all__ = ["GateCheck", "GateResult", "evaluate_gates", "task_metrics"]

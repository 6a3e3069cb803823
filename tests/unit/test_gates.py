"""Metric gates: absolute bounds, regression against the champion, metric direction, skipped and missing metrics."""

import pytest

from edgeops.config import GateConfig
from edgeops.train.gates import evaluate_gates

pytestmark = pytest.mark.unit


def test_absolute_gates_respect_metric_direction() -> None:
    gates = GateConfig(absolute={"accuracy": 0.9, "log_loss": 0.3}, max_regression={})
    ok = evaluate_gates({"accuracy": 0.95, "log_loss": 0.2}, "binary", gates, None)
    assert ok.passed and len(ok.checks) == 2 and ok.reasons == []
    bad = evaluate_gates({"accuracy": 0.85, "log_loss": 0.4}, "binary", gates, None)
    assert not bad.passed
    assert bad.reasons == ["accuracy 0.85 misses >= 0.9", "log_loss 0.4 misses <= 0.3"]


def test_boundary_values_pass() -> None:
    gates = GateConfig(absolute={"accuracy": 0.9, "rmse": 10.0}, max_regression={"r2": 0.02})
    assert evaluate_gates({"accuracy": 0.9}, "binary", gates, None).passed
    assert evaluate_gates({"rmse": 10.0, "r2": 0.5}, "regression", gates, {"r2": 0.52}).passed


def test_regression_against_the_champion() -> None:
    gates = GateConfig(absolute={}, max_regression={"accuracy": 0.02, "rmse": 1.0})
    assert evaluate_gates({"accuracy": 0.89}, "multiclass", gates, {"accuracy": 0.90}).passed
    worse = evaluate_gates({"accuracy": 0.85}, "multiclass", gates, {"accuracy": 0.90})
    assert not worse.passed
    assert "0.05 worse than the champion's 0.9 (allowed 0.02)" in worse.reasons[0]
    rmse = evaluate_gates({"rmse": 12.5}, "regression", gates, {"rmse": 11.0})
    assert not rmse.passed and rmse.checks[0].champion_value == 11.0


def test_no_champion_means_no_regression_checks() -> None:
    result = evaluate_gates({"accuracy": 0.1}, "binary", GateConfig(), None)
    assert result.passed and result.checks == []


def test_gates_of_other_tasks_are_skipped() -> None:
    gates = GateConfig(absolute={"rmse": 1.0, "accuracy": 0.5}, max_regression={"r2": 0.0})
    result = evaluate_gates({"accuracy": 0.6}, "binary", gates, {"r2": 0.9, "accuracy": 0.6})
    assert [c.metric for c in result.checks] == ["accuracy"] and result.passed


def test_an_unmeasured_metric_fails_its_gate() -> None:
    gates = GateConfig(absolute={"roc_auc": 0.7}, max_regression={})
    result = evaluate_gates({"accuracy": 0.9}, "multiclass", gates, None)
    assert not result.passed and result.reasons == ["roc_auc was not measured"]


def test_markdown_and_dict() -> None:
    gates = GateConfig(absolute={"accuracy": 0.9}, max_regression={"accuracy": 0.01})
    result = evaluate_gates({"accuracy": 0.8}, "binary", gates, {"accuracy": 0.95})
    md = result.to_markdown()
    assert md.startswith("**Gates failed**") and "| accuracy | absolute | 0.9 | 0.8 |" in md
    assert result.to_dict()["checks"][1]["kind"] == "regression"

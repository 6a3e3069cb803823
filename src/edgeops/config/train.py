"""The train side of edgeops.yaml: the estimator, the data checks, the split, the gates and the ONNX export."""

import importlib
from dataclasses import dataclass, field
from typing import Any

from edgeops.errors import ConfigError

CLASSIFICATION_METRICS: tuple[str, ...] = ("accuracy", "f1", "roc_auc", "log_loss")
REGRESSION_METRICS: tuple[str, ...] = ("rmse", "mae", "r2")
METRICS: tuple[str, ...] = CLASSIFICATION_METRICS + REGRESSION_METRICS
LOWER_IS_BETTER: frozenset[str] = frozenset({"log_loss", "rmse", "mae"})


@dataclass(frozen=True)
class ModelSpec:
    """Which scikit-learn estimator to train. ``estimator`` None picks the default for the task (see
    training.DEFAULT_ESTIMATORS); ``task`` None infers it from the target (training.infer_task)."""

    estimator: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    task: str | None = None
    missing_token: str = "__missing__"
    """Stands for a missing string before fitting: skl2onnx cannot impute NaN in a string column, so the
    model learns this token instead, and the device feeds the same token (InputSpec.missing_token)."""
    scale_numeric: bool | None = None
    """Standard-scale numeric columns. None (auto): yes, except for tree models (sklearn.tree/ensemble), which
    do not need it and where float32 rounding of scaled values can flip a split between ONNX and sklearn."""


@dataclass(frozen=True)
class DataChecks:
    """The training data: its target column and the thresholds of the data checks (train/validation.py)."""

    target: str | None = None
    min_rows: int = 30
    max_missing_ratio: float = 0.3
    max_duplicate_ratio: float = 0.05
    min_class_ratio: float = 0.05
    numeric_parse_ratio: float = 0.8
    max_categories: int = 100
    drift_psi_warning: float = 0.1
    drift_psi_error: float | None = None
    drift_p_value: float = 0.001


@dataclass(frozen=True)
class SplitConfig:
    """How the data is split into training and holdout rows (the holdout scores the gates)."""

    test_size: float = 0.25
    stratify: bool = True


@dataclass(frozen=True)
class GateConfig:
    """``absolute``: metric → the value it must reach (at least, or at most for log_loss/rmse/mae).
    ``max_regression``: metric → how much worse than the champion it may be, in the metric's own units."""

    absolute: dict[str, float] = field(default_factory=dict)
    max_regression: dict[str, float] = field(
        default_factory=lambda: {"accuracy": 0.02, "roc_auc": 0.02, "r2": 0.02})


@dataclass(frozen=True)
class ExportConfig:
    """The ONNX export: parity tolerance, golden rows and reference bins kept in the manifest."""

    parity_tolerance: float = 1e-4
    golden_rows: int = 20
    numeric_bins: int = 10
    chunk_size: int = 256 * 1024
    target_opset: int | None = None
    min_label_agreement: float = 1.0


def import_estimator(path: str, key: str = "model.estimator") -> type:
    """Import an estimator class by dotted path, allowing scikit-learn classes only.

    An import path from a config file is code execution (importing a module runs it), so only modules under
    ``sklearn.`` are imported, and the result must be a scikit-learn estimator class."""
    from sklearn.base import BaseEstimator

    module_name, _, class_name = path.rpartition(".")
    if not module_name.startswith("sklearn.") or not class_name.isidentifier():
        raise ConfigError(key, f"{path!r} is not allowed: only scikit-learn classes (sklearn.*) may be imported")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(key, f"unknown estimator {path!r}: no module {module_name!r}") from exc
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseEstimator)):
        raise ConfigError(key, f"unknown estimator {path!r}: not a scikit-learn estimator class")
    return cls


__all__ = ["CLASSIFICATION_METRICS", "LOWER_IS_BETTER", "METRICS", "REGRESSION_METRICS", "DataChecks", "ExportConfig",
           "GateConfig", "ModelSpec", "SplitConfig", "import_estimator"]

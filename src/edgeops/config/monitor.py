"""How the monitor judges (edgeops.yaml ``monitor``): the drift, realized (labels) and estimated performance
thresholds, each a frozen dataclass that checks its own ranges.

The telemetry side (telemetry/drift_checks.py, realized.py, performance.py) judges with these very classes, and
the config's sections are these classes (``monitor.labels`` adds ``hours``), so a threshold is declared,
defaulted and range-checked once. This module imports only the standard library: loading a config must not
import scipy.
"""

from dataclasses import dataclass, field


class ThresholdError(ValueError):
    """A threshold out of its range: ``field`` names it, ``problem`` says what it must be (the config loader
    turns it into a ConfigError naming the dotted key, ``monitor.drift.window_s: must be positive``)."""

    def __init__(self, field: str, value: object, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field} out of range ({value!r}): {problem}")


def check_ranges(obj: object, rules: dict[str, tuple[bool, str]]) -> None:
    for name, (ok, problem) in rules.items():
        if not ok:
            raise ThresholdError(name, getattr(obj, name), problem)


MONTH_S = 30 * 86400.0
"""The false-alarm budget's period (telemetry/drift_checks.py)."""
POSITIVE, AT_LEAST_1 = "must be positive", "must be at least 1"
FRACTION, NOT_NEGATIVE = "must be between 0 and 1", "must not be negative"


@dataclass(frozen=True)
class DriftThresholds:
    """How drift is decided (edgeops.yaml ``monitor.drift``; ``edgeops monitor run`` options; flow parameters)."""

    false_alarms: float = 0.5
    """Expected false drift episodes per scope (a device, or the fleet) per 30 days on unchanged traffic."""
    window_s: float = 60.0
    """Length of a check point: windows ending in the same ``window_s`` slot are judged together."""
    recent_windows: int = 3
    """Also test the last N check points pooled (N = 1: the latest window only)."""
    recovery_windows: int = 10
    """An episode closes after this many check points in a row without evidence of drift."""
    recover_p: float = 0.01
    """"Without evidence": no test of the check point below recover_p / tests."""
    min_expected: float = 5.0
    """Pool bins until each is expected to hold this many values in the smaller sample (Cochran)."""
    smoothing: float = 0.5
    """PSI pseudo-count per bin (reported effect size only)."""

    def __post_init__(self) -> None:
        check_ranges(self, {
            "false_alarms": (self.false_alarms > 0, POSITIVE), "window_s": (self.window_s > 0, POSITIVE),
            "recent_windows": (self.recent_windows >= 1, AT_LEAST_1),
            "recovery_windows": (self.recovery_windows >= 1, AT_LEAST_1),
            "recover_p": (0 < self.recover_p < 1, FRACTION), "min_expected": (self.min_expected > 0, POSITIVE),
            "smoothing": (self.smoothing > 0, POSITIVE)})

    @property
    def scales(self) -> tuple[int, ...]:
        return (1,) if self.recent_windows == 1 else (1, self.recent_windows)

    def alpha(self, series: int) -> float:
        """Per-test significance for ``series`` features/predictions, each tested at every scale."""
        checks = MONTH_S / self.window_s
        return self.false_alarms / (checks * series * len(self.scales))

    def lenient(self, series: int) -> float:
        return self.recover_p / (series * len(self.scales))

    def describe(self, series: int) -> str:
        return (f"two-sample chi-square per feature, p < {self.alpha(series):.2g} "
                f"({self.false_alarms:g} false episodes / 30 days over {series} series, "
                f"{self.window_s:g} s windows, latest and last {self.recent_windows} pooled); "
                f"episode closes after {self.recovery_windows} quiet windows")


@dataclass(frozen=True)
class RealizedThresholds:
    """How realized performance is judged (edgeops.yaml ``monitor.labels``, ``edgeops monitor run`` options,
    monitor flow parameters)."""

    min_labels: int = 50
    """No verdict before this many labels (per model version and scope)."""
    confidence: float = 0.95
    """Level of the confidence interval (Wilson for accuracy, Student t for MAE)."""
    accuracy_tolerance: float = 0.05
    """Degraded when accuracy is surely below the release's test accuracy minus this (absolute)."""
    mae_tolerance: float = 0.25
    """Degraded when MAE is surely above the release's test MAE times (1 + this)."""
    min_accuracy: float | None = None
    """An absolute minimum accuracy instead of the relative one."""
    max_mae: float | None = None
    """An absolute maximum MAE instead of the relative one."""

    def __post_init__(self) -> None:
        check_ranges(self, {
            "min_labels": (self.min_labels >= 1, AT_LEAST_1), "confidence": (0 < self.confidence < 1, FRACTION),
            "accuracy_tolerance": (0 <= self.accuracy_tolerance <= 1, FRACTION),
            "mae_tolerance": (self.mae_tolerance >= 0, NOT_NEGATIVE),
            "min_accuracy": (self.min_accuracy is None or 0 <= self.min_accuracy <= 1, FRACTION),
            "max_mae": (self.max_mae is None or self.max_mae >= 0, NOT_NEGATIVE)})

    def describe(self) -> str:
        accuracy = f"accuracy < {self.min_accuracy:g}" if self.min_accuracy is not None \
            else f"accuracy < test − {self.accuracy_tolerance:g}"
        mae = f"MAE > {self.max_mae:g}" if self.max_mae is not None else f"MAE > test × {1 + self.mae_tolerance:g}"
        return (f"degraded when the {self.confidence:.0%} interval is wholly beyond the threshold ({accuracy}; "
                f"{mae}), from {self.min_labels} labels on")


@dataclass(frozen=True)
class PerformanceThresholds:
    """When an estimate is called degraded: its whole interval below the release's own test metric minus a
    tolerance (accuracy, F1) or above its test MAE times (1 + tolerance), and only on ``min_rows`` predictions.
    The interval, not the point estimate, decides, so a thin scope is not called degraded on noise."""

    metric: str = "accuracy"
    """What a classifier is judged on: ``accuracy`` or ``f1`` (regressors: MAE)."""
    accuracy_tolerance: float = 0.05
    """Degraded when the estimate's upper bound is below the release's test accuracy minus this."""
    f1_tolerance: float = 0.05
    """The same for F1 (``metric: f1``)."""
    mae_tolerance: float = 0.25
    """Degraded when the estimate's lower bound is above the release's test MAE times (1 + this)."""
    min_rows: int = 200
    """No verdict before this many predictions per version and scope."""
    confidence: float = 0.95
    """Level of the estimate's interval."""

    def __post_init__(self) -> None:
        check_ranges(self, {
            "metric": (self.metric in ("accuracy", "f1"), "must be accuracy or f1"),
            "accuracy_tolerance": (0 <= self.accuracy_tolerance <= 1, FRACTION),
            "f1_tolerance": (0 <= self.f1_tolerance <= 1, FRACTION),
            "mae_tolerance": (self.mae_tolerance >= 0, NOT_NEGATIVE),
            "min_rows": (self.min_rows >= 1, AT_LEAST_1), "confidence": (0 < self.confidence < 1, FRACTION)})


DriftConfig = DriftThresholds
"""``monitor.drift`` (docs/monitoring.md)."""
PerformanceConfig = PerformanceThresholds
"""``monitor.performance`` (docs/monitoring.md, "Performance without labels")."""


@dataclass(frozen=True)
class LabelsConfig(RealizedThresholds):
    """``monitor.labels`` (docs/monitoring.md, "Labels and realized performance"): the realized thresholds and
    how far back labels count."""

    hours: float = 168.0
    """Labels count for the predictions made in the last N hours (by the time of the prediction, not the label)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ranges(self, {"hours": (self.hours > 0, POSITIVE)})

    def thresholds(self) -> RealizedThresholds:
        return RealizedThresholds(**{f: getattr(self, f) for f in RealizedThresholds.__dataclass_fields__})


@dataclass(frozen=True)
class MonitorConfig:
    """What ``edgeops monitor run`` and the monitor flow read, and how they judge drift."""

    hours: float = 24.0
    """Telemetry the monitor reads: the last N hours (health sums it; drift judges every check point in it)."""
    drift: DriftConfig = field(default_factory=DriftConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    performance: PerformanceConfig = field(default_factory=PerformanceConfig)

    def __post_init__(self) -> None:
        check_ranges(self, {"hours": (self.hours > 0, POSITIVE)})


__all__ = ["DriftConfig", "DriftThresholds", "LabelsConfig", "MonitorConfig", "PerformanceConfig",
           "PerformanceThresholds", "RealizedThresholds", "ThresholdError"]

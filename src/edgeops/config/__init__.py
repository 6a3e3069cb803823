"""The project config: one ``edgeops.yaml`` with documented defaults, plus overrides by dotted key.

Every section is a frozen dataclass; loading checks every key and type and raises ConfigError naming the
dotted key (``model.params: must be a mapping``), so a typo never silently falls back to a default. The full
reference with defaults is docs/pipeline.md; docs/edgeops.example.yaml is a complete example.

One module per part of the loop: train.py, registry.py, rollout.py (broker and rollout), monitor.py (the
thresholds the telemetry side judges with), control.py (data sources, signing, telemetry store, retrain);
load.py reads the file. ``from edgeops.config import X`` reaches all of them, each module loaded on first use
(PEP 562, as in ``edge_agent.protocol``): a command that needs one section (the broker's, say) does not pay
for building the classes of all the others.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the same names, for type checkers and readers
    from edgeops.config.control import ModelSource, RetrainConfig, SigningConfig, TelemetryConfig
    from edgeops.config.load import (
        CONFIG_ENV,
        DEFAULT_FILE,
        ProjectConfig,
        config_sha256,
        config_to_dict,
        load_config,
        local_state_dir,
    )
    from edgeops.config.monitor import DriftConfig, LabelsConfig, MonitorConfig, PerformanceConfig
    from edgeops.config.registry import ADDRESSING_STYLES, RegistryConfig, S3Config, is_url
    from edgeops.config.rollout import MqttConfig, RolloutConfig
    from edgeops.config.train import (
        CLASSIFICATION_METRICS,
        LOWER_IS_BETTER,
        METRICS,
        REGRESSION_METRICS,
        DataChecks,
        ExportConfig,
        GateConfig,
        ModelSpec,
        SplitConfig,
        import_estimator,
    )

_MODULES: dict[str, tuple[str, ...]] = {  # module → the names it exports here
    "control": ("ModelSource", "RetrainConfig", "SigningConfig", "TelemetryConfig"),
    "load": ("CONFIG_ENV", "DEFAULT_FILE", "ProjectConfig", "config_sha256", "config_to_dict", "load_config",
             "local_state_dir"),
    "monitor": ("DriftConfig", "LabelsConfig", "MonitorConfig", "PerformanceConfig"),
    "registry": ("ADDRESSING_STYLES", "RegistryConfig", "S3Config", "is_url"),
    "rollout": ("MqttConfig", "RolloutConfig"),
    "train": ("CLASSIFICATION_METRICS", "LOWER_IS_BETTER", "METRICS", "REGRESSION_METRICS", "DataChecks",
              "ExportConfig", "GateConfig", "ModelSpec", "SplitConfig", "import_estimator"),
}
_MODULE_OF = {name: module for module, names in _MODULES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # the next lookup is an ordinary one
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_MODULE_OF])


__all__ = [
    "ADDRESSING_STYLES", "CLASSIFICATION_METRICS", "CONFIG_ENV", "DEFAULT_FILE", "LOWER_IS_BETTER", "METRICS",
    "REGRESSION_METRICS", "DataChecks", "DriftConfig", "ExportConfig", "GateConfig", "LabelsConfig", "ModelSource",
    "ModelSpec", "MonitorConfig", "MqttConfig", "PerformanceConfig", "ProjectConfig", "RegistryConfig",
    "RetrainConfig", "RolloutConfig", "S3Config", "SigningConfig", "SplitConfig", "TelemetryConfig",
    "config_sha256", "config_to_dict", "import_estimator", "is_url", "load_config", "local_state_dir",
]

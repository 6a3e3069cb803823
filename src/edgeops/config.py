"""The project config: one ``edgeops.yaml`` with documented defaults, plus overrides by dotted key.

Every section is a frozen dataclass; loading checks every key and type and raises ConfigError naming the
dotted key (``model.params: must be a mapping``), so a typo never silently falls back to a default. The full
reference with defaults is docs/pipeline.md; docs/edgeops.example.yaml is a complete example.
"""

import dataclasses
import importlib
import os
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

from edge_agent.protocol import MAX_MESSAGE_BYTES, TASKS, ProtocolError, canonical_json, check_name, sha256_hex

from .config_control import ModelSource, RetrainConfig, SigningConfig, TelemetryConfig, check_control
from .errors import ConfigError

DEFAULT_FILE = Path("edgeops.yaml")
CONFIG_ENV = "EDGEOPS_CONFIG"
"""The config file of a worker that runs somewhere else than the project directory (docs/deployments.md)."""
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
    """The training data: its target column and the thresholds of the data checks (validation.py)."""

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


ADDRESSING_STYLES: tuple[str, ...] = ("auto", "path", "virtual")


@dataclass(frozen=True)
class S3Config:
    """Where an ``s3://`` registry is served from. Credentials are never here: boto3 finds them where it always
    does (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile, an instance role), so none lands in a file or a
    flow parameter. AWS_ENDPOINT_URL, when set, wins over ``endpoint_url`` (the environment wins, as for MQTT)."""

    endpoint_url: str | None = None
    """An S3-compatible server (SeaweedFS, MinIO, Ceph): ``http://host:8333``; null for AWS itself."""
    region: str | None = None
    profile: str | None = None
    """A profile of ~/.aws/config and ~/.aws/credentials (null: AWS_PROFILE, else the default chain)."""
    addressing_style: str = "auto"
    """``path`` for servers that do not serve ``bucket.host`` names; ``auto`` lets botocore choose."""


@dataclass(frozen=True)
class RegistryConfig:
    """Where releases and the signing keys live (paths relative to the config file)."""

    root: Path | str = Path(".edgeops/registry")
    """A local folder (a Path), or object storage as an ``s3://bucket/prefix`` URL (kept as text)."""
    keys_dir: Path = Path(".edgeops/keys")
    s3: S3Config = field(default_factory=S3Config)


@dataclass(frozen=True)
class MqttConfig:
    """The broker the control plane talks to, and the topic prefix of the fleet."""

    url: str = "mqtt://127.0.0.1:1883"
    prefix: str = "edgeops"
    username: str | None = None
    password: str | None = None
    """Kept for old files; prefer $EDGEOPS_MQTT_PASSWORD on the worker or ``password_secret``."""
    ca_file: Path | None = None
    username_secret: str | None = None
    password_secret: str | None = None
    """Prefect Secret blocks holding the broker credentials (edgeops.credentials: the environment wins)."""


@dataclass(frozen=True)
class RolloutConfig:
    """Rollout settings that are not per rollout."""

    desired_lifetime_days: float = 7.0
    """How long a device acts on a signed desired state: a device that was offline for longer refuses it and
    keeps serving what it runs until a rollout signs a new one (docs/agent-operations.md)."""
    state_url: str | None = None
    """Where rollout state lives: a SQLAlchemy URL (``postgresql+psycopg://host/db`` for a team, shared by
    every worker), or null for SQLite at ``rollouts.db`` beside a local registry (docs/rollout.md)."""


@dataclass(frozen=True)
class DriftConfig:
    """How the monitor decides drift (docs/monitoring.md; drift_checks.DriftThresholds has the same fields)."""

    false_alarms: float = 0.5
    """Expected false drift episodes per scope (a device, or the fleet) per 30 days of unchanged traffic."""
    window_s: float = 60.0
    """Check-point length: telemetry windows ending in the same slot of this many seconds are judged together."""
    recent_windows: int = 3
    """Each check also tests this many recent check points pooled (1: the latest only)."""
    recovery_windows: int = 10
    """A drift episode closes after this many check points in a row without evidence of drift."""
    recover_p: float = 0.01
    min_expected: float = 5.0


@dataclass(frozen=True)
class LabelsConfig:
    """How realized performance (labels) is judged (docs/monitoring.md, "Labels and realized performance";
    realized.RealizedThresholds has the same fields but ``hours``)."""

    hours: float = 168.0
    """Labels count for the predictions made in the last N hours (by the time of the prediction, not the label)."""
    min_labels: int = 50
    """No verdict on accuracy / MAE before this many labels per model version and scope."""
    confidence: float = 0.95
    """Level of the confidence interval (Wilson for accuracy, Student t for MAE)."""
    accuracy_tolerance: float = 0.05
    """Degraded when the interval's upper bound is below the release's test accuracy minus this."""
    mae_tolerance: float = 0.25
    """Degraded when the interval's lower bound is above the release's test MAE times (1 + this)."""
    min_accuracy: float | None = None
    """An absolute minimum accuracy instead of the relative one."""
    max_mae: float | None = None
    """An absolute maximum MAE instead of the relative one."""


@dataclass(frozen=True)
class PerformanceConfig:
    """When the monitor calls a version's performance, estimated without labels, degraded (docs/monitoring.md,
    "Performance without labels"; performance.PerformanceThresholds has the same fields)."""

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


@dataclass(frozen=True)
class MonitorConfig:
    """What ``edgeops monitor run`` and the monitor flow read, and how they judge drift."""

    hours: float = 24.0
    """Telemetry the monitor reads: the last N hours (health sums it; drift judges every check point in it)."""
    drift: DriftConfig = field(default_factory=DriftConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    performance: PerformanceConfig = field(default_factory=PerformanceConfig)


@dataclass(frozen=True)
class ProjectConfig:
    """One ``edgeops.yaml``: every section, each with documented defaults."""

    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataChecks = field(default_factory=DataChecks)
    split: SplitConfig = field(default_factory=SplitConfig)
    seed: int = 42
    gates: GateConfig = field(default_factory=GateConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    signing: SigningConfig = field(default_factory=SigningConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    models: dict[str, ModelSource] = field(default_factory=dict)
    """Per model: where its training data comes from (retrains read it; docs/continuous-training.md)."""
    name: str | None = None
    """Model name in the registry (a CLI flag may override it)."""


def load_config(path: Path | None = None, overrides: Mapping[str, Any] | None = None) -> ProjectConfig:
    """Load ``path`` (None: $EDGEOPS_CONFIG, else ./edgeops.yaml when it exists, else the defaults) and apply
    dotted overrides.

    Override values may be strings as typed on a command line (``{"seed": "3"}``); they are parsed as YAML
    scalars when the key is not a text field. Relative registry and data paths are resolved against the file's
    folder.
    """
    if path is None and os.environ.get(CONFIG_ENV):
        path = Path(os.environ[CONFIG_ENV])
    if path is None and DEFAULT_FILE.is_file():
        path = DEFAULT_FILE
    raw = _read_yaml(path) if path is not None else {}
    for key, value in (overrides or {}).items():
        _apply_override(raw, key, value)
    cfg: ProjectConfig = _build(ProjectConfig, raw, "")
    _check_semantics(cfg)
    if path is not None:
        base = Path(path).parent
        root = cfg.registry.root
        cfg = dataclasses.replace(cfg, registry=dataclasses.replace(
            cfg.registry, root=_under(base, root) if isinstance(root, Path) else root,
            keys_dir=_under(base, cfg.registry.keys_dir)),
            models={name: source.under(base) for name, source in cfg.models.items()},
            telemetry=TelemetryConfig(url=_sqlite_under(base, cfg.telemetry.url)))
        if cfg.rollout.state_url is not None:
            cfg = dataclasses.replace(cfg, rollout=dataclasses.replace(
                cfg.rollout, state_url=_sqlite_under(base, cfg.rollout.state_url)))
    return cfg


def local_state_dir(cfg: ProjectConfig) -> Path:
    """The folder of a project's local state (``rollouts.db``, quickstart's sample data): the registry's parent
    when the registry is a folder (``.edgeops`` by default), else the keys folder's parent (an S3 registry has no
    folder here, and the keys always do)."""
    root = cfg.registry.root
    return root.parent if isinstance(root, Path) else cfg.registry.keys_dir.parent


def is_url(location: Path | str) -> bool:
    """Whether a location is a URL (``s3://...``) rather than a local path; a Path never is."""
    return isinstance(location, str) and "://" in location


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain JSON-compatible dict of a config (paths as strings), the shape edgeops.yaml has."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = config_to_dict(value)
        elif isinstance(value, Path):
            out[f.name] = str(value)
        elif isinstance(value, dict):
            out[f.name] = dict(value)
        else:
            out[f.name] = value
    return out


def config_sha256(cfg: ProjectConfig) -> str:
    """Hash of the parts that decide the model (model, data checks, split, seed, export) for the lineage.

    Registry location and MQTT settings are left out: moving the registry does not change a model."""
    full = config_to_dict(cfg)
    relevant = {k: full[k] for k in ("model", "data", "split", "seed", "export")}
    return sha256_hex(canonical_json(relevant))


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


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml  # only when there is a file: a project without one pays nothing for it (docs/cli.md)

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror or exc}") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from exc
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of sections")
    return raw


def _apply_override(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise ConfigError(key, "is not a dotted config key")
    if isinstance(value, str) and not _accepts_text(parts):
        import yaml

        try:
            value = yaml.safe_load(value) if value.strip() else value
        except yaml.YAMLError as exc:
            raise ConfigError(key, f"cannot parse {value!r}") from exc
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(".".join(parts[: i + 1]), "must be a mapping")
        node = child
    node[parts[-1]] = value


def _accepts_text(parts: list[str]) -> bool:
    """Whether the field at ``parts`` is a text field (so a command-line string is kept as typed)."""
    kind: Any = ProjectConfig
    for part in parts:
        if dataclasses.is_dataclass(kind):
            hints = get_type_hints(kind)
            if part not in hints:
                return True  # unknown key: _build reports it
            kind = hints[part]
        elif get_origin(kind) is dict:
            kind = get_args(kind)[1]
        else:
            return True
    options = get_args(kind) if _is_union(kind) else (kind,)
    return str in options or Path in options


def _is_union(kind: Any) -> bool:
    return get_origin(kind) in (Union, types.UnionType)


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(prefix or "config", "must be a mapping")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            where = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(where, f"unknown key (known: {', '.join(names)})")
    kwargs = {}
    for name in names:
        if name in raw:
            kwargs[name] = _convert(raw[name], hints[name], f"{prefix}.{name}" if prefix else name)
    return cls(**kwargs)


def _convert(value: Any, kind: Any, key: str) -> Any:
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        return _build(kind, value, key)
    if _is_union(kind):
        options = get_args(kind)
        if value is None and type(None) in options:
            return None
        if set(options) == {Path, str}:  # a local path or a URL: a URL is no path ("s3://b" would become "s3:/b")
            return value if is_url(value) else _scalar(value, Path, key)
        inner = [o for o in options if o is not type(None)]
        return _convert(value, inner[0], key)
    if get_origin(kind) is dict:
        if not isinstance(value, dict):
            raise ConfigError(key, "must be a mapping")
        item = get_args(kind)[1]
        return {str(k): (v if item is Any else _convert(v, item, f"{key}.{k}")) for k, v in value.items()}
    return _scalar(value, kind, key)


def _scalar(value: Any, kind: Any, key: str) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(key, "must be true or false")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(key, "must be an integer")
    if kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(key, "must be a number")
    if kind is str:
        if isinstance(value, str):
            return value
        raise ConfigError(key, "must be a string")
    if kind is Path:
        if isinstance(value, str) and value:
            return Path(value)
        raise ConfigError(key, "must be a path (string)")
    raise ConfigError(key, f"unsupported type {kind!r}")  # pragma: no cover - a bug in this module


def _check_semantics(cfg: ProjectConfig) -> None:
    """Checks beyond types: ranges, known metric names, a safe estimator path and its params."""
    if cfg.model.task is not None and cfg.model.task not in TASKS:
        raise ConfigError("model.task", f"must be one of {', '.join(TASKS)} (or omitted to infer it)")
    if cfg.model.estimator is not None:
        cls = import_estimator(cfg.model.estimator)
        try:
            cls(**cfg.model.params)
        except TypeError as exc:
            raise ConfigError("model.params", f"not accepted by {cfg.model.estimator}: {exc}") from exc
    if not 0.0 < cfg.split.test_size < 1.0:
        raise ConfigError("split.test_size", "must be between 0 and 1")
    for section in ("absolute", "max_regression"):
        for metric in getattr(cfg.gates, section):
            if metric not in METRICS:
                raise ConfigError(f"gates.{section}.{metric}", f"unknown metric (known: {', '.join(METRICS)})")
    positive = {"export.golden_rows": cfg.export.golden_rows, "export.chunk_size": cfg.export.chunk_size,
                "data.min_rows": cfg.data.min_rows, "data.max_categories": cfg.data.max_categories}
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(key, "must be at least 1")
    if cfg.export.chunk_size > MAX_MESSAGE_BYTES:  # the shipped broker refuses bigger messages from anyone
        raise ConfigError("export.chunk_size", f"must be at most {MAX_MESSAGE_BYTES} (the protocol's message limit)")
    if not 1 <= cfg.export.numeric_bins <= 1024:
        raise ConfigError("export.numeric_bins", "must be between 1 and 1024")
    if not 0.0 <= cfg.export.min_label_agreement <= 1.0:
        raise ConfigError("export.min_label_agreement", "must be between 0 and 1")
    if not 0 < cfg.rollout.desired_lifetime_days <= 3660:
        raise ConfigError("rollout.desired_lifetime_days", "must be positive and at most 3660 (ten years)")
    if cfg.export.parity_tolerance <= 0:
        raise ConfigError("export.parity_tolerance", "must be positive")
    for key in ("max_missing_ratio", "max_duplicate_ratio", "min_class_ratio", "numeric_parse_ratio"):
        if not 0.0 <= getattr(cfg.data, key) <= 1.0:
            raise ConfigError(f"data.{key}", "must be between 0 and 1")
    _check_monitor(cfg.monitor)
    _check_storage(cfg)
    check_control(cfg.models, cfg.retrain, cfg.telemetry)
    if cfg.name is not None:
        try:
            check_name(cfg.name)
        except ProtocolError as exc:
            raise ConfigError("name", exc.reason) from exc


def _check_monitor(monitor: MonitorConfig) -> None:
    drift = monitor.drift
    checks = {"monitor.hours": (monitor.hours > 0, "must be positive"),
              "monitor.drift.false_alarms": (drift.false_alarms > 0, "must be positive"),
              "monitor.drift.window_s": (drift.window_s > 0, "must be positive"),
              "monitor.drift.recent_windows": (drift.recent_windows >= 1, "must be at least 1"),
              "monitor.drift.recovery_windows": (drift.recovery_windows >= 1, "must be at least 1"),
              "monitor.drift.recover_p": (0 < drift.recover_p < 1, "must be between 0 and 1"),
              "monitor.drift.min_expected": (drift.min_expected > 0, "must be positive")}
    labels = monitor.labels
    checks.update({
        "monitor.labels.hours": (labels.hours > 0, "must be positive"),
        "monitor.labels.min_labels": (labels.min_labels >= 1, "must be at least 1"),
        "monitor.labels.confidence": (0 < labels.confidence < 1, "must be between 0 and 1"),
        "monitor.labels.accuracy_tolerance": (0 <= labels.accuracy_tolerance <= 1, "must be between 0 and 1"),
        "monitor.labels.mae_tolerance": (labels.mae_tolerance >= 0, "must not be negative"),
        "monitor.labels.min_accuracy": (labels.min_accuracy is None or 0 <= labels.min_accuracy <= 1,
                                        "must be between 0 and 1"),
        "monitor.labels.max_mae": (labels.max_mae is None or labels.max_mae >= 0, "must not be negative")})
    checks.update(_performance_checks(monitor.performance))
    for key, (ok, message) in checks.items():
        if not ok:
            raise ConfigError(key, message)


def _check_storage(cfg: ProjectConfig) -> None:
    root = cfg.registry.root
    if is_url(root) and not str(root).startswith("s3://"):
        raise ConfigError("registry.root", f"{root!r}: a local folder or an s3://bucket/prefix URL")
    if cfg.registry.s3.addressing_style not in ADDRESSING_STYLES:
        raise ConfigError("registry.s3.addressing_style", f"must be one of {', '.join(ADDRESSING_STYLES)}")
    state = cfg.rollout.state_url
    if state is not None and not is_url(state):
        raise ConfigError("rollout.state_url", f"{state!r} is not a database URL (sqlite:///path/rollouts.db, "
                          "postgresql+psycopg://host/db)")
    if state is not None and urlsplit(state).password is not None:
        raise ConfigError("rollout.state_url", "must not hold a password (it would travel as a flow parameter): "
                          "give it to the worker in PGPASSWORD or ~/.pgpass")


def _performance_checks(perf: PerformanceConfig) -> dict[str, tuple[bool, str]]:
    return {"monitor.performance.metric": (perf.metric in ("accuracy", "f1"), "must be accuracy or f1"),
            "monitor.performance.accuracy_tolerance": (0 <= perf.accuracy_tolerance <= 1, "must be between 0 and 1"),
            "monitor.performance.f1_tolerance": (0 <= perf.f1_tolerance <= 1, "must be between 0 and 1"),
            "monitor.performance.mae_tolerance": (perf.mae_tolerance >= 0, "must not be negative"),
            "monitor.performance.min_rows": (perf.min_rows >= 1, "must be at least 1"),
            "monitor.performance.confidence": (0 < perf.confidence < 1, "must be between 0 and 1")}


def _under(base: Path, path: Path) -> Path:
    return path if path.is_absolute() else base / path


def _sqlite_under(base: Path, url: str) -> str:
    """``sqlite:///rel/x.db`` resolved against the config file's folder, like every other path in it."""
    head = "sqlite:///"
    if not url.startswith(head):
        return url
    path, sep, query = url[len(head):].partition("?")
    if not path or path == ":memory:" or Path(path).is_absolute():
        return url
    return f"{head}{_under(base, Path(path))}{sep}{query}"


__all__ = [
    "CLASSIFICATION_METRICS", "LOWER_IS_BETTER", "METRICS", "REGRESSION_METRICS", "DataChecks", "DriftConfig",
    "ExportConfig", "GateConfig", "LabelsConfig", "ModelSource", "ModelSpec", "MonitorConfig", "MqttConfig",
    "PerformanceConfig", "ProjectConfig", "RegistryConfig", "RetrainConfig", "RolloutConfig", "S3Config",
    "SigningConfig", "SplitConfig", "TelemetryConfig", "config_sha256", "config_to_dict", "import_estimator",
    "is_url", "load_config", "local_state_dir",
]

"""Loading edgeops.yaml: the whole ``ProjectConfig``, overrides by dotted key, type and range checks that name
the dotted key at fault, and the hash of what decides a model (for the lineage)."""

import dataclasses
import os
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

from edge_agent.protocol import MAX_MESSAGE_BYTES, TASKS, ProtocolError, canonical_json, check_name, sha256_hex
from edgeops.config.control import ModelSource, RetrainConfig, SigningConfig, TelemetryConfig, check_control
from edgeops.config.monitor import MonitorConfig, ThresholdError
from edgeops.config.registry import ADDRESSING_STYLES, RegistryConfig, is_url
from edgeops.config.rollout import MqttConfig, RolloutConfig
from edgeops.config.train import METRICS, DataChecks, ExportConfig, GateConfig, ModelSpec, SplitConfig, import_estimator
from edgeops.errors import ConfigError

DEFAULT_FILE = Path("edgeops.yaml")
CONFIG_ENV = "EDGEOPS_CONFIG"
"""The config file of a worker that runs somewhere else than the project directory (docs/deployments.md)."""


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
    try:
        return cls(**kwargs)
    except ThresholdError as exc:  # a section that checks its own ranges (config/monitor.py)
        raise ConfigError(f"{prefix}.{exc.field}" if prefix else exc.field, exc.problem) from None


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
    _check_storage(cfg)
    check_control(cfg.models, cfg.retrain, cfg.telemetry)
    if cfg.name is not None:
        try:
            check_name(cfg.name)
        except ProtocolError as exc:
            raise ConfigError("name", exc.reason) from exc


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


__all__ = ["CONFIG_ENV", "DEFAULT_FILE", "ProjectConfig", "config_sha256", "config_to_dict", "load_config",
           "local_state_dir"]

"""The agent's configuration: one frozen dataclass, loaded from one TOML file plus command-line overrides.

Every key of the TOML file is a field of ``AgentConfig`` (flat; ``[labels]`` is a table). An unknown key or a
value of the wrong type is a ``ConfigError`` that names the key, so a typo never silently falls back to a
default on a device nobody is watching. Relative paths in the file are taken relative to the file itself, so a
config and its keys can move together; relative paths given as overrides are taken relative to the working
directory (that is what a user typing a flag expects).
"""

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

from .errors import ConfigError
from .protocol import BrokerAddress, ProtocolError, Topics, check_labels, check_name

SignaturePolicy = Literal["required", "optional"]
"""Whether a desired state must be signed; "optional" is the migration switch (desired.py)."""

MiB = 1024 * 1024


def parse_http_bind(value: str) -> tuple[str, int]:
    """``"127.0.0.1:8765"`` → ("127.0.0.1", 8765); port 0 lets the OS choose (tests use it)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not re.fullmatch(r"[0-9]{1,5}", port) or not 0 <= int(port) <= 65535:  # isdigit takes '²'
        raise ConfigError(f"http: {value!r} must look like host:port (e.g. 127.0.0.1:8765)")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class AgentConfig:
    """Everything one agent process needs. Construct directly (tests) or via ``load_agent_config``.

    ``__post_init__`` checks every value, so an invalid config cannot exist in memory. Paths given as
    strings are turned into ``Path``; ``public_keys`` into a tuple.
    """

    device_id: str
    data_dir: Path
    broker_url: str = "mqtt://127.0.0.1:1883"
    public_keys: tuple[Path, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    http: str | None = None
    http_request_timeout_s: float = 30.0
    http_idle_timeout_s: float = 60.0
    http_backlog: int = 1024
    topic_prefix: str = "edgeops"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    tls_insecure: bool = False
    keepalive_s: int = 30
    max_artifact_bytes: int = 64 * MiB
    fetch_timeout_s: float = 60.0
    telemetry_interval_s: float = 60.0
    telemetry_max_predictions: int = 10_000
    outbox_max_windows: int = 10_000
    feedback_max_predictions: int = 100_000
    """Answers kept for ``/v1/feedback`` (in memory and in ``data_dir/feedback/``, across restarts): a label for
    an older prediction is refused as expired."""
    probation_s: float = 60.0
    probation_min_predictions: int = 20
    probation_max_error_rate: float = 0.05
    probation_max_latency_factor: float = 3.0
    probation_latency_floor_ms: float = 1.0
    reconnect_min_s: float = 0.1
    reconnect_max_s: float = 30.0
    report_steps_after_s: float = 1.0
    desired_signatures: SignaturePolicy = "required"
    """``required``: refuse a desired state that is not signed (edge_agent/desired.py). ``optional``: the migration
    switch for a fleet whose control plane does not sign yet; a device accepts unsigned desired states until it
    has accepted its first signed one."""

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "data_dir", Path(self.data_dir))
        set_(self, "public_keys", tuple(Path(p) for p in self.public_keys))
        set_(self, "labels", dict(self.labels))
        if self.ca_file is not None:
            set_(self, "ca_file", Path(self.ca_file))
        try:
            check_name(self.device_id, "device_id")
            check_labels(self.labels, "labels")
            Topics(self.topic_prefix)
        except ProtocolError as exc:
            raise ConfigError(str(exc)) from exc
        self.broker  # noqa: B018 - parses broker_url, raising ConfigError when it is malformed
        if self.http is not None:
            parse_http_bind(self.http)
        self._check_ranges()

    def _check_ranges(self) -> None:
        positive = ("http_request_timeout_s", "http_idle_timeout_s", "http_backlog", "keepalive_s",
                    "max_artifact_bytes", "fetch_timeout_s", "telemetry_interval_s", "telemetry_max_predictions",
                    "outbox_max_windows", "feedback_max_predictions", "probation_max_latency_factor",
                    "reconnect_min_s", "reconnect_max_s")
        for name in positive:
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"{name}: must be a positive number, got {value!r}")
        for name in ("probation_s", "probation_min_predictions", "probation_latency_floor_ms",
                     "report_steps_after_s"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name}: must not be negative, got {getattr(self, name)!r}")
        if not 0.0 <= self.probation_max_error_rate <= 1.0:
            raise ConfigError(f"probation_max_error_rate: must be within 0..1, got {self.probation_max_error_rate}")
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ConfigError("reconnect_min_s: must not exceed reconnect_max_s")
        if self.desired_signatures not in get_args(SignaturePolicy):
            raise ConfigError(f"desired_signatures: must be required or optional, got {self.desired_signatures!r}")
        if self.password is not None and self.username is None:
            raise ConfigError("password: given without a username")

    @property
    def broker(self) -> BrokerAddress:
        try:
            return BrokerAddress.parse(self.broker_url)
        except ProtocolError as exc:
            raise ConfigError(str(exc)) from exc

    @property
    def http_bind(self) -> tuple[str, int] | None:
        return None if self.http is None else parse_http_bind(self.http)

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)


# What each key accepts: the Python types of a TOML value (bool is not an int here) and how to convert it.
_PATH, _PATHS, _STR, _OPT_STR, _BOOL, _INT, _FLOAT, _LABELS = range(8)
_KINDS: dict[str, int] = {
    "device_id": _STR, "data_dir": _PATH, "broker_url": _STR, "public_keys": _PATHS, "labels": _LABELS,
    "http": _OPT_STR, "http_request_timeout_s": _FLOAT, "http_idle_timeout_s": _FLOAT, "http_backlog": _INT,
    "topic_prefix": _STR, "username": _OPT_STR, "password": _OPT_STR, "ca_file": _PATH,
    "tls_insecure": _BOOL, "keepalive_s": _INT, "max_artifact_bytes": _INT, "fetch_timeout_s": _FLOAT,
    "telemetry_interval_s": _FLOAT, "telemetry_max_predictions": _INT, "outbox_max_windows": _INT,
    "feedback_max_predictions": _INT,
    "probation_s": _FLOAT, "probation_min_predictions": _INT, "probation_max_error_rate": _FLOAT,
    "probation_max_latency_factor": _FLOAT, "probation_latency_floor_ms": _FLOAT, "reconnect_min_s": _FLOAT,
    "reconnect_max_s": _FLOAT, "report_steps_after_s": _FLOAT, "desired_signatures": _STR,
}
assert set(_KINDS) == {f.name for f in fields(AgentConfig)}, "every AgentConfig field needs a kind"


def _convert(key: str, value: Any, base: Path) -> Any:
    """Check one value's type and convert it; ``base`` anchors relative paths."""
    kind = _KINDS[key]

    def wrong(expected: str) -> ConfigError:
        return ConfigError(f"{key}: expected {expected}, got {type(value).__name__} {value!r}")

    if kind in (_STR, _OPT_STR, _PATH):
        if not isinstance(value, str | Path) or (kind != _PATH and isinstance(value, Path)):
            raise wrong("a string")
        return base / Path(value).expanduser() if kind == _PATH else value
    if kind == _PATHS:
        if isinstance(value, str | Path):
            value = [value]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str | Path) for v in value):
            raise wrong("a list of paths")
        return tuple(base / Path(v).expanduser() for v in value)
    if kind == _LABELS:
        if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
            raise wrong("a table of string labels")
        return dict(value)
    if kind == _BOOL:
        if not isinstance(value, bool):
            raise wrong("true or false")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise wrong("an integer" if kind == _INT else "a number")
    if kind == _INT and not (isinstance(value, int) or float(value).is_integer()):
        raise wrong("an integer")
    return int(value) if kind == _INT else float(value)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from exc


def load_agent_config(toml_path: Path | None = None, overrides: Mapping[str, Any] | None = None) -> AgentConfig:
    """Read ``toml_path`` (optional), apply ``overrides`` (``None`` values are ignored), check everything.

    >>> load_agent_config(None, {"device_id": "press-17", "data_dir": "/var/lib/edgeops-agent"}).device_id
    'press-17'
    """
    values: dict[str, Any] = {}
    sources: list[tuple[Mapping[str, Any], Path, str]] = []
    if toml_path is not None:
        toml_path = Path(toml_path)
        sources.append((_read_toml(toml_path), toml_path.resolve().parent, f"in {toml_path}"))
    sources.append((overrides or {}, Path.cwd(), "override"))
    for mapping, base, where in sources:
        for key, value in mapping.items():
            if key not in _KINDS:
                known = ", ".join(sorted(_KINDS))
                raise ConfigError(f"{key}: unknown config key ({where}); known keys: {known}")
            if value is None:
                continue
            values[key] = _convert(key, value, base)
    for required in ("device_id", "data_dir"):
        if required not in values:
            raise ConfigError(f"{required}: is required (set it in the config file or on the command line)")
    return AgentConfig(**values)

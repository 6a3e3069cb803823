"""Sections of edgeops.yaml about the shared control plane: where each model's training data is, where the
signing key comes from, and how often a model may retrain. load.py builds and checks them with the rest.

Secrets are never values here, only *names*: a Prefect Secret block (``*_secret``) that a worker reads when it
needs it. A value in a flow parameter would be stored by Prefect and shown in its UI; a name is harmless.
"""

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.protocol import ProtocolError, check_name
from edgeops.errors import ConfigError

DATA_SUFFIXES: tuple[str, ...] = (".csv", ".parquet")


@dataclass(frozen=True)
class ModelSource:
    """Where a model's training data comes from (``models.<name>`` in edgeops.yaml, or a champion's recipe).

    ``data`` is a file, a folder (its newest .csv/.parquet), or a glob (its newest match: ``data/churn-*.csv``);
    a relative one is resolved against edgeops.yaml's folder. ``sql`` is a query whose result is the training
    table, run with SQLAlchemy on ``database_url`` (without a password: libpq's PGPASSWORD, ~/.pgpass) or on the
    URL held by the Prefect Secret block ``database_url_secret``."""

    data: str | None = None
    sql: str | None = None
    database_url: str | None = None
    database_url_secret: str | None = None
    target: str | None = None
    """The target column when the model has no champion that recorded one (its first retrain)."""

    @property
    def is_set(self) -> bool:
        return self.data is not None or self.sql is not None

    def describe(self) -> str:
        """One line for logs and artifacts; never a database URL (it may hold a password)."""
        if self.sql is not None:
            where = f"secret {self.database_url_secret}" if self.database_url_secret else "database_url"
            return f"SQL ({where}): {' '.join(self.sql.split())[:200]}"
        return str(self.data)

    def to_json(self) -> dict[str, Any]:
        """What a release records of its data source: enough to read the data again, no secret value."""
        out: dict[str, Any] = {"data": self.data} if self.sql is None else {"sql": self.sql}
        if self.sql is not None:
            if self.database_url_secret:
                out["database_url_secret"] = self.database_url_secret
            elif self.database_url and not _has_password(self.database_url):
                out["database_url"] = self.database_url
        return out

    def under(self, base: Path) -> "ModelSource":
        """A relative file, folder or glob taken relative to ``base`` (the config file's folder), like every
        other path in edgeops.yaml; a URL (``s3://``) is left alone."""
        if self.data is None or "://" in self.data or Path(self.data).is_absolute():
            return self
        return dataclasses.replace(self, data=str(base / self.data))

    @classmethod
    def from_json(cls, obj: Any) -> "ModelSource | None":
        if not isinstance(obj, dict):
            return None
        keys = ("data", "sql", "database_url", "database_url_secret")
        source = cls(**{k: str(obj[k]) for k in keys if isinstance(obj.get(k), str)})
        return source if source.is_set else None


@dataclass(frozen=True)
class SigningConfig:
    key_secret: str | None = None
    """A Prefect Secret block holding the release key (PEM). Unset: $EDGEOPS_SIGNING_KEY, else the key file in
    ``registry.keys_dir``. Workers that share no disk read it from the block (docs/deployments.md)."""


@dataclass(frozen=True)
class TelemetryConfig:
    url: str = "sqlite:///.edgeops/telemetry.db"
    """The telemetry store the monitor reads (a SQLAlchemy URL; a relative SQLite path is relative to
    edgeops.yaml). Workers on several machines share a PostgreSQL one: ``postgresql+psycopg://edgeops@db/edgeops``
    with the password in PGPASSWORD on the worker, never in this file."""


@dataclass(frozen=True)
class RetrainConfig:
    cooldown_s: float = 3600.0
    """At most one retrain of a model per this many seconds, counted from the end of the last one that ran; a
    retrain asked for sooner is deferred to the end of the cooldown (a scheduled flow run), never dropped."""


def check_control(models: dict[str, ModelSource], retrain: RetrainConfig, telemetry: TelemetryConfig) -> None:
    for name, source in models.items():
        key = f"models.{name}"
        try:
            check_name(name, "model")
        except ProtocolError as exc:
            raise ConfigError(key, exc.reason) from exc
        if source.data is not None and source.sql is not None:
            raise ConfigError(key, "set data (a file, folder or glob) or sql, not both")
        if source.sql is not None and not (source.database_url or source.database_url_secret):
            raise ConfigError(f"{key}.sql", "needs database_url or database_url_secret")
        if source.database_url and _has_password(source.database_url):
            raise ConfigError(f"{key}.database_url", "holds a password: put the URL in a Prefect Secret block "
                              "(database_url_secret) or the password in PGPASSWORD on the worker")
    if "://" not in telemetry.url:
        raise ConfigError("telemetry.url", f"{telemetry.url!r} is not a database URL (sqlite:///..., "
                          "postgresql+psycopg://...)")
    if _has_password(telemetry.url):
        raise ConfigError("telemetry.url", "holds a password: set PGPASSWORD on the worker instead")
    if retrain.cooldown_s < 0:
        raise ConfigError("retrain.cooldown_s", "must be zero or positive")


def _has_password(url: str) -> bool:
    """``scheme://user:password@host`` (a password in the URL's user part)."""
    _, sep, rest = url.partition("://")
    userinfo = rest.split("@", 1)[0] if sep and "@" in rest.split("/", 1)[0] else ""
    return ":" in userinfo


__all__ = ["DATA_SUFFIXES", "ModelSource", "RetrainConfig", "SigningConfig", "TelemetryConfig", "check_control"]

"""The fleet side of edgeops.yaml: the broker (``mqtt``) and the rollout settings that are not per rollout."""

from dataclasses import dataclass
from pathlib import Path


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


__all__ = ["MqttConfig", "RolloutConfig"]

"""Where the control plane's secrets come from: the worker's environment, else a Prefect Secret block named in
edgeops.yaml, else (for projects that keep them there) the file. Never a flow parameter: Prefect stores every
parameter with its flow run and shows it in the UI, so flows take none of these and look them up here, on the
worker, when they connect or sign.

=====================  =======================  ========================  ==================================
what                   environment (wins)       Prefect Secret block      file
=====================  =======================  ========================  ==================================
broker URL             EDGEOPS_MQTT_URL         —                         ``mqtt.url``
broker username        EDGEOPS_MQTT_USERNAME    ``mqtt.username_secret``  ``mqtt.username``
broker password        EDGEOPS_MQTT_PASSWORD    ``mqtt.password_secret``  ``mqtt.password``
release signing key    EDGEOPS_SIGNING_KEY      ``signing.key_secret``    ``registry.keys_dir``/release.key
=====================  =======================  ========================  ==================================

Prefect is imported only when a block is named, so a project without blocks needs no Prefect API here.
"""

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING

from edgeops.config.rollout import MqttConfig  # the broker section alone: `fleet ls` builds no other
from edgeops.errors import ConfigError

if TYPE_CHECKING:  # cryptography only where a key is used: `fleet ls` and the other broker commands need none
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    from edgeops.config import ProjectConfig

MQTT_URL_ENV = "EDGEOPS_MQTT_URL"
MQTT_USERNAME_ENV = "EDGEOPS_MQTT_USERNAME"
MQTT_PASSWORD_ENV = "EDGEOPS_MQTT_PASSWORD"
SIGNING_KEY_ENV = "EDGEOPS_SIGNING_KEY"


def read_secret(block: str | None, env: str | None, key: str) -> str | None:
    """``$env`` when set, else the value of the Prefect Secret block ``block`` (None when neither is named).
    ``key`` is the config key that named the block, for the error when it does not exist."""
    value = os.environ.get(env) if env else None
    if value:
        return value
    if block is None:
        return None
    from prefect.blocks.system import Secret

    try:
        secret = Secret.load(block)
    except ValueError as exc:  # Prefect: "Unable to find block document named ..."
        raise ConfigError(key, f"no Prefect Secret block named {block!r} on this Prefect server ({exc}); create "
                          "it in the UI (Blocks → Secret) or with Secret(value=...).save(name)") from None
    assert isinstance(secret, Secret)   # called from sync code: load() returned the block, not a coroutine
    text = secret.get()
    if not isinstance(text, str) or not text:
        raise ConfigError(key, f"the Prefect Secret block {block!r} must hold non-empty text")
    return text


def mqtt_settings(mqtt: MqttConfig, url: str | None = None, prefix: str | None = None) -> MqttConfig:
    """The broker section ``mqtt`` as a client connects with it: ``url`` (a flag) → $EDGEOPS_MQTT_URL →
    ``mqtt.url``, and the username and password from the table in the module doc."""
    username = read_secret(mqtt.username_secret, MQTT_USERNAME_ENV, "mqtt.username_secret") or mqtt.username
    password = read_secret(mqtt.password_secret, MQTT_PASSWORD_ENV, "mqtt.password_secret") or mqtt.password
    return dataclasses.replace(mqtt, url=url or os.environ.get(MQTT_URL_ENV) or mqtt.url,
                               prefix=prefix or mqtt.prefix, username=username, password=password)


def signing_key(cfg: "ProjectConfig") -> "Ed25519PrivateKey":
    """The release key: $EDGEOPS_SIGNING_KEY (PEM) → the Secret block ``signing.key_secret`` → the key file.
    SigningError with a hint when it is missing or not an Ed25519 key."""
    from edgeops.release.signing import key_paths, load_private_key, parse_private_key

    pem = read_secret(cfg.signing.key_secret, SIGNING_KEY_ENV, "signing.key_secret")
    if pem is None:
        return load_private_key(key_paths(cfg.registry.keys_dir)[0])
    where = f"${SIGNING_KEY_ENV}" if os.environ.get(SIGNING_KEY_ENV) else f"Secret block {cfg.signing.key_secret}"
    return parse_private_key(pem.encode(), where)


def public_key(cfg: "ProjectConfig") -> "Ed25519PublicKey":
    """The public half devices trust: ``release.pub`` when the project has it, else derived from the release key
    (a worker that reads the key from a Secret block has no key folder)."""
    from edgeops.release.signing import key_paths, load_public_key

    path: Path = key_paths(cfg.registry.keys_dir)[1]
    return load_public_key(path) if path.exists() else signing_key(cfg).public_key()


__all__ = ["MQTT_PASSWORD_ENV", "MQTT_URL_ENV", "MQTT_USERNAME_ENV", "SIGNING_KEY_ENV", "mqtt_settings",
           "public_key", "read_secret", "signing_key"]

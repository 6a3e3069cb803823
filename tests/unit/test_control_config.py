"""The control plane's own config: per-model data sources, the signing key and broker credentials from the
environment (Secret blocks: tests/integration/test_retrain_secrets.py), the telemetry store, $EDGEOPS_CONFIG."""

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgeops.config import ModelSource, load_config
from edgeops.credentials import mqtt_settings, public_key, signing_key
from edgeops.errors import ConfigError, SigningError
from edgeops.release.signing import generate_keys, public_key_id

pytestmark = pytest.mark.unit


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edgeops.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_model_sources_resolve_against_the_config_file(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, """
models:
  churn: {data: "data/churn-*.csv"}
  wine: {sql: "SELECT * FROM wine", database_url_secret: warehouse, target: quality}
  fraud: {data: "s3://bucket/fraud/"}
telemetry: {url: "sqlite:///state/telemetry.db"}
"""))
    assert cfg.models["churn"].data == str(tmp_path / "data/churn-*.csv")
    assert cfg.models["wine"] == ModelSource(sql="SELECT * FROM wine", database_url_secret="warehouse",
                                             target="quality")
    assert cfg.models["fraud"].data == "s3://bucket/fraud/"
    assert cfg.telemetry.url == f"sqlite:///{tmp_path}/state/telemetry.db"


@pytest.mark.parametrize(("text", "key"), [
    ("models: {churn: {data: a.csv, sql: SELECT 1, database_url: 'sqlite://'}}", "models.churn"),
    ("models: {churn: {sql: SELECT 1}}", "models.churn.sql"),
    ("models: {churn: {sql: SELECT 1, database_url: 'postgresql://u:pw@db/x'}}", "models.churn.database_url"),
    ("models: {'bad name': {data: a.csv}}", "models.bad name"),
    ("models: {churn: {path: a.csv}}", "models.churn.path"),
    ("telemetry: {url: 'postgresql+psycopg://edgeops:pw@db/x'}", "telemetry.url"),
    ("telemetry: {url: telemetry.db}", "telemetry.url"),
    ("retrain: {cooldown_s: -1}", "retrain.cooldown_s"),
    ("mqtt: {password_secret: 3}", "mqtt.password_secret"),
])
def test_mistakes_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert info.value.key == key, str(info.value)


def test_edgeops_config_names_the_file_of_a_worker_outside_the_project(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    project.mkdir()
    write(project, "name: churn\nretrain: {cooldown_s: 60}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EDGEOPS_CONFIG", str(project / "edgeops.yaml"))
    cfg = load_config()
    assert cfg.name == "churn" and cfg.retrain.cooldown_s == 60.0
    assert cfg.registry.root == project / ".edgeops/registry"  # the project's state, not the working directory's


def test_broker_settings_take_the_environment_over_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(write(tmp_path, "mqtt: {url: 'mqtt://file:1883', username: file-user, password: file-pw}\n"))
    assert (mqtt_settings(cfg.mqtt).username, mqtt_settings(cfg.mqtt).password) == ("file-user", "file-pw")
    monkeypatch.setenv("EDGEOPS_MQTT_URL", "mqtt://env:1883")
    monkeypatch.setenv("EDGEOPS_MQTT_USERNAME", "env-user")
    monkeypatch.setenv("EDGEOPS_MQTT_PASSWORD", "env-pw")
    settings = mqtt_settings(cfg.mqtt, prefix="p")
    assert (settings.url, settings.username, settings.password, settings.prefix) == \
        ("mqtt://env:1883", "env-user", "env-pw", "p")
    assert mqtt_settings(cfg.mqtt, "mqtt://flag:1883").url == "mqtt://flag:1883"  # a flag wins over the environment


def test_the_signing_key_comes_from_the_environment_before_the_key_folder(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(write(tmp_path, "registry: {keys_dir: keys}\n"))
    with pytest.raises(SigningError, match="edgeops keys init"):
        signing_key(cfg)
    generate_keys(tmp_path / "keys")
    from_file = public_key_id(signing_key(cfg).public_key())
    other = Ed25519PrivateKey.generate()
    pem = other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode()
    monkeypatch.setenv("EDGEOPS_SIGNING_KEY", pem)
    assert public_key_id(signing_key(cfg).public_key()) == public_key_id(other.public_key()) != from_file
    (tmp_path / "keys" / "release.pub").unlink()
    assert public_key_id(public_key(cfg)) == public_key_id(other.public_key())  # no .pub: the key's own half
    monkeypatch.setenv("EDGEOPS_SIGNING_KEY", "not a key")
    with pytest.raises(SigningError, match=r"\$EDGEOPS_SIGNING_KEY is not an unencrypted PEM") as info:
        signing_key(cfg)
    assert "not a key" not in str(info.value)


def test_a_source_records_no_secret(tmp_path: Path) -> None:
    sql = ModelSource(sql="SELECT *\n  FROM t", database_url="sqlite:///x.db")
    assert sql.to_json() == {"sql": "SELECT *\n  FROM t", "database_url": "sqlite:///x.db"}
    assert ModelSource.from_json(sql.to_json()) == sql
    assert ModelSource(sql="q", database_url_secret="wh").to_json() == {"sql": "q", "database_url_secret": "wh"}
    assert "SELECT * FROM t" in sql.describe() and "sqlite" not in sql.describe()
    assert ModelSource.from_json({"data": 3}) is None and ModelSource.from_json(None) is None

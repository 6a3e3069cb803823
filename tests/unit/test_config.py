"""Project config: defaults, the YAML file, dotted overrides, and a ConfigError naming the key for every mistake."""

from pathlib import Path

import pytest
import yaml

from edgeops.config import (
    ProjectConfig,
    config_sha256,
    config_to_dict,
    import_estimator,
    load_config,
)
from edgeops.errors import ConfigError, EdgeopsError

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "edgeops.example.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edgeops.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config()
    assert cfg == ProjectConfig()
    assert cfg.seed == 42 and cfg.model.estimator is None and cfg.split.test_size == 0.25
    assert cfg.registry.root == Path(".edgeops/registry")


def test_reads_edgeops_yaml_in_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "seed: 7\ndata:\n  target: churn\n")
    monkeypatch.chdir(tmp_path)
    cfg = load_config()
    assert cfg.seed == 7 and cfg.data.target == "churn"


def test_full_file_and_relative_paths_resolve_against_its_folder(tmp_path: Path) -> None:
    path = write(tmp_path, """
name: churn
seed: 3
model:
  estimator: sklearn.ensemble.RandomForestClassifier
  params: {n_estimators: 20, max_depth: 4}
  task: binary
data: {target: label, min_rows: 10}
split: {test_size: 0.3, stratify: false}
gates:
  absolute: {accuracy: 0.8, log_loss: 0.5}
  max_regression: {f1: 0.01}
export: {parity_tolerance: 0.001, golden_rows: 5, numeric_bins: 8, chunk_size: 4096, target_opset: 17}
registry: {root: reg, keys_dir: /abs/keys}
mqtt: {url: "mqtts://broker:8883", prefix: plant1, username: u, password: p, ca_file: ca.pem}
""")
    cfg = load_config(path)
    assert cfg.name == "churn" and cfg.seed == 3
    assert cfg.model.params == {"n_estimators": 20, "max_depth": 4}
    assert cfg.gates.absolute == {"accuracy": 0.8, "log_loss": 0.5}
    assert cfg.gates.max_regression == {"f1": 0.01}
    assert cfg.export.target_opset == 17 and cfg.export.parity_tolerance == 0.001
    assert cfg.registry.root == tmp_path / "reg" and cfg.registry.keys_dir == Path("/abs/keys")
    assert cfg.mqtt.ca_file == Path("ca.pem") and cfg.split.stratify is False


def test_dotted_overrides_parse_command_line_strings(tmp_path: Path) -> None:
    path = write(tmp_path, "model:\n  params: {C: 2.0}\n")
    cfg = load_config(path, {"seed": "5", "model.params.max_iter": "300", "gates.absolute.accuracy": "0.9",
                             "name": "123", "split.stratify": "false", "export.target_opset": "null"})
    assert cfg.seed == 5
    assert cfg.model.params == {"C": 2.0, "max_iter": 300}
    assert cfg.gates.absolute == {"accuracy": 0.9}
    assert cfg.name == "123"  # a text field keeps the text as typed
    assert cfg.split.stratify is False and cfg.export.target_opset is None


def test_overrides_win_over_the_file(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "seed: 1\n"), {"seed": 2})
    assert cfg.seed == 2


@pytest.mark.parametrize(("text", "overrides", "key"), [
    ("model:\n  params: [1, 2]\n", {}, "model.params: must be a mapping"),
    ("model:\n  estimatr: x\n", {}, "model.estimatr: unknown key"),
    ("colour: red\n", {}, "colour: unknown key"),
    ("seed: true\n", {}, "seed: must be an integer"),
    ("seed: abc\n", {}, "seed: must be an integer"),
    ("split:\n  test_size: lots\n", {}, "split.test_size: must be a number"),
    ("split: 3\n", {}, "split: must be a mapping"),
    ("", {"export.golden_rows": "x"}, "export.golden_rows: must be an integer"),
    ("", {"mqtt.nope": 1}, "mqtt.nope: unknown key"),
    ("", {"gates.absolute.acc": 0.9}, "gates.absolute.acc: unknown metric"),
    ("", {"gates.absolute.accuracy": "high"}, "gates.absolute.accuracy: must be a number"),
    ("", {"model.task": "ranking"}, "model.task: must be one of"),
    ("", {"split.test_size": 1.5}, "split.test_size: must be between 0 and 1"),
    ("", {"export.numeric_bins": 0}, "export.numeric_bins"),
    ("", {"export.chunk_size": (1 << 20) + 1}, "export.chunk_size: must be at most 1048576"),
    ("", {"data.max_missing_ratio": 2}, "data.max_missing_ratio"),
    ("", {"name": "bad/name"}, "name:"),
    ("", {"model..x": 1}, "is not a dotted config key"),
    ("", {"monitor.drift.false_alarms": 0}, "monitor.drift.false_alarms: must be positive"),
    ("", {"monitor.drift.recent_windows": 0}, "monitor.drift.recent_windows: must be at least 1"),
    ("monitor:\n  drift:\n    alpha: 0.01\n", {}, "monitor.drift.alpha: unknown key"),
    ("", {"monitor.hours": -1}, "monitor.hours: must be positive"),
])
def test_mistakes_name_the_key(tmp_path: Path, text: str, overrides: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), overrides)
    assert key in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("path", "words"), [
    ("os.system", "only scikit-learn classes"),
    ("subprocess.Popen", "only scikit-learn classes"),
    ("sklearn_evil.Model", "only scikit-learn classes"),
    ("sklearn.ensemble.NoSuchForest", "unknown estimator 'sklearn.ensemble.NoSuchForest'"),
    ("sklearn.nosuchmodule.Model", "unknown estimator 'sklearn.nosuchmodule.Model'"),
    ("sklearn.model_selection.train_test_split", "not a scikit-learn estimator class"),
])
def test_estimator_paths_are_restricted_to_sklearn(tmp_path: Path, path: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, ""), {"model.estimator": path})
    assert info.value.key == "model.estimator"
    assert words in str(info.value)


def test_estimator_params_are_checked_against_the_class(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model\.params: not accepted by sklearn\.linear_model\.Ridge"):
        load_config(write(tmp_path, ""), {"model.estimator": "sklearn.linear_model.Ridge", "model.params.bogus": 1})


def test_import_estimator_returns_the_class() -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    assert import_estimator("sklearn.ensemble.HistGradientBoostingClassifier") is HistGradientBoostingClassifier


@pytest.mark.parametrize("text", ["a: [unclosed\n", "- just\n- a list\n"])
def test_bad_files_are_config_errors(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match=r"edgeops\.yaml"):
        load_config(write(tmp_path, text))


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(EdgeopsError, match="cannot read config file"):
        load_config(tmp_path / "nope.yaml")


def test_to_dict_round_trips_through_yaml(tmp_path: Path) -> None:
    cfg = load_config(None, {"model.estimator": "sklearn.ensemble.RandomForestRegressor", "seed": 9,
                             "model.params.n_estimators": 5, "mqtt.ca_file": "/etc/ca.pem"})
    path = write(tmp_path, yaml.safe_dump(config_to_dict(cfg)))
    again = load_config(path)
    resolved = {k: config_to_dict(again)[k] for k in ("registry", "telemetry")}  # relative to the file's folder
    assert config_to_dict(again) == {**config_to_dict(cfg), **resolved}


def test_config_hash_tracks_what_decides_the_model() -> None:
    base = load_config(None, {})
    assert config_sha256(base) == config_sha256(load_config(None, {}))
    assert config_sha256(base) != config_sha256(load_config(None, {"seed": 1}))
    assert config_sha256(base) != config_sha256(load_config(None, {"model.params.C": 0.5}))
    assert config_sha256(base) == config_sha256(load_config(None, {"registry.root": "/elsewhere",
                                                                    "mqtt.url": "mqtt://other:1883"}))


def test_the_documented_example_is_the_defaults() -> None:
    """docs/edgeops.example.yaml lists every key with its default; keep it in sync with the dataclasses."""
    cfg = load_config(EXAMPLE)
    defaults = config_to_dict(ProjectConfig())
    loaded = config_to_dict(cfg)
    loaded["registry"], loaded["telemetry"] = defaults["registry"], defaults["telemetry"]  # resolved against docs/
    assert loaded == defaults
    assert set(yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))) == set(defaults)


def test_monitor_settings_come_from_the_file_and_overrides(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "monitor:\n  hours: 2\n  drift:\n    false_alarms: 0.1\n"),
                      {"monitor.drift.recent_windows": "5"})
    assert cfg.monitor.hours == 2.0 and cfg.monitor.drift.false_alarms == 0.1
    assert cfg.monitor.drift.recent_windows == 5 and cfg.monitor.drift.window_s == 60.0


def test_an_s3_registry_root_stays_a_url_and_state_urls_resolve_like_paths(tmp_path: Path) -> None:
    """``Path("s3://bucket/x")`` is ``s3:/bucket/x``: a URL must never become a path (nor be joined to the file's
    folder), while a relative SQLite file in ``rollout.state_url`` is resolved like every other path."""
    from edgeops.config import local_state_dir

    path = write(tmp_path, "registry:\n  root: s3://models/team-a/\n  s3: {endpoint_url: 'http://seaweed:8333', "
                           "addressing_style: path}\nrollout:\n  state_url: sqlite:///state/rollouts.db\n")
    cfg = load_config(path)
    assert cfg.registry.root == "s3://models/team-a/" and cfg.registry.s3.endpoint_url == "http://seaweed:8333"
    assert cfg.rollout.state_url == f"sqlite:///{tmp_path}/state/rollouts.db"
    assert local_state_dir(cfg) == tmp_path / ".edgeops"   # beside the keys, as the registry is remote
    assert local_state_dir(load_config(write(tmp_path, "registry: {root: reg}\n"))) == tmp_path
    overridden = load_config(None, {"registry.root": "s3://b/p", "rollout.state_url": "postgresql+psycopg://db/x"})
    assert overridden.registry.root == "s3://b/p" and overridden.rollout.state_url == "postgresql+psycopg://db/x"
    assert config_sha256(overridden) == config_sha256(ProjectConfig())   # where things are stored is no model input


@pytest.mark.parametrize(("overrides", "key"), [
    ({"registry.root": "gs://bucket/x"}, "registry.root"),
    ({"registry.s3.addressing_style": "sideways"}, "registry.s3.addressing_style"),
    ({"registry.s3.secret_access_key": "x"}, "registry.s3.secret_access_key"),   # secrets stay with boto3
    ({"rollout.state_url": "rollouts.db"}, "rollout.state_url"),
    ({"rollout.state_url": "postgresql+psycopg://edgeops:secret@db/edgeops"}, "rollout.state_url"),
])
def test_storage_settings_are_checked(overrides: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, overrides)
    assert caught.value.key == key

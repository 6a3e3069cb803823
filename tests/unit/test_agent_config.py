"""AgentConfig: TOML + overrides, every wrong key or value is a ConfigError naming the key."""

from pathlib import Path

import pytest

from edge_agent.config import AgentConfig, BrokerAddress, load_agent_config
from edge_agent.errors import AgentError, ConfigError

pytestmark = pytest.mark.unit


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_toml_is_read_and_flags_override_it(tmp_path: Path) -> None:
    path = write(tmp_path, 'device_id = "press-17"\ndata_dir = "data"\npublic_keys = ["keys/a.pub"]\n'
                           'telemetry_interval_s = 30\n[labels]\nsite = "berlin"\n')
    cfg = load_agent_config(path, {"broker_url": "mqtts://broker.example:8884", "telemetry_interval_s": None,
                                   "labels": {"site": "hamburg", "line": "2"}})
    assert cfg.device_id == "press-17"
    assert cfg.data_dir == tmp_path / "data"  # relative to the file, not the working directory
    assert cfg.public_keys == (tmp_path / "keys/a.pub",)
    assert cfg.telemetry_interval_s == 30.0 and isinstance(cfg.telemetry_interval_s, float)
    assert cfg.labels == {"site": "hamburg", "line": "2"}
    assert cfg.broker == BrokerAddress("broker.example", 8884, tls=True)


def test_overrides_alone_are_enough(tmp_path: Path) -> None:
    cfg = load_agent_config(None, {"device_id": "d1", "data_dir": str(tmp_path), "http": "127.0.0.1:0"})
    assert cfg.http_bind == ("127.0.0.1", 0)
    assert cfg.broker == BrokerAddress("127.0.0.1", 1883, tls=False)
    assert cfg.topics.device("d1", "status") == "edgeops/devices/d1/status"


@pytest.mark.parametrize(("text", "key"), [
    ('device_id = "d"\ndata_dir = "x"\ntelemetry_intervl_s = 3\n', "telemetry_intervl_s"),
    ('device_id = "d"\ndata_dir = "x"\nkeepalive_s = "30"\n', "keepalive_s"),
    ('device_id = "d"\ndata_dir = "x"\nkeepalive_s = true\n', "keepalive_s"),
    ('device_id = "d"\ndata_dir = "x"\nkeepalive_s = 2.5\n', "keepalive_s"),
    ('device_id = "d"\ndata_dir = "x"\ntls_insecure = 1\n', "tls_insecure"),
    ('device_id = "d"\ndata_dir = "x"\npublic_keys = [1]\n', "public_keys"),
    ('device_id = "a/b"\ndata_dir = "x"\n', "device_id"),
    ('device_id = "d"\ndata_dir = "x"\n[labels]\n"bad key" = "v"\n', "labels"),
    ('device_id = "d"\ndata_dir = "x"\nbroker_url = "http://h:1"\n', "broker_url"),
    ('device_id = "d"\ndata_dir = "x"\nbroker_url = "mqtt://h:99999"\n', "broker_url"),
    ('device_id = "d"\ndata_dir = "x"\nhttp = "8765"\n', "http"),
    ('device_id = "d"\ndata_dir = "x"\nhttp = "127.0.0.1:\u00b2"\n', "http"),  # isdigit('²'), int('²') fails
    ('device_id = "d"\ndata_dir = "x"\nhttp = "127.0.0.1:8765\\n"\n', "http"),
    ('device_id = "d\\n"\ndata_dir = "x"\n', "device_id"),
    ('device_id = "d"\ndata_dir = "x"\ntopic_prefix = "edgeops\\n"\n', "prefix"),
    ('device_id = "d"\ndata_dir = "x"\n[labels]\nsite = "berlin\\n"\n', "labels"),
    ('device_id = "d"\ndata_dir = "x"\ntopic_prefix = "a/#"\n', "prefix"),
    ('device_id = "d"\ndata_dir = "x"\noutbox_max_windows = 0\n', "outbox_max_windows"),
    ('device_id = "d"\ndata_dir = "x"\nprobation_max_error_rate = 2.0\n', "probation_max_error_rate"),
    ('device_id = "d"\ndata_dir = "x"\nreconnect_min_s = 5\nreconnect_max_s = 1\n', "reconnect_min_s"),
    ('device_id = "d"\ndata_dir = "x"\npassword = "p"\n', "password"),
    ('device_id = "d"\ndata_dir = "x"\nreport_steps_after_s = -1.0\n', "report_steps_after_s"),
    ('data_dir = "x"\n', "device_id"),
])
def test_bad_config_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key) as info:
        load_agent_config(write(tmp_path, text), {})
    assert isinstance(info.value, AgentError)
    assert "\n" not in str(info.value)


def test_unknown_override_and_broken_file_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="colour"):
        load_agent_config(None, {"device_id": "d", "data_dir": "x", "colour": "red"})
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_agent_config(write(tmp_path, "device_id = \n"), {})
    with pytest.raises(ConfigError, match="does not exist"):
        load_agent_config(tmp_path / "missing.toml", {})


def test_direct_construction_checks_and_converts(tmp_path: Path) -> None:
    cfg = AgentConfig(device_id="d", data_dir=str(tmp_path), public_keys=[str(tmp_path / "k.pub")])  # type: ignore[arg-type]
    assert cfg.data_dir == tmp_path and cfg.public_keys == (tmp_path / "k.pub",)
    assert "secret" not in repr(AgentConfig(device_id="d", data_dir=tmp_path, username="u", password="secret"))
    with pytest.raises(ConfigError, match="device_id"):
        AgentConfig(device_id="../etc", data_dir=tmp_path)


def test_the_shipped_example_config_loads() -> None:
    example = Path(__file__).parents[2] / "deployments" / "agent.example.toml"
    cfg = load_agent_config(example, {})
    assert cfg.device_id and cfg.telemetry_interval_s > 0 and cfg.report_steps_after_s == 1.0


def test_cli_flags_override_the_file_and_labels_merge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_agent.cli import build_parser, config_from_args

    path = write(tmp_path, 'device_id = "press-17"\ndata_dir = "data"\nhttp = "127.0.0.1:8765"\n'
                           '[labels]\nsite = "berlin"\nline = "1"\n')
    monkeypatch.setenv("EDGEOPS_AGENT_PASSWORD", "s3cret")
    args = build_parser().parse_args(["run", "--config", str(path), "--device-id", "press-18", "--label",
                                      "line=2", "--username", "press-18", "--public-key", "a.pub"])
    cfg = config_from_args(args)
    assert (cfg.device_id, cfg.http, cfg.username, cfg.password) == ("press-18", "127.0.0.1:8765", "press-18", "s3cret")
    assert cfg.labels == {"site": "berlin", "line": "2"}
    assert cfg.public_keys == (Path.cwd() / "a.pub",)


@pytest.mark.parametrize("argv", [
    ["run", "--data-dir", "x"],  # no device id
    ["run", "--device-id", "d", "--data-dir", "x", "--label", "nolabel"],
    ["run", "--device-id", "d", "--data-dir", "x", "--broker", "tcp://h:1"],
    ["run", "--nonsense"],
    ["predict", "--data-dir", "does-not-exist", "--public-key", "k.pub", "--json", "{}"],
    ["predict", "--data-dir", ".", "--public-key", "k.pub", "--json", "[1, 2]"],
    ["predict", "--data-dir", ".", "--json", "{}"],
])
def test_cli_errors_are_one_line_and_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from edge_agent.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("edgeops-agent: ") and err.count("\n") == 1

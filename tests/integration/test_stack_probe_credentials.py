"""The stack's broker probe (`edgeops up`, `edgeops status`) connects with the credentials the stack's services
use: the environment's win over edgeops.yaml. It used to take edgeops.yaml's only, so a broker that wants a
password kept in $EDGEOPS_MQTT_PASSWORD (as docs/deployments.md recommends) showed as not answering."""

from pathlib import Path

import pytest
from services import running_mosquitto
from shipped_broker import make_users

from edgeops.config import MqttConfig
from edgeops.stack.probe import broker_problem

pytestmark = pytest.mark.integration


def test_the_probe_uses_the_password_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    passwd = tmp_path / "control.passwd"
    password = make_users(passwd, tmp_path / "creds", ["edgeops-control"])["edgeops-control"]
    monkeypatch.delenv("EDGEOPS_MQTT_USERNAME", raising=False)
    monkeypatch.delenv("EDGEOPS_MQTT_PASSWORD", raising=False)
    with running_mosquitto(tmp_path / "mosquitto", f"allow_anonymous false\npassword_file {passwd}\n") as broker:
        mqtt = MqttConfig(url=broker.url, username="edgeops-control")  # edgeops.yaml: a user, no password
        assert broker_problem(broker.url, mqtt) is not None  # refused: no password anywhere
        monkeypatch.setenv("EDGEOPS_MQTT_PASSWORD", password)
        assert broker_problem(broker.url, mqtt) is None
        monkeypatch.setenv("EDGEOPS_MQTT_USERNAME", "somebody-else")  # the environment wins over the file
        assert broker_problem(broker.url, mqtt) is not None

"""One MQTT client construction for the agent's link, the control client, the ingest and the simulator.

The options are values: a wrapper's whole client setup is asserted here without a broker (the integration
tests of each wrapper connect for real).
"""

import dataclasses
from pathlib import Path

import pytest
from paho.mqtt.enums import MQTTProtocolVersion

from edge_agent.config import AgentConfig
from edge_agent.link import LinkError, MqttLink, link_options
from edge_agent.mqtt_client import ClientOptions, ClientSetupError, Reconnect, Session, TLSParameters, Will, make_client
from edge_agent.protocol import BrokerAddress, Status
from edgeops.errors import BrokerError
from edgeops.mqtt import ControlClient
from edgeops.telemetry.ingest import IngestConfig, client_options

pytestmark = pytest.mark.unit

TLS_BROKER = BrokerAddress("broker.example", 8883, tls=True)


def test_options_are_frozen_values() -> None:
    options = ClientOptions(broker=TLS_BROKER, client_id="c", will=Will("p/devices/d/status", b"offline"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.client_id = "other"  # type: ignore[misc]
    assert options == ClientOptions(broker=TLS_BROKER, client_id="c", will=Will("p/devices/d/status", b"offline"))
    assert options.tls == TLSParameters() and options.protocol == MQTTProtocolVersion.MQTTv5


@pytest.mark.parametrize(("make", "field"), [
    (lambda: Will("p/+/status", b"x"), "will"),
    (lambda: Will("p/status", b"x", qos=3), "will"),
    (lambda: Reconnect(5.0, 1.0), "reconnect"),
    (lambda: ClientOptions(broker=TLS_BROKER, client_id="c", session=Session(60),
                           protocol=MQTTProtocolVersion.MQTTv311), "session"),
])
def test_options_refuse_what_cannot_work(make: object, field: str) -> None:
    with pytest.raises(ClientSetupError, match=f"^{field}:"):
        make()  # type: ignore[operator]


def test_a_ca_file_that_does_not_load_is_named(tmp_path: Path) -> None:
    options = ClientOptions(broker=TLS_BROKER, client_id="c", tls=TLSParameters(tmp_path / "missing.pem"))
    with pytest.raises(ClientSetupError, match=r"ca_file: cannot set up TLS with .*missing\.pem"):
        make_client(options)


def test_the_link_is_a_persistent_mqtt5_session_with_its_offline_status_as_will(tmp_path: Path) -> None:
    config = AgentConfig(device_id="press-17", data_dir=tmp_path, broker_url="mqtts://broker.example:8884",
                         topic_prefix="plant", username="press-17", password="pw", ca_file=tmp_path / "ca.pem",
                         tls_insecure=True, keepalive_s=20, reconnect_min_s=0.5, reconnect_max_s=8.0)
    options = link_options(config)
    assert options.broker == BrokerAddress("broker.example", 8884, tls=True)
    assert (options.username, options.password) == ("press-17", "pw")
    assert options.tls == TLSParameters(tmp_path / "ca.pem", insecure=True)
    will = options.will
    assert will is not None and (will.topic, will.qos, will.retain) == ("plant/devices/press-17/status", 1, True)
    status = Status.parse(will.payload)   # its ts is the construction's millisecond, so compare the rest
    assert (status.device, status.status) == ("press-17", "offline")
    assert options.protocol == MQTTProtocolVersion.MQTTv5 and options.session is not None
    assert options.reconnect == Reconnect(0.5, 8.0) and options.keepalive_s == 20
    with pytest.raises(LinkError, match="ca_file"):   # the link's error is the construction's
        MqttLink(config, None)  # type: ignore[arg-type]


def test_the_ingest_acknowledges_by_hand_and_an_empty_user_name_counts_as_none() -> None:
    options = client_options(IngestConfig(broker_url="mqtt://127.0.0.1:1883", username="", password="pw",
                                          batch_size=500, instance="7", group="g"))
    assert options.username is None and options.password is None
    assert options.manual_ack and options.session == Session(7 * 24 * 3600, receive_maximum=1000)
    assert options.client_id.startswith("g-") and options.client_id.endswith("-7")


def test_the_control_client_is_mqtt311_without_a_client_side_window(tmp_path: Path) -> None:
    client = ControlClient("mqtt://127.0.0.1:1883", username="ctl", password="pw")
    assert client.options.protocol == MQTTProtocolVersion.MQTTv311 and client.options.max_inflight == 0
    assert (client.options.username, client.options.password) == ("ctl", "pw")
    with pytest.raises(BrokerError, match="ca_file"):   # a user mistake: one line, not a traceback
        ControlClient("mqtts://127.0.0.1:8883", ca_file=tmp_path / "missing.pem")

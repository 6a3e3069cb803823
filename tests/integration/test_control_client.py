"""The control plane's MQTT client through a broker outage (its own Mosquitto, stopped and started)."""

import time

import pytest
from services import Mosquitto

from edgeops.mqtt import ControlClient

pytestmark = pytest.mark.integration


def test_a_publish_made_while_the_broker_is_away_is_acknowledged_after_it_returns(
    own_broker: Mosquitto, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}/state"
    with ControlClient(own_broker.url, timeout_s=30) as client:
        own_broker.stop()
        assert not client.wait_connected(time.monotonic() + 0.5)  # the client saw the broker go
        publication = client.publish_many([(topic, b"while-away", True)], wait=False)
        own_broker.start()
        publication.wait()  # raised "client is not currently connected" before the fix
    with ControlClient(own_broker.url) as reader:
        assert reader.collect_retained(topic) == {topic: b"while-away"}

"""benchmarks/agent_footprint.py counts wire bytes as whole MQTT 5 packets crossing the agent's socket.

Topic + payload (what the benchmark counted before) leaves out the fixed header, the topic's length prefix, the
packet id, the properties length and the PUBACK; the proxy must see exactly the packets' sizes."""

import sys
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from agent_footprint import CountingProxy, wait_quiet
from wire import PUBACK_BYTES, publish_bytes

pytestmark = pytest.mark.integration


def test_the_proxy_counts_whole_mqtt5_packets_both_ways(session_broker: str) -> None:
    host, port = session_broker.split("://", 1)[1].rsplit(":", 1)
    proxy = CountingProxy((host, int(port)))
    topic, payload = f"bench-test/{uuid.uuid4().hex[:8]}/release", b"x" * 3000
    received: list[bytes] = []
    device = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    device.on_message = lambda _c, _u, msg: received.append(msg.payload)
    device.connect("127.0.0.1", proxy.port)
    device.loop_start()
    control = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    control.connect(host, int(port))
    control.loop_start()
    try:
        device.subscribe(topic, qos=1)
        before = wait_quiet(proxy)
        control.publish(topic, payload, qos=1).wait_for_publish(10)
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:
            time.sleep(0.02)
        down, up = (a - b for a, b in zip(wait_quiet(proxy), before, strict=True))
    finally:
        for client in (device, control):
            client.disconnect()
            client.loop_stop()
        proxy.close()
    assert received == [payload]
    assert down == publish_bytes(topic, payload, 1, mqtt5=True) > len(topic) + len(payload)
    assert up == PUBACK_BYTES

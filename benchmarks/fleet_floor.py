"""The least a ``fleet ls --json`` can do in Python with Typer and paho-mqtt, for benchmarks/cli.py's floor row.

    python benchmarks/fleet_floor.py mqtt://127.0.0.1:1883 edgeops

Imports what any such command imports (Typer, paho as edgeops imports it), connects, subscribes to the devices'
retained ``reported`` and ``status`` topics and ends the wait the way the control client does (TCP_NODELAY; its
own marker topic subscribed first, then the devices'; after that SUBACK, TCP_QUICKACK and the marker published,
which arrives behind the retained messages), and prints the payloads as one JSON list. Subscribing to all three
at once cost 40 ms more here: the broker held the retained messages behind the first one for our delayed ACK.
No edgeops code, no checks of the messages, no config: what is left of ``edgeops fleet ls --json`` once
everything that is ours is taken away.
"""

import json
import socket
import sys
import threading
import uuid
from typing import Any
from urllib.parse import urlsplit

import typer  # noqa: F401  (imported for its cost: every edgeops command pays it)
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edge_agent.paho_import import mqtt


def main() -> None:
    url, prefix = urlsplit(sys.argv[1]), sys.argv[2]
    client_id = uuid.uuid4().hex
    marker, nonce = f"{prefix}/control/{client_id}/sync", uuid.uuid4().hex.encode()
    found: dict[str, Any] = {}
    connected, subscribed, done = threading.Event(), threading.Event(), threading.Event()

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == marker and msg.payload == nonce:
            done.set()
        elif msg.payload:
            found[msg.topic] = json.loads(msg.payload)

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
    client.on_connect = lambda *_: connected.set()
    client.on_subscribe = lambda *_: subscribed.set()
    client.on_message = on_message
    client.connect(url.hostname or "127.0.0.1", url.port or 1883)
    sock = client.socket()
    if isinstance(sock, socket.socket):  # as the control client does: small messages, no Nagle delay
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.loop_start()
    connected.wait(10)
    for filters in ([(marker, 0)], [(f"{prefix}/devices/+/reported", 0), (f"{prefix}/devices/+/status", 0)]):
        subscribed.clear()
        client.subscribe(filters)
        subscribed.wait(10)
    if isinstance(sock, socket.socket) and hasattr(socket, "TCP_QUICKACK"):  # ACK at once (docs/rollout.md)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
    client.publish(marker, nonce, qos=0)
    if not done.wait(10):
        raise SystemExit("no marker within 10 s")
    client.disconnect()
    client.loop_stop()
    print(json.dumps([found[topic] for topic in sorted(found)], indent=2))


if __name__ == "__main__":
    main()

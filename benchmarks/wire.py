"""Bytes of MQTT packets as they cross the socket (MQTT 3.1.1 and 5), for benchmarks that count wire bytes.

Topic + payload undercounts every message: a PUBLISH also carries a fixed header (1 byte + the remaining length,
1–4 bytes), the topic's 2-byte length prefix, a packet id at QoS > 0 and, in MQTT 5, a properties length (and the
properties); a QoS 1 PUBLISH is answered by a PUBACK. benchmarks/fleet.py checks these sums against the broker's
own ``$SYS/broker/bytes`` counters.
"""

PUBACK_BYTES = 4
"""Fixed header (2) + packet id (2); an MQTT 5 PUBACK with reason 0 and no properties may omit the rest."""


def remaining_length_bytes(remaining: int) -> int:
    """Size of the variable-length integer that encodes a packet's remaining length."""
    size = 1
    while remaining >= 128:
        remaining //= 128
        size += 1
    return size


def packet_bytes(remaining: int) -> int:
    """A whole packet whose variable header + payload take ``remaining`` bytes."""
    return 1 + remaining_length_bytes(remaining) + remaining


def publish_bytes(topic: str, payload: bytes, qos: int, mqtt5: bool = False, properties: int = 0) -> int:
    """One PUBLISH packet (``properties``: bytes of MQTT 5 properties, without their length prefix)."""
    remaining = 2 + len(topic.encode()) + (2 if qos else 0) + len(payload)
    if mqtt5:
        remaining += remaining_length_bytes(properties) + properties
    return packet_bytes(remaining)


def delivery_bytes(topic: str, payload: bytes, qos: int, mqtt5: bool = False) -> int:
    """A message delivered at ``qos``: the PUBLISH and, at QoS 1, its PUBACK."""
    return publish_bytes(topic, payload, qos, mqtt5) + (PUBACK_BYTES if qos == 1 else 0)


def subscribe_bytes(topic_filter: str, mqtt5: bool = False) -> int:
    """SUBSCRIBE with one filter: packet id, (properties), filter with its length, options byte."""
    return packet_bytes(2 + (1 if mqtt5 else 0) + 2 + len(topic_filter.encode()) + 1)


def unsubscribe_bytes(topic_filter: str, mqtt5: bool = False) -> int:
    return packet_bytes(2 + (1 if mqtt5 else 0) + 2 + len(topic_filter.encode()))


SUBACK_BYTES = 5  # MQTT 3.1.1, one filter: fixed header 2 + packet id 2 + return code 1
UNSUBACK_BYTES = 4  # MQTT 3.1.1: fixed header 2 + packet id 2

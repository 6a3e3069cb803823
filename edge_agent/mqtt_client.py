"""One way to build a paho-mqtt client: the agent's link, the control client, the ingest service and the fleet
simulator all describe their client as a ``ClientOptions`` and get it from ``make_client``.

Why one place: each of them used to repeat credentials, TLS, will and reconnect setup by hand, and they drifted
(one checked the CA file, another let paho's error through; one skipped an empty user name, another sent it).
The options are frozen value types, as aiomqtt's ``TLSParameters`` and ``Will`` are: a client's whole setup can
be compared, logged and tested without a broker. Callbacks stay with each wrapper (each has its own threads).

It lives in the agent because the agent is the lowest layer that speaks MQTT: the control plane may import
the agent's modules, never the other way round, and this needs nothing beyond paho-mqtt.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from .errors import AgentError
from .paho_import import mqtt
from .protocol import BrokerAddress

__all__ = ["ClientOptions", "ClientSetupError", "Reconnect", "Session", "TLSParameters", "Will", "connect",
           "make_client", "mqtt", "set_reconnect_delay"]


class ClientSetupError(AgentError):
    """The client cannot be set up as described (TLS files that do not load, invalid arguments)."""


@dataclass(frozen=True)
class TLSParameters:
    """How to check the broker's certificate on an ``mqtts://`` connection (a plain one ignores it).

    ``ca_certs`` None trusts the system's CAs. ``insecure`` skips the host name check (a test broker whose
    certificate names another host); the chain is always checked."""

    ca_certs: Path | None = None
    insecure: bool = False


@dataclass(frozen=True)
class Will:
    """The message the broker publishes for a client that vanished without saying goodbye."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True

    def __post_init__(self) -> None:
        if not self.topic or "+" in self.topic or "#" in self.topic:
            raise ClientSetupError(f"will: {self.topic!r} is not a topic to publish to")
        if self.qos not in (0, 1, 2):
            raise ClientSetupError(f"will: QoS {self.qos} is not 0, 1 or 2")


@dataclass(frozen=True)
class Session:
    """A persistent MQTT 5 session: the broker keeps subscriptions and queues QoS 1 messages for ``expiry_s``
    while the client is away (``clean_start=False``). ``receive_maximum`` caps unacknowledged messages in
    flight to us (None: the broker's default)."""

    expiry_s: int
    receive_maximum: int | None = None


@dataclass(frozen=True)
class Reconnect:
    """paho's wait before reconnecting: from ``min_s``, doubling up to ``max_s``."""

    min_s: float
    max_s: float

    def __post_init__(self) -> None:
        if not 0 < self.min_s <= self.max_s:
            raise ClientSetupError(f"reconnect: need 0 < min ({self.min_s}) <= max ({self.max_s})")


@dataclass(frozen=True)
class ClientOptions:
    """Everything about a client but its callbacks. TLS is on when the broker address says ``mqtts``.

    ``max_queued`` bounds paho's queue of messages published while offline (0: unbounded); ``max_inflight``
    bounds QoS 1 messages awaiting their PUBACK (None: paho's 20, 0: no client-side window); ``manual_ack``
    leaves the PUBACK of each received message to the caller (``client.ack``). ``password`` is sent only with
    a ``username``."""

    broker: BrokerAddress
    client_id: str
    username: str | None = None
    password: str | None = None
    tls: TLSParameters = field(default_factory=TLSParameters)
    will: Will | None = None
    protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5
    keepalive_s: int = 60
    reconnect: Reconnect | None = None
    session: Session | None = None
    manual_ack: bool = False
    max_queued: int = 0
    max_inflight: int | None = None

    def __post_init__(self) -> None:
        if self.session is not None and self.protocol != MQTTProtocolVersion.MQTTv5:
            raise ClientSetupError("session: a persistent session with an expiry needs MQTT 5")


def make_client(options: ClientOptions) -> mqtt.Client:
    """A paho client (callback API 2) set up as ``options`` say, not connected yet."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=options.client_id, protocol=options.protocol,
                         manual_ack=options.manual_ack)
    if options.max_queued:
        client.max_queued_messages_set(options.max_queued)
    if options.max_inflight is not None:
        client.max_inflight_messages_set(options.max_inflight)
    if options.username is not None:
        client.username_pw_set(options.username, options.password)
    if options.broker.tls:
        ca = options.tls.ca_certs
        try:
            client.tls_set(ca_certs=None if ca is None else str(ca))
        except (OSError, ValueError) as exc:
            raise ClientSetupError(f"ca_file: cannot set up TLS with {ca}: {exc}") from exc
        client.tls_insecure_set(options.tls.insecure)
    will = options.will
    if will is not None:
        client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
    if options.reconnect is not None:
        set_reconnect_delay(client, options.reconnect.min_s, options.reconnect.max_s)
    return client


def set_reconnect_delay(client: mqtt.Client, low_s: float, high_s: float) -> None:
    """paho annotates the delays as whole seconds, yet waits fractions of one too (the agent's backoff does)."""
    client.reconnect_delay_set(low_s, high_s)  # type: ignore[arg-type]


def connect(client: mqtt.Client, options: ClientOptions, *, background: bool = False) -> None:
    """Connect to ``options.broker``: now (raises OSError when it cannot be reached), or with ``background``
    on paho's thread once ``loop_start`` runs, retrying like any reconnect."""
    kwargs: dict[str, Any] = {"keepalive": options.keepalive_s}
    session = options.session
    if session is not None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = session.expiry_s
        if session.receive_maximum is not None:
            props.ReceiveMaximum = session.receive_maximum
        kwargs.update(clean_start=False, properties=props)
    if background:
        client.connect_async(options.broker.host, options.broker.port, **kwargs)
    else:
        client.connect(options.broker.host, options.broker.port, **kwargs)

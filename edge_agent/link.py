"""The agent's MQTT link: one paho-mqtt 2 client, its network thread, and an inbox of ``LinkEvent``s.

Why MQTT 5 (not 3.1.1):
- PUBACK carries a reason code. Mosquitto acknowledges a publish its ACL refuses; under 3.1.1 that looks like
  success and the outbox would delete a window nobody received. Under 5 the agent sees "not authorized".
  It also sees 0x10 "no matching subscribers": accepted, but routed to nobody (uplink.py says what follows).
- A persistent session needs ``clean_start=False`` *and* a session expiry interval; both are explicit in 5,
  so the broker keeps the device's subscriptions and queues QoS 1 messages (desired state) while it is away.

Callbacks run on paho's thread. They translate what happened into a ``LinkEvent`` on the inbox queue and do
only the link's own protocol duties (retained ``online`` status, re-subscribing, choosing the next reconnect
delay); everything else happens on the agent's owner thread that reads the inbox.

Reconnect: paho's own wait doubles from ``min_delay`` (1 s by default: 1, 2, 4 ... so a 3 s outage can cost
7 s). We pick each delay ourselves (``next_delay``): it starts at ``reconnect_min_s`` and grows by 1.5× with
±20 % jitter up to ``reconnect_max_s``, so a short outage costs a fraction of a second more than the outage,
and a fleet that lost its broker at the same moment does not come back in lock step.
"""

import hashlib
import logging
import queue
import random
import threading
from dataclasses import dataclass
from typing import Any

from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from .config import AgentConfig
from .mqtt_client import (
    ClientOptions,
    ClientSetupError,
    Reconnect,
    Session,
    TLSParameters,
    Will,
    connect,
    make_client,
    mqtt,
    set_reconnect_delay,
)
from .protocol import MAX_MESSAGE_BYTES, Status

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 7 * 24 * 3600  # the broker keeps our session (and queued desired state) this long
BACKOFF_FACTOR = 1.5
BACKOFF_JITTER = 0.2
MAX_QUEUED = 1000  # paho's in-memory queue of QoS 1 messages published while offline


@dataclass(frozen=True)
class Connected:
    session_present: bool


@dataclass(frozen=True)
class Disconnected:
    reason: str


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    retained: bool


NO_MATCHING_SUBSCRIBERS = 0x10  # an MQTT 5 PUBACK reason that is not a failure, yet nobody got the message


@dataclass(frozen=True)
class Published:
    """The broker acknowledged message ``mid``; ``reason`` is set when it refused it (e.g. ACL);
    ``no_subscribers`` when it took it but no subscription matched, so it reached nobody."""

    mid: int
    reason: str | None = None
    no_subscribers: bool = False


LinkEvent = Connected | Disconnected | Message | Published


LinkError = ClientSetupError
"""The link cannot be set up (bad TLS files, invalid arguments)."""


_JITTER = random.Random()  # our own: an agent embedded in an application must not draw from (or reseed) its global one


def next_delay(attempt: int, low: float, high: float, rng: random.Random | None = None) -> float:
    """Reconnect delay before attempt ``attempt`` (0-based): ``low·1.5^attempt`` ±20 %, capped at ``high``."""
    base = min(high, low * BACKOFF_FACTOR ** min(attempt, 64))
    jitter = (rng or _JITTER).uniform(1 - BACKOFF_JITTER, 1 + BACKOFF_JITTER)
    return max(low * (1 - BACKOFF_JITTER), min(high, base * jitter))


def client_id_for(config: AgentConfig) -> str:
    """Stable per (prefix, device): the broker finds the persistent session again after a restart."""
    digest = hashlib.sha256(config.topic_prefix.encode()).hexdigest()[:8]
    return f"edgeops-agent-{config.device_id}-{digest}"


def link_options(config: AgentConfig) -> ClientOptions:
    """A persistent MQTT 5 session under a stable client id, with a retained ``offline`` status as its Will."""
    return ClientOptions(
        broker=config.broker, client_id=client_id_for(config), username=config.username, password=config.password,
        tls=TLSParameters(config.ca_file, config.tls_insecure),
        will=Will(config.topics.device(config.device_id, "status"), Status(config.device_id, "offline").to_bytes()),
        keepalive_s=config.keepalive_s, reconnect=Reconnect(config.reconnect_min_s, config.reconnect_max_s),
        session=Session(SESSION_EXPIRY_S), max_queued=MAX_QUEUED)


class MqttLink:
    """Connects, stays connected, and reports everything as events on ``inbox``.

    >>> link = MqttLink(config, inbox); link.start(); link.subscribe(topics.device(dev, "desired"))
    """

    def __init__(self, config: AgentConfig, inbox: "queue.Queue[LinkEvent]") -> None:
        self.config = config
        self.inbox = inbox
        self._status_topic = config.topics.device(config.device_id, "status")
        self._filters: dict[str, int] = {}
        self._lock = threading.Lock()
        self._attempt = 0
        self._started = False
        self.options = link_options(config)
        self._client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        client = make_client(self.options)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        return client

    # lifecycle --------------------------------------------------------------------------------------
    def start(self) -> None:
        """Connect in the background; the first attempt failing is retried like any reconnect."""
        if self._started:
            return
        connect(self._client, self.options, background=True)
        self._client.loop_start()
        self._started = True

    def stop(self, clean: bool = True, timeout: float = 5.0) -> None:
        """Leave. ``clean``: publish retained ``offline`` and wait for its PUBACK, then disconnect without the
        Will. Otherwise disconnect asking the broker to send the Will (what a crash looks like)."""
        if not self._started:
            return
        self._started = False
        if clean and self._client.is_connected():
            info = self._client.publish(self._status_topic, Status(self.config.device_id, "offline").to_bytes(),
                                        qos=1, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError) as exc:
                log.warning("offline status not acknowledged: %s", exc)
            self._client.disconnect()
        else:
            self._client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message"))
        self._client.loop_stop()

    @property
    def connected(self) -> bool:
        return self._client.is_connected()

    # traffic ----------------------------------------------------------------------------------------
    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        """Subscribe now (if connected) and again after every reconnect."""
        with self._lock:
            self._filters[topic_filter] = qos
        if self._client.is_connected():
            self._client.subscribe(topic_filter, qos)

    def unsubscribe(self, topic_filter: str) -> None:
        with self._lock:
            self._filters.pop(topic_filter, None)
        if self._client.is_connected():
            self._client.unsubscribe(topic_filter)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> int:
        """Queue a message; returns its mid (QoS 1 is kept and sent after a reconnect), or -1 when paho
        refused it (queue full, too large, stopping) or when a QoS 0 message found no connection: at most once
        means it is dropped, which its sender chose (e.g. a transient report, ``Reported.qos``)."""
        if len(payload) > MAX_MESSAGE_BYTES:  # the broker caps messages there and drops the connection over it;
            log.error("publish to %s refused: %d bytes exceed the protocol's %d", topic, len(payload),
                      MAX_MESSAGE_BYTES)  # paho would resend it after every reconnect: a flapping device
            return -1
        try:
            info = self._client.publish(topic, payload, qos=qos, retain=retain)
        except ValueError as exc:
            log.warning("publish to %s refused: %s", topic, exc)
            return -1
        if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS or (info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and qos > 0):
            return info.mid
        if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
            log.debug("QoS 0 publish to %s dropped: not connected", topic)
        else:
            log.warning("publish to %s not queued: %s", topic, mqtt.error_string(info.rc))
        return -1

    # paho callbacks (paho's thread) -----------------------------------------------------------------
    def _schedule_next_attempt(self) -> None:
        """Set paho's next wait to our own delay (paho would otherwise double its own from the minimum)."""
        delay = next_delay(self._attempt, self.config.reconnect_min_s, self.config.reconnect_max_s)
        self._attempt += 1
        set_reconnect_delay(self._client, delay, delay)

    def _on_connect(self, client: mqtt.Client, _userdata: Any, flags: Any, reason: ReasonCode,
                    _props: Any) -> None:
        if reason.is_failure:
            self.inbox.put(Disconnected(f"connection refused: {reason}"))  # on_disconnect schedules the retry
            return
        self._attempt = 0
        client.publish(self._status_topic, Status(self.config.device_id, "online").to_bytes(), qos=1, retain=True)
        with self._lock:
            filters = list(self._filters.items())
        if filters:
            client.subscribe(filters)
        self.inbox.put(Connected(session_present=bool(flags.session_present)))

    def _on_connect_fail(self, _client: mqtt.Client, _userdata: Any) -> None:
        attempt = self._attempt
        self._schedule_next_attempt()
        if attempt % 20 == 0:  # the first failure, then every 20th: an operator sees it without log floods
            broker = self.config.broker
            log.warning("cannot reach the broker at %s:%d (attempt %d); retrying with backoff up to %.0f s",
                        broker.host, broker.port, attempt + 1, self.config.reconnect_max_s)

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: ReasonCode,
                       _props: Any) -> None:
        self.inbox.put(Disconnected(str(reason)))
        self._schedule_next_attempt()

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            log.error("dropped a message whose topic is not UTF-8")
            return
        self.inbox.put(Message(topic=topic, payload=bytes(msg.payload), retained=bool(msg.retain)))

    def _on_publish(self, _client: mqtt.Client, _userdata: Any, mid: int, reason: ReasonCode,
                    _props: Any) -> None:
        self.inbox.put(Published(mid, str(reason) if reason.is_failure else None,
                                 no_subscribers=reason.value == NO_MATCHING_SUBSCRIBERS))

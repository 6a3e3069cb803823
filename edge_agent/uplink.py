"""Delivery to the control plane: when a telemetry window or an agent event counts as delivered, and what the
agent does while nobody subscribes.

A PUBACK says the broker took a message, not that anyone got it. Under MQTT 5 a PUBACK with reason 0x10 "no
matching subscribers" says the broker routed it to nobody and let it go. That happens whenever the ingest's
subscription is missing, e.g. right after a broker restart: Mosquitto 2.0 does not restore ``$share``
subscriptions from its persistence file, and an agent reconnects sooner than the ingest subscribes again. So a
window or event is delivered only on a PUBACK that is neither a failure nor 0x10; on 0x10 it is kept and sent
again later.

"Later" is a backoff (``NoSubscriberBackoff``), so that a device whose control plane runs no ingest for a day
does not hammer the broker: after a 0x10 the stream sends one message at a time, first after ``RETRY_MIN_S``,
each further miss multiplying the wait by 1.5 (±20 % jitter, as for reconnects) up to ``RETRY_MAX_S``; the first
real delivery ends it. It logs once when nobody subscribes and once when delivery resumes, never per message.

Telemetry windows wait in the durable outbox (telemetry.py). Agent events are rare and small, so
``EventCourier`` keeps them in memory, in order, until a subscriber took them (at most ``MAX_EVENTS``; an agent
restart loses those still waiting).
"""

import logging
import time
from collections.abc import Callable

from .link import MqttLink, next_delay

log = logging.getLogger(__name__)

RETRY_MIN_S = 0.5
RETRY_MAX_S = 30.0
MAX_EVENTS = 1000  # agent events kept while nobody subscribes; beyond it the oldest is forgotten (and logged)


class NoSubscriberBackoff:
    """The "nobody subscribes" state of one stream (telemetry, events), on the owner thread."""

    def __init__(self, what: str, *, low: float = RETRY_MIN_S, high: float = RETRY_MAX_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.what = what
        self.low = low
        self.high = high
        self.clock = clock
        self.waiting = False  # a 0x10 came and no delivery since: send one message at a time, when ``due``
        self._attempt = 0
        self._due = 0.0

    def missed(self) -> None:
        """A PUBACK 0x10. Only a miss that answers a message sent after the wait grows the wait: the others
        answer messages that were already in flight when the first miss came."""
        now = self.clock()
        if not self.waiting:
            self.waiting, self._attempt = True, 0
            log.warning("%s: no matching subscribers (is the ingest running and subscribed?); keeping them and "
                        "retrying with backoff up to %.0f s", self.what, self.high)
        elif now < self._due:
            return
        self._due = now + next_delay(self._attempt, self.low, self.high)
        self._attempt += 1

    def delivered(self) -> None:
        """A subscriber took a message: the stream flows again."""
        if self.waiting:
            self.waiting = False
            log.info("%s: delivered again", self.what)

    def due(self) -> bool:
        """May a message be sent now?"""
        return not self.waiting or self.clock() >= self._due


class EventCourier:
    """Agent events (QoS 1) kept until a subscriber took them, sent in the order they were emitted.

    Owner thread only: ``publish`` (emit), ``on_published`` (every PUBACK; False when ``mid`` is not an
    event's), ``tick`` (often: sends what waits once the link is up and the backoff allows it).
    """

    def __init__(self, link: MqttLink, topic: str, *, backoff: NoSubscriberBackoff | None = None,
                 max_events: int = MAX_EVENTS) -> None:
        self.link = link
        self.topic = topic
        self.backoff = backoff or NoSubscriberBackoff(f"agent events on {topic}")
        self.max_events = max_events
        self._waiting: list[tuple[int, bytes]] = []  # (order, payload), oldest first: not sent, or sent again
        self._inflight: dict[int, tuple[int, bytes]] = {}  # mid → (order, payload)
        self._order = 0

    @property
    def pending(self) -> int:
        """Events not yet taken by a subscriber."""
        return len(self._waiting) + len(self._inflight)

    def publish(self, payload: bytes) -> None:
        self._waiting.append((self._order, payload))
        self._order += 1
        if self.pending > self.max_events:
            self._waiting.pop(0)
            log.error("agent events: more than %d waiting for a subscriber; forgot the oldest", self.max_events)
        self._send()

    def on_published(self, mid: int, reason: str | None = None, no_subscribers: bool = False) -> bool:
        event = self._inflight.pop(mid, None)
        if event is None:
            return False
        if no_subscribers:
            self._waiting.append(event)
            self._waiting.sort()
            self.backoff.missed()
        elif reason is not None:  # refused (ACL, quota): sending it again would be refused again
            log.error("broker refused an agent event: %s", reason)
        else:
            self.backoff.delivered()
        self._send()
        return True

    def tick(self) -> None:
        self._send()

    def _send(self) -> None:
        if not self._waiting or not self.link.connected:
            return
        if self.backoff.waiting and (self._inflight or not self.backoff.due()):
            return
        budget = 1 if self.backoff.waiting else len(self._waiting)
        while budget and self._waiting:
            order, payload = self._waiting[0]
            mid = self.link.publish(self.topic, payload, qos=1)
            if mid < 0:
                return
            self._waiting.pop(0)
            self._inflight[mid] = (order, payload)
            budget -= 1

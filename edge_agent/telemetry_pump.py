"""Telemetry delivery: closed windows into the durable outbox, and from there to the broker.

``TelemetryPump`` (owner thread only) turns closed windows into outbox rows and publishes them, at most
``MAX_INFLIGHT`` unacknowledged at a time, in seq order; a row is deleted on PUBACK only (see outbox.py), and not
on a PUBACK "no matching subscribers": that window reached nobody, so it is sent again (uplink.py). Recording
goes straight to the (thread-safe) recorder of telemetry.py: callers on any thread use ``recorder``.
"""

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .feedback import AnswerWindow, FeedbackMemory
from .link import MqttLink
from .outbox import Outbox
from .protocol import MAX_MESSAGE_BYTES, ReleaseManifest, Topics
from .telemetry import TelemetryRecorder
from .uplink import NoSubscriberBackoff

log = logging.getLogger(__name__)

MAX_INFLIGHT = 32  # windows handed to the link and not yet acknowledged


class TelemetryPump:
    """Recorder → outbox → link. Every method runs on the agent's owner thread, except ``record`` and
    ``record_feedback``, which only touch the (thread-safe) recorder."""

    def __init__(self, outbox: Outbox, link: MqttLink, topics: Topics, device: str, *,
                 interval_s: float = 60.0, max_predictions: int = 10_000,
                 clock: Callable[[], float] = time.time, backoff: NoSubscriberBackoff | None = None,
                 memory: FeedbackMemory | None = None) -> None:
        self.outbox = outbox
        self.link = link
        self.topic = topics.device(device, "telemetry")
        self.device = device
        self.interval_s = interval_s
        self.max_predictions = max_predictions
        self.clock = clock
        self.backoff = backoff or NoSubscriberBackoff(f"telemetry windows on {self.topic}")
        self.memory = memory
        self.recorder: TelemetryRecorder | None = None
        self._inflight: dict[int, int] = {}  # mid → seq
        self._handed: set[int] = set()  # seqs the link holds (paho re-sends them itself after a reconnect)
        self._unrouted: set[int] = set()  # seqs answered "no matching subscribers": sent again before newer ones
        self._cursor = -1  # the highest seq handed to the link; every stored seq up to it is handed or unrouted

    def on_model_changed(self, manifest: ReleaseManifest | None) -> None:
        """Close the old model's window (its counts belong to it), then record for ``manifest``."""
        old = self.recorder
        self.flush()
        if old is not None:
            old.retire()
        self.recorder = None if manifest is None else TelemetryRecorder(
            manifest, self.device, self.interval_s, self.max_predictions, self.clock, self.memory)

    def record(self, record: Mapping[str, Any] | None, prediction: Any | None, latency_ms: float,
               error: str | None = None) -> str | None:
        recorder = self.recorder
        return None if recorder is None else recorder.record(record, prediction, latency_ms, error)

    def record_many(self, records: Sequence[Mapping[str, Any]], answers: Sequence[Any], latency_ms: float,
                    inputs: Mapping[str, Any] | None = None, probabilities: np.ndarray | None = None,
                    numeric: tuple[np.ndarray, tuple[str, ...]] | None = None) -> tuple[str, int] | None:
        recorder = self.recorder
        return None if recorder is None else recorder.record_many(records, answers, latency_ms, inputs, probabilities,
                                                                  numeric)

    def record_feedback(self, correct: bool | None = None, abs_error: float | None = None,
                        about: AnswerWindow | None = None) -> None:
        recorder = self.recorder
        if recorder is not None:
            recorder.record_feedback(correct, abs_error, about)

    def tick(self, now: float | None = None) -> None:
        """Call often (each pass of the owner loop): closes a due window, keeps the pipe to the broker full."""
        if self.recorder is not None and self.recorder.due(now):
            self.flush()
            return
        if self.recorder is not None:
            self.recorder.compact()
        self._send()

    def flush(self) -> None:
        """Close the open window now (model change, shutdown) and store it in the outbox."""
        if self.recorder is None:
            return
        seq = self.outbox.next_seq()
        dropped = self.outbox.dropped()
        window = self.recorder.close_window(seq, dropped, self.outbox.epoch)
        if window is not None:
            payload = window.to_bytes()
            if len(payload) > MAX_MESSAGE_BYTES:  # the broker would refuse it and drop the connection, forever
                log.error("telemetry window %d has %d bytes, over the protocol's limit of %d: dropped (a release "
                          "with fewer features or bins fits)", seq, len(payload), MAX_MESSAGE_BYTES)
                self.outbox.record_loss(1)
            else:
                self.outbox.put(seq, payload, dropped=dropped)
        self._send()

    def on_connected(self) -> None:
        """Publish what is waiting. Windows paho already holds are re-sent by paho; the rest (e.g. from
        before an agent restart) are sent here, in seq order."""
        self._send()

    def on_published(self, mid: int, reason: str | None = None, no_subscribers: bool = False) -> bool:
        """A PUBACK; False when ``mid`` is not a telemetry window's."""
        seq = self._inflight.pop(mid, None)
        if seq is None:
            return False
        self._handed.discard(seq)
        if no_subscribers:  # the broker took it but nobody subscribes: it reached nobody, keep it
            self._unrouted.add(seq)
            self.backoff.missed()
            return True
        self.outbox.ack(seq)
        if reason is not None:  # the broker refused it (ACL, quota): it is lost, so report it as dropped
            log.error("broker refused telemetry window %d: %s", seq, reason)
            self.outbox.record_loss(1)
        else:
            self.backoff.delivered()
        self._send()
        return True

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def _send(self) -> None:
        """Hand windows to the link, oldest first: those sent again, then new ones. While nobody subscribes,
        one at a time and only when the backoff allows (the answer decides whether the pipe opens again)."""
        if not self.link.connected:
            return
        if self.backoff.waiting:
            if self._handed or not self.backoff.due():
                return
            budget = 1
        else:
            budget = MAX_INFLIGHT - len(self._handed)
        while budget > 0 and self._unrouted:
            seq = min(self._unrouted)
            payload = self.outbox.get(seq)  # None: the outbox bound evicted it meanwhile (and counted it)
            if payload is not None:
                if not self._hand(seq, payload):
                    return
                budget -= 1
            self._unrouted.discard(seq)
        if budget > 0:
            for seq, payload in self.outbox.pending(budget, after=self._cursor):
                if not self._hand(seq, payload):
                    break

    def _hand(self, seq: int, payload: bytes) -> bool:
        mid = self.link.publish(self.topic, payload, qos=1)
        if mid < 0:
            return False
        self._inflight[mid] = seq
        self._handed.add(seq)
        self._cursor = max(self._cursor, seq)
        return True

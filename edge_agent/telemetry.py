"""Telemetry windows: what the device saw, summarised on the release's reference bins, and their delivery.

``TelemetryRecorder`` accumulates one window (thread-safe: predictions arrive on HTTP threads) and closes it
every ``interval_s`` or ``max_predictions``, whichever comes first. A window holds counts, errors by kind,
latency quantiles, per-feature counts on the manifest's reference bins, prediction counts and feedback
metrics, and, for a classifier whose release carries a score calibration, score counts (protocol/performance.py:
what the control plane estimates accuracy from without labels). Raw rows never leave the device: only counts
do. Each answer counted is also kept in the window's ``AnswerWindow`` for labels that come later, and
``record`` returns the id that names it (feedback.py).

``TelemetryPump`` (owner thread only) turns closed windows into outbox rows and publishes them, at most
``MAX_INFLIGHT`` unacknowledged at a time, in seq order; a row is deleted on PUBACK only (see outbox.py), and not
on a PUBACK "no matching subscribers": that window reached nobody, so it is sent again (uplink.py).
"""

import logging
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from .feedback import MAX_CREDITS, AnswerWindow, FeedbackMemory, FeedbackTally
from .link import MqttLink
from .outbox import Outbox
from .protocol import (
    MAX_MESSAGE_BYTES,
    MISSING,
    OVERFLOW,
    UNDERFLOW,
    CategoricalBins,
    CountAccumulator,
    ReleaseManifest,
    ScoreCalibration,
    ScoreCounts,
    TelemetryWindow,
    Topics,
    categorical_bin,
)
from .scoring import freeze_scores, score_cells
from .uplink import NoSubscriberBackoff

log = logging.getLogger(__name__)

LATENCY_BUFFER = 10_000  # latencies kept per window; beyond it a uniform reservoir sample (max stays exact)
MAX_PENDING = 50_000  # rows waiting to be binned before the recording thread bins them itself
MAX_INFLIGHT = 32  # windows handed to the link and not yet acknowledged


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _prediction_key(prediction: Any, task: str) -> Any:
    """The value that goes into the prediction bins: the label for classifiers (as its class text), the
    value for regressors. Accepts C's ``Prediction`` or a bare scalar."""
    if task == "regression":
        return getattr(prediction, "value", prediction)
    label = getattr(prediction, "label", prediction)
    if isinstance(label, float) and label.is_integer():
        label = int(label)
    return None if label is None else str(label)


def _as_floats(values: Sequence[Any]) -> np.ndarray:
    """Values as float64, NaN for missing; a value that is not a number at all counts as missing too."""
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        out = np.empty(len(values), dtype=np.float64)
        for i, value in enumerate(values):
            try:
                out[i] = np.nan if value is None else float(value)
            except (TypeError, ValueError):
                out[i] = np.nan
        return out


def add_values(acc: CountAccumulator, values: Sequence[Any]) -> None:
    """Add many values at once, exactly as ``acc.add`` would one by one (the rule of protocol/bins.py), but
    vectorised for numeric bins and counted once per distinct value for categorical ones."""
    if isinstance(acc.bins, CategoricalBins):
        index = {c: i for i, c in enumerate(acc.bins.categories)}
        for value, n in Counter(None if v is None else str(v) for v in values).items():
            i = categorical_bin(acc.bins.categories, value, index)
            if i >= 0:
                acc.counts[i] += n
            else:
                acc.extra[i] += n
        return
    edges = np.asarray(acc.bins.edges, dtype=np.float64)
    arr = _as_floats(values)
    missing, under, over = np.isnan(arr), arr < edges[0], arr > edges[-1]
    inside = arr[~(missing | under | over)]
    if len(edges) == 1:
        acc.counts[0] += len(inside)
    else:
        idx = np.minimum(np.searchsorted(edges, inside, side="right") - 1, len(edges) - 2)
        for i, n in enumerate(np.bincount(idx, minlength=len(edges) - 1).tolist()):
            acc.counts[i] += n
    acc.extra[MISSING] += int(missing.sum())
    acc.extra[UNDERFLOW] += int(under.sum())
    acc.extra[OVERFLOW] += int(over.sum())


class _Window:
    """The mutable state of one open window. Counters change under the recorder's lock; rows and predictions
    wait in ``pending`` and are binned in bulk by ``bin_pending`` (under ``binning``), off the hot path."""

    def __init__(self, manifest: ReleaseManifest, start: float, buffer: int, given: AnswerWindow | None,
                 score_bins: int = 0) -> None:
        self.start = start
        self.count = 0
        self.errors: dict[str, int] = {}
        self.latencies: list[float] = []  # at most ``buffer``: a reservoir sample once more were seen
        self.buffer = buffer
        self.seen_latencies = 0
        self.max_latency = 0.0
        self.features = {col: CountAccumulator(ref.bins) for col, ref in manifest.reference.items()}
        self.predictions = CountAccumulator(manifest.prediction_reference.bins)
        self.rows: list[tuple[Any, ...]] = []  # reference-column values of each single record, in features order
        self.blocks: list[list[list[Any]]] = []  # a batch's values column by column, in features order
        self.pending = 0  # rows in ``rows`` and ``blocks``
        self.predicted: list[Any] = []
        self.score_bins = score_bins  # 0: this release's windows carry no score counts
        self.scores = np.zeros(len(manifest.outputs.classes or ()) * 2 * score_bins, dtype=np.int64)
        self.scored: list[tuple[float, ...]] = []  # probabilities of single records
        self.scored_blocks: list[np.ndarray] = []  # a batch's probability matrix
        self.binning = threading.Lock()
        self.given = given  # the answers of this window, kept for feedback (feedback.py); their ids name it
        self.tally = FeedbackTally()

    def add_latency(self, latency_ms: float, rng: random.Random) -> None:
        if not math.isfinite(latency_ms):
            return
        if latency_ms > self.max_latency:
            self.max_latency = latency_ms
        n = self.seen_latencies
        self.seen_latencies = n + 1
        if n < self.buffer:
            self.latencies.append(latency_ms)
        else:  # reservoir sampling keeps the quantiles unbiased without unbounded memory
            j = rng.randrange(n + 1)
            if j < self.buffer:
                self.latencies[j] = latency_ms

    def take_pending(self) -> "_Pending":
        """Call under the recorder's lock: hands out the pending rows, blocks, predictions and scores (O(1))."""
        pending = (self.rows, self.blocks, self.predicted, self.scored, self.scored_blocks)
        self.rows, self.blocks, self.predicted, self.scored, self.scored_blocks, self.pending = [], [], [], [], [], 0
        return pending

    def bin_pending(self, rows: list[tuple[Any, ...]], blocks: list[list[list[Any]]], predicted: list[Any],
                    scored: list[tuple[float, ...]], scored_blocks: list[np.ndarray]) -> None:
        with self.binning:
            if scored or scored_blocks:  # one pass over everything pending: numpy's cost is per call
                matrices = [*([np.array(scored, dtype=np.float64)] if scored else []), *scored_blocks]
                pending = matrices[0] if len(matrices) == 1 else np.concatenate(matrices)
                self.scores += score_cells(pending, self.score_bins)
            if rows or blocks:
                columns = [list(column) for column in zip(*rows, strict=True)] if rows \
                    else [[] for _ in self.features]
                for block in blocks:
                    for column, values in zip(columns, block, strict=True):
                        column.extend(values)
                for acc, column in zip(self.features.values(), columns, strict=True):
                    add_values(acc, column)
            if predicted:
                add_values(self.predictions, predicted)

    @property
    def empty(self) -> bool:
        return self.count == 0 and self.tally.labelled == 0

    def score_counts(self) -> ScoreCounts | None:
        return freeze_scores(self.scores, self.score_bins) if self.score_bins and self.scores.any() else None


_Pending = tuple[list[tuple[Any, ...]], list[list[list[Any]]], list[Any], list[tuple[float, ...]], list[np.ndarray]]


class TelemetryRecorder:
    """Accumulates predictions for one model version; ``close_window`` hands out a finished window."""

    def __init__(self, manifest: ReleaseManifest, device: str, interval_s: float, max_predictions: int,
                 clock: Callable[[], float] = time.time, memory: FeedbackMemory | None = None) -> None:
        self.manifest = manifest
        self.device = device
        self.interval_s = interval_s
        self.max_predictions = max_predictions
        self.clock = clock
        self._columns = tuple(manifest.reference)
        self._lock = threading.Lock()
        self._rng = random.Random()
        self._buffer = max(1, min(max_predictions, LATENCY_BUFFER))
        calibration, self._classes = manifest.calibration, len(manifest.outputs.classes or ())
        self._score_bins = calibration.bins if isinstance(calibration, ScoreCalibration) \
            and manifest.outputs.task != "regression" and calibration.classes == self._classes else 0
        self._memory = memory
        self._regression = manifest.outputs.task == "regression"
        self._window = self._new_window(clock())

    def _new_window(self, start: float) -> _Window:
        memory, m = self._memory, self.manifest
        given = None if memory is None else memory.open_window(m.name, m.version, start, self._regression)
        return _Window(m, start, self._buffer, given, self._score_bins)

    def record(self, record: Mapping[str, Any] | None, prediction: Any | None, latency_ms: float,
               error: str | None = None) -> str | None:
        """One prediction (or failed attempt). ``error`` is a short kind (``input``, ``model`` ...), never a
        message with data in it. ``record`` feeds the feature bins; pass None when it is not a mapping.

        The hot path only copies the reference columns' values (the caller may reuse its dict) and appends;
        binning happens in bulk in ``compact`` (the owner thread calls it every tick) or at close.

        Returns the prediction's id when a feedback memory keeps the answer (the window's head and its row)."""
        key = None if prediction is None else _prediction_key(prediction, self.manifest.outputs.task)
        row = None if record is None else tuple(record.get(col) for col in self._columns)
        probabilities = getattr(prediction, "probabilities", None) if self._score_bins else None
        scores = None if not probabilities else tuple(probabilities.values())
        kept, at = None, 0
        with self._lock:
            win = self._window
            win.count += 1
            win.add_latency(float(latency_ms), self._rng)
            if error is not None:
                win.errors[error] = win.errors.get(error, 0) + 1
            if row is not None:
                win.rows.append(row)
                win.pending += 1
            if prediction is not None:
                win.predicted.append(key)
                kept = win.given
                if kept is not None:
                    at = len(kept.answers)
                    kept.answers.append(getattr(prediction, "value" if self._regression else "label", prediction))
            if scores is not None and len(scores) == self._classes:
                win.scored.append(scores)
            overdue = win.pending >= MAX_PENDING
        if overdue:  # nobody compacted for a long while: keep memory bounded on the caller's thread
            self.compact()
        return None if kept is None else f"{kept.head}{at:x}"

    def record_many(self, records: Sequence[Mapping[str, Any]], answers: Sequence[Any], latency_ms: float,
                    inputs: Mapping[str, list[Any]] | None = None,
                    probabilities: np.ndarray | None = None) -> tuple[str, int] | None:
        """A batch the model answered (``answers``: its labels, or its values for a regressor): one request, so
        one latency sample (its time per row) and one pass under the lock; its rows and answers are counted and
        binned exactly as ``record`` would count each. Returns (id head, first row) when answers are kept.
        ``probabilities`` (rows × classes, a classifier's) feed the score counts; the matrix is kept as it is and
        binned off the hot path."""
        if not records:
            return None
        given = {} if inputs is None else inputs  # columns the caller already extracted (the model's inputs)
        columns = [given[col] if col in given else [record.get(col) for record in records] for col in self._columns]
        task = self.manifest.outputs.task
        key_of = {answer: _prediction_key(answer, task) for answer in set(answers)}  # few distinct: each once
        keys = [key_of[answer] for answer in answers]
        scored = self._score_bins and probabilities is not None \
            and np.shape(probabilities) == (len(records), self._classes)
        with self._lock:
            win = self._window
            win.count += len(records)
            win.add_latency(float(latency_ms), self._rng)
            win.blocks.append(columns)
            win.pending += len(records)
            win.predicted.extend(keys)
            kept = win.given
            at = 0 if kept is None else len(kept.answers)
            if kept is not None:
                kept.answers.extend(answers)
            if scored:
                win.scored_blocks.append(probabilities)  # type: ignore[arg-type]
            overdue = win.pending >= MAX_PENDING
        if overdue:
            self.compact()
        return None if kept is None else (kept.head, at)

    def compact(self) -> None:
        """Bin what is pending into the open window's counts (bounded memory; cheap to call often)."""
        with self._lock:
            win = self._window
            pending = win.take_pending()
        win.bin_pending(*pending)

    def record_feedback(self, correct: bool | None = None, abs_error: float | None = None,
                        about: AnswerWindow | None = None) -> None:
        """Ground truth for an earlier prediction: ``correct`` for classifiers, ``abs_error`` for regressors;
        ``about`` is the window that made the prediction (its release and time get the credit)."""
        with self._lock:
            self._window.tally.add(about, correct, abs_error)

    def due(self, now: float | None = None) -> bool:
        now = self.clock() if now is None else now
        with self._lock:
            win = self._window
            return win.count >= self.max_predictions or now - win.start >= self.interval_s \
                or len(win.tally.credits) >= MAX_CREDITS

    def close_window(self, seq: int, dropped: int = 0, epoch: str = "") -> TelemetryWindow | None:
        """Finish the open window and start the next one. None when nothing happened (no seq is used).
        ``epoch`` is the outbox's, within which ``seq`` counts."""
        now = self.clock()
        fresh = self._new_window(now)
        with self._lock:
            win, self._window = self._window, fresh
            pending = win.take_pending()
        if win.given is not None:
            win.given.closed = True
        win.bin_pending(*pending)
        if win.empty:
            return None
        return self._summarise(win, seq, now, dropped, epoch)

    def _summarise(self, win: _Window, seq: int, end: float, dropped: int, epoch: str) -> TelemetryWindow:
        latency: dict[str, float] = {}
        kept = np.asarray(win.latencies, dtype=np.float64)
        if len(kept):
            p50, p95, p99 = np.quantile(kept, [0.5, 0.95, 0.99])
            latency = {"p50": float(p50), "p95": float(p95), "p99": float(p99), "max": float(win.max_latency)}
        return TelemetryWindow(
            device=self.device, seq=seq, model=self.manifest.name, version=self.manifest.version,
            start=_iso(win.start), end=_iso(end), count=win.count, errors=dict(win.errors), latency_ms=latency,
            features={col: acc.freeze() for col, acc in win.features.items()},
            predictions=win.predictions.freeze(), feedback=win.tally.feedback(self._regression), dropped=dropped,
            epoch=epoch, feedback_for=win.tally.feedback_for(), scores=win.score_counts(),
        )

    def retire(self) -> None:
        """This recorder is replaced (after ``close_window``): its open window will never hold answers."""
        given = self._window.given
        if given is not None:
            given.closed = True


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
                    inputs: Mapping[str, list[Any]] | None = None,
                    probabilities: np.ndarray | None = None) -> tuple[str, int] | None:
        recorder = self.recorder
        return None if recorder is None else recorder.record_many(records, answers, latency_ms, inputs, probabilities)

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

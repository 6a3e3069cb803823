"""Telemetry windows: what the device saw, summarised on the release's reference bins.

``TelemetryRecorder`` accumulates one window (thread-safe: predictions arrive on HTTP threads) and closes it
every ``interval_s`` or ``max_predictions``, whichever comes first. A window holds counts, errors by kind,
latency quantiles, per-feature counts on the manifest's reference bins, prediction counts and feedback
metrics, and, for a classifier whose release carries a score calibration, score counts (protocol/performance.py:
what the control plane estimates accuracy from without labels). Raw rows never leave the device: only counts
do. Each answer counted is also kept in the window's ``AnswerWindow`` for labels that come later; its position
there is the row of the prediction's id (feedback.py).

The hot path only appends, under one short lock per request (a single row or a whole batch): the row's values,
its answer, its latency. Binning, prediction keys, the latency reservoir and score counts are done in bulk off
the hot path (binning.py): by the owner thread every tick (``compact``) or when the window closes. A batch is
one request: its columns are kept as given (a float64 column per numeric input from the model's feeds), one
latency sample. Either way the window's counts are the same, bit for bit.

Delivery (outbox, link, acknowledgements) is telemetry_pump.py's.
"""

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import Any

import numpy as np

from .binning import Binner, MatrixBinner, add_values, as_floats
from .feedback import MAX_CREDITS, AnswerWindow, FeedbackMemory, FeedbackTally
from .protocol import CountAccumulator, ReleaseManifest, ScoreCalibration, ScoreCounts, TelemetryWindow, iso_ms
from .scoring import freeze_scores, score_cells

__all__ = ["LATENCY_BUFFER", "MAX_PENDING", "TelemetryRecorder", "add_values"]

LATENCY_BUFFER = 10_000  # latencies kept per window; beyond it a uniform reservoir sample (max stays exact)
MAX_PENDING = 50_000  # rows waiting to be binned before the recording thread bins them itself


def _prediction_key(answer: Any, regression: bool) -> Any:
    """The value that goes into the prediction bins: the label for classifiers (as its class text), the
    value for regressors."""
    if regression:
        return answer
    if isinstance(answer, float) and answer.is_integer():
        answer = int(answer)
    return None if answer is None else str(answer)


def _answer_of(prediction: Any, regression: bool) -> Any:
    """What a prediction answered: a ``Prediction``'s label or value, or a bare scalar as it is."""
    return getattr(prediction, "value" if regression else "label", prediction)


class _Window:
    """The mutable state of one open window. Counters and pending piles change under the recorder's lock; the
    piles are binned in bulk by ``bin_pending`` (under ``binning``), off the hot path."""

    def __init__(self, recorder: "TelemetryRecorder", window_ms: int, given: AnswerWindow | None) -> None:
        self.window_ms = window_ms
        self.start = window_ms / 1000  # the instant its report and its prediction ids name, to the millisecond
        self.count = 0
        self.errors: dict[str, int] = {}
        self.latencies: list[float] = []  # at most ``buffer``: a reservoir sample once more were seen
        self.seen_latencies = 0
        self.max_latency = 0.0
        self.features = {col: CountAccumulator(ref.bins) for col, ref in recorder.manifest.reference.items()}
        self.predictions = CountAccumulator(recorder.manifest.prediction_reference.bins)
        self.scores = np.zeros(recorder.classes * 2 * recorder.score_bins, dtype=np.int64)
        self.given = given  # the answers of this window, kept for feedback (feedback.py); their ids name it
        self.tally = FeedbackTally()
        self.binning = threading.Lock()
        # pending, appended on the hot path (under the recorder's lock), taken by ``take_pending``:
        self.lat: list[float] = []  # one latency per request
        self.rows: list[Any] = []  # reference-column values of each single record (a tuple, or the one value)
        self.blocks: list[tuple[list[Any], Any]] = []  # a batch's columns (in reference order), its feed matrix
        self.pending = 0  # rows in ``rows`` and ``blocks``
        self.answers: list[Any] = [] if given is None else given.answers  # labels or values, in id order
        self.answers_binned = 0  # answers before this index are in ``predictions``
        self.scored: list[tuple[float, ...]] = []  # probabilities of single records
        self.scored_blocks: list[np.ndarray] = []  # a batch's probability matrix

    def take_pending(self) -> tuple[Any, ...]:
        """Call under the recorder's lock: hands out what is pending (O(1) but for nothing)."""
        if self.given is None:  # nobody keeps the answers: hand the list out
            answers, self.answers = self.answers, []
        else:  # the feedback memory holds the list: hand out the part not binned yet (appends only go after it)
            answers, self.answers_binned = self.answers[self.answers_binned:], len(self.answers)
        pending = (self.lat, self.rows, self.blocks, answers, self.scored, self.scored_blocks)
        self.lat, self.rows, self.blocks, self.scored, self.scored_blocks, self.pending = [], [], [], [], [], 0
        return pending

    @property
    def empty(self) -> bool:
        return self.count == 0 and self.tally.labelled == 0

    def score_counts(self, score_bins: int) -> ScoreCounts | None:
        return freeze_scores(self.scores, score_bins) if score_bins and self.scores.any() else None


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
        self._binners = tuple(Binner(ref.bins) for ref in manifest.reference.values())  # numpy edges, once
        self._prediction_binner = Binner(manifest.prediction_reference.bins)
        # the numeric reference columns are binned together, as one matrix; the others one by one
        self._numeric_at = [j for j, b in enumerate(self._binners) if not b.categorical]
        self._text_at = [j for j, b in enumerate(self._binners) if b.categorical]
        self._numeric_names = tuple(self._columns[j] for j in self._numeric_at)
        edges = [e for e in (self._binners[j].edges for j in self._numeric_at) if e is not None]
        self._matrix_binner = MatrixBinner(edges) if edges else None
        self._picks: dict[tuple[str, ...], Any] = {}  # a feed matrix's column names → our numeric columns in it
        n = len(self._columns)
        # a record's reference values: a tuple, or the value itself for one column (as itemgetter gives them)
        self._row_of = itemgetter(*self._columns) if n else None
        self._row_get: Callable[[Mapping[str, Any]], Any] = (
            (lambda r: r.get(self._columns[0])) if n == 1 else (lambda r: tuple(map(r.get, self._columns))))
        self._lock = threading.Lock()
        self._rng = np.random.default_rng()
        self._buffer = max(1, min(max_predictions, LATENCY_BUFFER))
        calibration, self.classes = manifest.calibration, len(manifest.outputs.classes or ())
        self.score_bins = calibration.bins if isinstance(calibration, ScoreCalibration) \
            and manifest.outputs.task != "regression" and calibration.classes == self.classes else 0
        self._memory = memory
        self._regression = manifest.outputs.task == "regression"
        self._window = self._new_window(clock())

    def _new_window(self, start: float) -> _Window:
        memory, m = self._memory, self.manifest
        given = None if memory is None else memory.open_window(m.name, m.version, start, self._regression)
        return _Window(self, int(start * 1000) if given is None else given.window_ms, given)

    # the hot path --------------------------------------------------------------------------------------
    def record_prediction(self, record: Mapping[str, Any], prediction: Any, latency_ms: float) -> None:
        """A ``Prediction`` the model gave for ``record`` (a mapping holding every reference column, as a record
        the model accepted does). Appends, under the lock: its values, its answer, its latency. When a feedback
        memory keeps the answer, the prediction is named after the window and its row (formatted when read)."""
        row_of = self._row_of
        try:
            row = None if row_of is None else row_of(record)
        except (KeyError, TypeError):
            row = self._row_get(record)
        answer = prediction.value if self._regression else prediction.label
        scores = None
        if self.score_bins:  # the model's own list when it gave one (nobody else holds it), else a copy
            scores = prediction.scores
            if scores is None and prediction.probabilities:
                scores = tuple(prediction.probabilities.values())
            if scores is not None and len(scores) != self.classes:
                scores = None
        with self._lock:
            win = self._window
            win.count += 1
            win.lat.append(latency_ms)
            if row_of is not None:
                win.rows.append(row)
                win.pending += 1
            answers = win.answers
            at = len(answers)
            answers.append(answer)
            if scores is not None:
                win.scored.append(scores)
            overdue = win.pending >= MAX_PENDING
        given = win.given
        if given is not None:  # Prediction.name, inlined
            prediction.id_head, prediction.id_row, prediction._id = given.head, at, None
        if overdue:  # nobody compacted for a long while: keep memory bounded on the caller's thread
            self.compact()

    def record(self, record: Mapping[str, Any] | None, prediction: Any | None, latency_ms: float,
               error: str | None = None) -> str | None:
        """One prediction (or failed attempt), any shape: ``prediction`` a ``Prediction`` or the bare answer.
        ``error`` is a short kind (``input``, ``model`` ...), never a message with data in it. ``record`` feeds
        the feature bins (a column it lacks counts as missing); pass None when it is not a mapping. Returns the
        prediction's id when a feedback memory keeps the answer."""
        row = None if record is None or self._row_of is None else self._row_get(record)
        answer = None if prediction is None else _answer_of(prediction, self._regression)
        probabilities = getattr(prediction, "probabilities", None) if self.score_bins else None
        scores = None if not probabilities else tuple(probabilities.values())
        at = -1
        with self._lock:
            win = self._window
            win.count += 1
            win.lat.append(latency_ms)
            if error is not None:
                win.errors[error] = win.errors.get(error, 0) + 1
            if record is not None and self._row_of is not None:
                win.rows.append(row)
                win.pending += 1
            if prediction is not None:
                at = len(win.answers)
                win.answers.append(answer)
            if scores is not None and len(scores) == self.classes:
                win.scored.append(scores)
            overdue = win.pending >= MAX_PENDING
        if overdue:
            self.compact()
        given = win.given
        return None if given is None or at < 0 else f"{given.head}{at:x}"

    def record_many(self, records: Sequence[Mapping[str, Any]], answers: Sequence[Any], latency_ms: float,
                    inputs: Mapping[str, Any] | None = None, probabilities: np.ndarray | None = None,
                    numeric: tuple[np.ndarray, tuple[str, ...]] | None = None) -> tuple[str, int] | None:
        """A batch the model answered (``answers``: its labels, or its values for a regressor): one request, so
        one latency sample (its time per row) and one pass under the lock; its rows and answers are counted
        exactly as ``record`` would count each. ``inputs`` are columns the caller already extracted (a list, or
        the float64 column the model was fed). Returns (id head, first row) when answers are kept.
        ``probabilities`` (rows × classes, a classifier's) feed the score counts. ``numeric`` is the model's
        numeric feeds as one float64 matrix (rows × columns, NaN for missing) and its columns' names: the
        numeric reference columns are then taken from it, as they are, and binned together."""
        n = len(records)
        if not n:
            return None
        given = {} if inputs is None else inputs
        picked = None
        if numeric is not None and self._matrix_binner is not None:
            pick = self._pick(numeric[1])
            if pick is not None:
                picked = (numeric[0], pick)
        skip = self._numeric_names if picked is not None else ()
        columns = [None if col in skip else given[col] if col in given else [record.get(col) for record in records]
                   for col in self._columns]
        scored = self.score_bins and probabilities is not None and np.shape(probabilities) == (n, self.classes)
        with self._lock:
            win = self._window
            win.count += n
            win.lat.append(latency_ms)
            if columns:
                win.blocks.append((columns, picked))
                win.pending += n
            at = len(win.answers)
            win.answers.extend(answers)
            if scored:
                win.scored_blocks.append(probabilities)  # type: ignore[arg-type]
            overdue = win.pending >= MAX_PENDING
        if overdue:
            self.compact()
        kept = win.given
        return None if kept is None else (kept.head, at)

    def record_feedback(self, correct: bool | None = None, abs_error: float | None = None,
                        about: AnswerWindow | None = None) -> None:
        """Ground truth for an earlier prediction: ``correct`` for classifiers, ``abs_error`` for regressors;
        ``about`` is the window that made the prediction (its release and time get the credit)."""
        with self._lock:
            self._window.tally.add(about, correct, abs_error)

    # off the hot path ----------------------------------------------------------------------------------
    def compact(self) -> None:
        """Bin what is pending into the open window's counts (bounded memory; cheap to call often)."""
        with self._lock:
            win = self._window
            pending = win.take_pending()
        self._bin_pending(win, pending)

    def _bin_pending(self, win: _Window, pending: tuple[Any, ...]) -> None:
        lat, rows, blocks, answers, scored, scored_blocks = pending
        with win.binning:
            if lat:
                self._add_latencies(win, lat)
            if scored or scored_blocks:  # one pass over everything pending: numpy's cost is per call
                matrices = [*([np.array(scored, dtype=np.float64)] if scored else []), *scored_blocks]
                probabilities = matrices[0] if len(matrices) == 1 else np.concatenate(matrices)
                win.scores += score_cells(probabilities, self.score_bins)
            if rows or blocks:
                self._add_rows(win, rows, blocks)
            if answers:
                self._add_answers(win, answers)

    def _pick(self, names: tuple[str, ...]) -> Any:
        """Where our numeric reference columns are in a feed matrix with columns ``names`` (None: not all are)."""
        if names not in self._picks:
            where = {name: i for i, name in enumerate(names)}
            pick: Any = None
            if all(col in where for col in self._numeric_names):
                at = [where[col] for col in self._numeric_names]
                pick = slice(None) if at == list(range(len(names))) else np.array(at, dtype=np.intp)
            self._picks[names] = pick
        return self._picks[names]

    def _add_rows(self, win: _Window, rows: list[Any], blocks: list[Any]) -> None:
        """Bin single rows' values and batches' columns: the numeric columns as one matrix, the others by text."""
        singles = ([rows] if len(self._columns) == 1 else list(zip(*rows, strict=True))) if rows else None
        accs = list(win.features.values())
        if self._matrix_binner is not None:
            parts = []
            if singles is not None:
                parts.append(np.column_stack([as_floats(singles[j]) for j in self._numeric_at]))
            for columns, picked in blocks:
                if picked is not None:
                    parts.append(picked[0][:, picked[1]])
                else:
                    parts.append(np.column_stack([as_floats(columns[j]) for j in self._numeric_at]))
            matrix = parts[0] if len(parts) == 1 else np.concatenate(parts)
            self._matrix_binner.count([accs[j] for j in self._numeric_at], matrix)
        for j in self._text_at:
            pieces = [] if singles is None else [singles[j]]
            pieces.extend(columns[j] for columns, _ in blocks)
            self._binners[j].count_texts(accs[j], pieces)

    def _add_answers(self, win: _Window, answers: list[Any]) -> None:
        binner, acc = self._prediction_binner, win.predictions
        if not binner.categorical:  # a regressor's values
            binner.count(acc, answers)
            return
        # few distinct labels: each is keyed once (1, 1.0 and True are equal dict keys, so their type goes along)
        kinds = set(map(type, answers))
        counted = Counter(answers) if len(kinds) == 1 else Counter(zip(map(type, answers), answers, strict=True))
        keys: Counter[Any] = Counter()
        for answer, n in counted.items():
            keys[_prediction_key(answer if len(kinds) == 1 else answer[1], self._regression)] += n
        binner.count_distinct(acc, keys.items())

    def _add_latencies(self, win: _Window, lat: list[float]) -> None:
        """Keep an unbiased sample of at most ``buffer`` latencies (reservoir sampling) and the exact maximum."""
        values = np.asarray(lat, dtype=np.float64)
        values = values[np.isfinite(values)]
        if not len(values):
            return
        win.max_latency = max(win.max_latency, float(values.max()))
        room = max(self._buffer - len(win.latencies), 0)
        win.latencies.extend(values[:room].tolist())
        seen = win.seen_latencies + min(room, len(values))
        rest = values[room:]
        win.seen_latencies = seen + len(rest)
        if len(rest):  # item number i (0-based) replaces a random slot with probability buffer / (i + 1)
            slots = (self._rng.random(len(rest)) * np.arange(seen + 1, seen + len(rest) + 1)).astype(np.int64)
            for slot, value in zip(slots.tolist(), rest.tolist(), strict=True):
                if slot < self._buffer:
                    win.latencies[slot] = value

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
        self._bin_pending(win, pending)
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
            start=iso_ms(win.start), end=iso_ms(max(end, win.start)), count=win.count, errors=dict(win.errors),
            latency_ms=latency, features={col: acc.freeze() for col, acc in win.features.items()},
            predictions=win.predictions.freeze(), feedback=win.tally.feedback(self._regression), dropped=dropped,
            epoch=epoch, feedback_for=win.tally.feedback_for(), scores=win.score_counts(self.score_bins),
        )

    def retire(self) -> None:
        """This recorder is replaced (after ``close_window``): its open window will never hold answers."""
        given = self._window.given
        if given is not None:
            given.closed = True

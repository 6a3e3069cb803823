"""What the agent answered, kept so that ground truth arriving later is scored against it and credited to the
release and the telemetry window of its prediction, even after a restart or a rollout.

The unit is a window: the telemetry recorder opens an ``AnswerWindow`` with every window it opens and appends
each answer it counts to it, under its own lock, so a prediction's id is the window's head plus the answer's
row (protocol/feedback.py) and costs the hot path one list append. A batch's answers go in with one
``extend``. Windows stay, oldest first, until more than ``capacity`` answers (or ``MAX_WINDOWS`` windows) are
held. The owner thread appends new answers to the feedback log (feedback_log.py) on every pass and trims; on
start the log is read back, so a label still finds a prediction made before the restart.

Threads: answers are appended by the recorder (any thread, under its lock); ``lookup`` runs on HTTP threads and
only reads (a dict lookup and a list index, atomic); windows are opened, closed, written and dropped by the
owner thread (``_lock`` guards the few places where two threads could open windows at once).
"""

import math
import threading
from typing import Any

from .errors import FeedbackError
from .feedback_log import AnswerRecord, FeedbackLog
from .protocol import FeedbackCredit, ProtocolError, iso_ms, parse_prediction_id, prediction_id_head

MAX_WINDOWS = 10_000
"""Windows kept at most: an agent with little traffic closes a window a minute with a handful of answers, and
each window costs memory whatever it holds (10 000 one-minute windows: about a week)."""

WindowKey = tuple[str, int, int]   # (model, version, window start in ms)


class AnswerWindow:
    """The answers of one telemetry window of one release; ``answers[i]`` is row ``first + i``."""

    __slots__ = ("answers", "closed", "first", "head", "model", "regression", "version", "window_ms", "written")

    def __init__(self, model: str, version: int, window_ms: int, regression: bool, first: int = 0,
                 answers: list[Any] | None = None, closed: bool = False) -> None:
        self.model, self.version, self.window_ms, self.regression = model, version, window_ms, regression
        self.head = prediction_id_head(model, version, window_ms)
        self.first = first
        self.answers: list[Any] = [] if answers is None else answers
        self.written = first + len(self.answers)   # rows below this are in the log
        self.closed = closed

    @property
    def key(self) -> WindowKey:
        return self.model, self.version, self.window_ms


class FeedbackMemory:
    def __init__(self, capacity: int, log: FeedbackLog | None = None) -> None:
        self.capacity = capacity
        self.log = log
        self._windows: dict[WindowKey, AnswerWindow] = {}   # oldest first
        self._unwritten: list[AnswerWindow] = []             # open windows, and closed ones not fully written yet
        self._held = 0                                       # answers in windows not in ``_unwritten``
        self._lock = threading.Lock()
        self._loaded = False

    def load(self) -> None:
        """Read the log back (once): the answers given before a restart, as closed windows."""
        if self._loaded:
            return
        self._loaded = True
        if self.log is None:
            return
        same: dict[Any, Any] = {}   # one object per distinct class label, not one per answer read
        for record in self.log.read():
            answers = list(record.answers) if record.regression else [same.setdefault(a, a) for a in record.answers]
            key = (record.model, record.version, record.window_ms)
            window = self._windows.get(key)
            if window is None:
                window = self._windows[key] = AnswerWindow(*key, record.regression, record.first, answers, True)
                self._held += len(answers)
                continue
            end = window.first + len(window.answers)
            if record.first > end:   # a gap (an unreadable record): keep the later part only
                self._held += len(answers) - len(window.answers)
                window.first, window.answers = record.first, answers
            else:
                tail = answers[end - record.first:]
                window.answers.extend(tail)
                self._held += len(tail)
            window.written = window.first + len(window.answers)
        self._trim()

    def open_window(self, model: str, version: int, start_s: float, regression: bool) -> AnswerWindow:
        """A window for the answers counted from ``start_s`` on. Its start in ms is unique among the windows of
        this release held here (one ms later when taken: two windows closed within a millisecond, or a clock that
        went back), so no two windows ever share ids."""
        with self._lock:
            window_ms = int(start_s * 1000)
            while (model, version, window_ms) in self._windows:
                window_ms += 1
            window = AnswerWindow(model, version, window_ms, regression)
            self._windows[window.key] = window
            self._unwritten.append(window)
            return window

    def lookup(self, prediction_id: Any) -> tuple[AnswerWindow, Any]:
        """The window of a prediction and what the model answered; FeedbackError for an id that is malformed,
        unknown, or older than what is kept."""
        try:
            ref = parse_prediction_id(prediction_id)
        except ProtocolError as exc:
            raise FeedbackError(str(exc)) from None
        window = self._windows.get((ref.model, ref.version, ref.window_ms))
        row = -1 if window is None else ref.row - window.first
        if window is None or not 0 <= row < len(window.answers):
            raise FeedbackError(f"prediction_id: unknown or expired prediction {prediction_id!r} (this agent keeps "
                                f"the answers of its last {self.capacity} predictions, across restarts)")
        return window, window.answers[row]

    def flush(self) -> None:
        """Owner thread: append what was answered since the last call to the log, then forget the oldest
        windows beyond the capacity. Closed windows that never answered anything are dropped at once."""
        records = []
        for window in self._unwritten:
            n = len(window.answers)   # read once: answers appended meanwhile go with the next call
            if window.first + n > window.written:
                records.append(AnswerRecord(window.model, window.version, window.window_ms, window.regression,
                                            window.written, window.answers[window.written - window.first:n]))
                window.written = window.first + n
        if records and self.log is not None:
            self.log.append(records)
        done = [w for w in self._unwritten if w.closed and w.written == w.first + len(w.answers)]
        if done:
            with self._lock:
                for window in done:
                    self._unwritten.remove(window)
                    if window.answers:
                        self._held += len(window.answers)
                    else:
                        self._windows.pop(window.key, None)
        self._trim()

    def _trim(self) -> None:
        open_answers = sum(len(w.answers) for w in self._unwritten)
        with self._lock:
            while self._windows and (self._held + open_answers > self.capacity or len(self._windows) > MAX_WINDOWS):
                oldest = next(iter(self._windows.values()))
                if oldest in self._unwritten:   # never forget a window still being filled or written
                    break
                del self._windows[oldest.key]
                self._held -= len(oldest.answers)

    def close(self) -> None:
        """Write what is left and sync the log (a clean stop loses nothing)."""
        self.flush()
        if self.log is not None:
            self.log.close()

    @property
    def held(self) -> int:
        """Answers kept now (in memory and, up to the last flush, in the log)."""
        return self._held + sum(len(w.answers) for w in self._unwritten)


MAX_CREDITS = 500
"""Original windows one telemetry window credits at most: past it the window closes early, so a burst of late
labels about many windows never makes a message over the protocol's size limit (~110 bytes a credit)."""


class FeedbackTally:
    """The labels received during one telemetry window, summed twice: as they arrived (``feedback``, what the
    window meant before 1.2) and per release and window of the predictions they are about (``feedback_for``).
    Called under the recorder's lock."""

    __slots__ = ("abs_error_sum", "correct", "credits", "labelled")

    def __init__(self) -> None:
        self.labelled = 0
        self.correct = 0
        self.abs_error_sum = 0.0
        self.credits: dict[WindowKey, list[Any]] = {}   # → [labelled, correct, abs error sum, its squares, regression?]

    def add(self, about: AnswerWindow | None, correct: bool | None, abs_error: float | None) -> None:
        if correct is None and (abs_error is None or not math.isfinite(abs_error)):
            return
        self.labelled += 1
        error = 0.0 if abs_error is None else abs(float(abs_error))
        self.correct += int(bool(correct))
        self.abs_error_sum += error
        if about is not None:
            sums = self.credits.get(about.key)
            if sums is None:
                sums = self.credits[about.key] = [0, 0, 0.0, 0.0, about.regression]
            sums[0] += 1
            sums[1] += int(bool(correct))
            sums[2] += error
            sums[3] += error * error

    def feedback(self, regression: bool) -> dict[str, float]:
        if not self.labelled:
            return {}
        if regression:
            return {"labelled": float(self.labelled), "mae": self.abs_error_sum / self.labelled}
        return {"labelled": float(self.labelled), "accuracy": self.correct / self.labelled}

    def feedback_for(self) -> tuple[FeedbackCredit, ...]:
        """The credits, oldest window first; each in the terms of its own release's task."""
        return tuple(
            FeedbackCredit(model, version, iso_ms(window_ms / 1000), int(n), correct=None if regression else int(ok),
                           abs_error_sum=total if regression else None,
                           abs_error_sq_sum=squares if regression else None)
            for (model, version, window_ms), (n, ok, total, squares, regression)
            in sorted(self.credits.items(), key=lambda kv: (kv[0][2], kv[0])))

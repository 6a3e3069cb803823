"""The agent: serves the current model, follows its desired model, reports what it runs.

Threads: paho's network thread only puts ``LinkEvent``s on the inbox (link.py); one *owner thread* reads the
inbox and does everything else — lifecycle steps, reporting, telemetry delivery. Callers (the Python API,
HTTP handler threads) only read ``self._runner``, which the owner thread swaps in one assignment.

On ``start`` the agent serves the persisted current model at once, broker or not (``installer.boot``).
"""

import dataclasses
import logging
import math
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Unpack

from . import __version__
from .config import AgentConfig
from .desired import DESIRED_FILE, DesiredGuard
from .errors import AgentError, FeedbackError, ModelError, NoModelError, VerificationError, short_reason
from .feedback import FeedbackMemory
from .feedback_log import FeedbackLog
from .http_api import HttpApi
from .inference import ModelRunner, Prediction, PredictionBatch
from .installer import Installer, boot
from .lifecycle import AgentState, LatencyWindow, Probation
from .link import Connected, Disconnected, LinkEvent, Message, MqttLink, Published
from .outbox import Outbox
from .ports import EventKind, StateChanges
from .protocol import AgentEvent, Desired, ProtocolError, ReleaseManifest, Reported, StepReports
from .store import ModelRef, ModelStore
from .telemetry_pump import TelemetryPump
from .uplink import EventCourier
from .verify import KeyRing

log = logging.getLogger(__name__)

_STOP = object()
BASELINE_EVERY = 64
"""Once the baseline window is full, one request in this many reads the CPU clock: two system calls that cost
as much as a small model's whole run on some virtual machines."""


class Agent:
    """One device's agent. ``start()`` then ``predict()``; ``stop()`` leaves cleanly."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.topics = config.topics
        self.device = config.device_id
        self.keyring = KeyRing.from_paths(config.public_keys)
        if not self.keyring.keys:
            log.warning("no public_keys configured: every release will be rejected as signed by an unknown key")
        self.store = ModelStore(config.data_dir)
        self.inbox: queue.Queue[Any] = queue.Queue()
        self.link = MqttLink(config, self.inbox)
        self.outbox = Outbox(self.store.path("outbox.sqlite"), config.outbox_max_windows)
        kept = config.feedback_max_predictions   # answers kept for feedback; the log holds the last half to all
        self._recent = FeedbackMemory(kept, FeedbackLog(self.store.path("feedback"), kept // 2))
        self.pump = TelemetryPump(self.outbox, self.link, self.topics, self.device,
                                  interval_s=config.telemetry_interval_s,
                                  max_predictions=config.telemetry_max_predictions, memory=self._recent)
        self.events = EventCourier(self.link, self.topics.device(self.device, "events"))
        self.latencies = LatencyWindow()
        self.installer = Installer(self, config=config, store=self.store, keyring=self.keyring, topics=self.topics,
                                   link=self.link, latencies=self.latencies)
        self.desired_guard = DesiredGuard(self.store.path(DESIRED_FILE), self.keyring,
                                          config.desired_signatures)
        self._desired_topic = self.topics.device(self.device, "desired")
        self._runner: ModelRunner | None = None
        self._state = AgentState()
        self._steps = StepReports(config.report_steps_after_s)
        self.desired: Desired | None = None
        self.refused_desired: Desired | None = None  # reported while refused, so a rollout sees whose it was
        self.probation: Probation | None = None
        self._calls = 0  # requests served, counted (racily) for sampling their CPU time
        self.lock = threading.Lock()  # guards the probation watcher and the runner swap (callers vs owner)
        self._thread: threading.Thread | None = None
        self._http: HttpApi | None = None

    # public API -----------------------------------------------------------------------------------
    @property
    def state(self) -> AgentState:
        return self._state

    @property
    def current(self) -> tuple[str, int] | None:
        runner = self._runner
        return None if runner is None else (runner.manifest.name, runner.manifest.version)

    @property
    def manifest(self) -> ReleaseManifest | None:
        runner = self._runner
        return None if runner is None else runner.manifest

    @property
    def connected(self) -> bool:
        return self.link.connected

    @property
    def http_address(self) -> tuple[str, int] | None:
        return None if self._http is None else self._http.address

    def load(self) -> "Agent":
        """Serve the persisted current model (verified again) — no broker needed. ``start`` calls it."""
        state, runner = boot(self.store, self.keyring, self.config.max_artifact_bytes)
        if state.phase == "probation" and state.current is not None:
            if self.installer.probation_applies(state.previous):
                self.probation = self.installer.new_probation(state.current, baseline_ms=None)
            else:
                state = dataclasses.replace(state, phase="serving")
        self._state, self._runner = state, runner
        self.store.write_state(state.to_json())
        self._recent.load()   # before the first window opens: its ids must not repeat those given before a restart
        self.pump.on_model_changed(None if runner is None else runner.manifest)
        return self

    def start(self) -> "Agent":
        self.load()
        bind = self.config.http_bind
        if bind is not None:
            self._http = HttpApi(self, *bind)
            self._http.start()
        self.link.subscribe(self._desired_topic)
        self.link.start()
        self._thread = threading.Thread(target=self._run, name=f"agent-{self.device}", daemon=True)
        self._thread.start()
        return self

    def stop(self, clean: bool = True) -> None:
        if self._thread is not None:
            self.inbox.put(_STOP)
            self._thread.join(timeout=10)
            self._thread = None
        if self._http is not None:
            self._http.stop()
            self._http = None
        try:
            self.pump.flush()
        except Exception:
            log.exception("telemetry flush at shutdown failed")
        self._recent.close()
        self.link.stop(clean=clean)
        self.outbox.close()

    def predict(self, record: Mapping[str, Any]) -> Prediction:
        """One row through the serving model. The hot path: one clock read on each side of the model, appends
        to the telemetry window under one short lock; the CPU clock only while a probation or the baseline
        still wants samples (``_wants_cost``)."""
        runner = self._runner
        if runner is None:
            raise NoModelError("no model is installed yet")
        if self.probation is None:  # _wants_cost, inlined: this is the hottest path there is
            self._calls = calls = self._calls + 1
            timed = not calls % BASELINE_EVERY or not self.latencies.full
        else:
            timed = self._wants_cost()
        start = time.perf_counter()
        cpu = time.thread_time() if timed else 0.0
        try:
            prediction = runner.predict(record)
        except AgentError as exc:
            self._failed(runner, exc, (time.perf_counter() - start) * 1e3)
            raise
        wall_ms = (time.perf_counter() - start) * 1e3
        if timed:
            self._judge(runner, (time.thread_time() - cpu) * 1e3)
        recorder = self.pump.recorder
        if recorder is not None:  # names the prediction after its release and telemetry window (feedback.py)
            recorder.record_prediction(record, prediction, wall_ms)
        return prediction

    def predict_many(self, records: Sequence[Mapping[str, Any]]) -> Sequence[Prediction]:
        """A batch in one onnxruntime call and one request for the bookkeeping: telemetry counts its rows and
        takes one latency sample (its time per row), probation judges it by its CPU time per row."""
        runner = self._runner
        if runner is None:
            raise NoModelError("no model is installed yet")
        timed = self._wants_cost()
        start = time.perf_counter()
        cpu = time.thread_time() if timed else 0.0
        try:
            predictions = runner.predict_many(records)
        except AgentError as exc:
            self._failed(runner, exc, (time.perf_counter() - start) * 1e3)
            raise
        if not predictions:
            return predictions
        assert isinstance(predictions, PredictionBatch)  # only an empty batch comes as a plain list
        rows = len(predictions)
        if timed:
            self._judge(runner, (time.thread_time() - cpu) * 1e3 / rows)
        per_row = (time.perf_counter() - start) * 1e3 / rows
        given = self.pump.record_many(records, predictions.answers, per_row, predictions.columns, predictions.matrix,
                                      predictions.numeric)
        if given is not None:
            predictions.key, predictions.base = given
        return predictions

    def feedback(self, prediction_id: str, truth: Any) -> None:
        """Ground truth for an earlier prediction: its label (classifier) or value (regressor). It is credited
        to the release and telemetry window that made the prediction (the next window reports it)."""
        window, value = self._recent.lookup(prediction_id)
        if window.regression:
            if isinstance(truth, bool) or not isinstance(truth, int | float) or not math.isfinite(truth):
                raise FeedbackError("value: must be a finite number for a regression model")
            self.pump.record_feedback(abs_error=abs(float(value) - float(truth)), about=window)
        else:
            if truth is None or isinstance(truth, dict | list):
                raise FeedbackError("label: must be a class label")
            self.pump.record_feedback(correct=str(truth) == str(value), about=window)

    # bookkeeping per prediction ---------------------------------------------------------------------
    def _wants_cost(self) -> bool:
        """Whether this request's CPU time is wanted: every request while a probation still needs samples or
        the baseline window is filling, then one in BASELINE_EVERY (a sample of the serving model's recent cost
        is all a successor's probation compares with). The count is racy across threads: only the sampling rate
        depends on it."""
        probation = self.probation
        if probation is not None:
            return probation.count < probation.max_requests
        self._calls = calls = self._calls + 1
        return not calls % BASELINE_EVERY or not self.latencies.full

    def _judge(self, runner: ModelRunner, cost_ms: float) -> None:
        """One request's CPU time per row: a sample for the model on probation, else for the baseline."""
        probation = self.probation
        if probation is None:
            self.latencies.add(cost_ms)  # deque append: atomic, no lock needed
        elif probation.ref.model == runner.manifest.name and probation.ref.version == runner.manifest.version:
            with self.lock:
                probation.record(cost_ms, False)

    def _failed(self, runner: ModelRunner, exc: AgentError, latency_ms: float) -> None:
        """An InputError is the caller's ("input", the bad record is not binned); a ModelError the model's."""
        if isinstance(exc, ModelError):
            self.pump.record(None, None, latency_ms, "model")
            probation = self.probation
            if probation is not None and probation.ref.model == runner.manifest.name \
                    and probation.ref.version == runner.manifest.version:
                with self.lock:
                    probation.record(None, True)
        else:
            self.pump.record(None, None, latency_ms, "input")

    # owner thread ---------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            try:
                event = self.inbox.get(timeout=0.1)
            except queue.Empty:
                event = None
            if event is _STOP:
                return
            try:
                if event is not None:
                    self.handle_event(event)
                self.tick()
            except Exception:  # the owner thread must survive anything a message can cause
                log.exception("agent owner loop: unexpected error (continuing)")

    def handle_event(self, event: LinkEvent) -> None:
        if isinstance(event, Message):
            self.handle_message(event.topic, event.payload)
        elif isinstance(event, Published):  # a window or an event (kept until a subscriber took it), or neither
            if not self.pump.on_published(event.mid, event.reason, event.no_subscribers):
                self.events.on_published(event.mid, event.reason, event.no_subscribers)
        elif isinstance(event, Connected):
            self.report()
            self.pump.on_connected()
        elif isinstance(event, Disconnected):
            log.info("broker connection lost: %s", event.reason)

    def handle_message(self, topic: str, payload: bytes) -> None:
        """Route one received message. Anything malformed is logged and reported, never raised."""
        if topic == self._desired_topic:
            self._on_desired(payload)
        else:
            self.installer.on_release_message(topic, payload)

    def _on_desired(self, payload: bytes) -> None:
        """Obey a desired state only once ``desired_guard`` admits it (signed, newer, unexpired: desired.py); a
        refused one is reported ``rejected`` and the device keeps serving what it runs. An empty payload (the
        retained message deleted) means "keep serving what runs", like a signed clear: it cannot make a device
        install, downgrade or roll back anything, and whoever may publish there can delete the retained message
        anyway (docs/agent-operations.md)."""
        if not payload:
            log.info("desired state cleared: keep serving the current model")
            self.desired = self.refused_desired = None
            self.installer.reconcile()
            return
        desired = None
        try:
            desired = Desired.parse(payload)
            if desired.device != self.device:
                raise ProtocolError(f"names device {desired.device!r}, this is {self.device!r}", field="device")
            self.desired_guard.admit(desired, payload)
        except (ProtocolError, VerificationError) as exc:
            reason = short_reason(f"desired state rejected: {exc}")
            log.error(reason)
            self.refused_desired = desired
            self.transition(phase="rejected", target=None, last_error=reason)
            return
        self.refused_desired = None
        self.desired = None if desired.clears else desired
        self.installer.reconcile()

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.installer.tick(now)
        held = self._steps.due(now)
        if held is not None:
            self._publish_report(held)
        self.pump.tick()
        self.events.tick()
        self._recent.flush()

    # state, reporting -----------------------------------------------------------------------------
    def transition(self, **changes: Unpack[StateChanges]) -> AgentState:
        """Persist the new state (atomically, before anything acts on it), then report it."""
        error = changes.get("last_error")
        if error:
            changes["last_error"] = short_reason(error)
        state = dataclasses.replace(self._state, **changes)
        self.store.write_state(state.to_json())
        self._state = state
        self.report()
        return state

    def persist(self, **changes: Unpack[StateChanges]) -> None:
        """Write an intent to disk without adopting or reporting it: after a crash, start-up (``boot``) acts on
        it; without one, the next ``transition`` replaces it."""
        self.store.write_state(dataclasses.replace(self._state, **changes).to_json())

    def forget_refusal(self) -> None:
        """The planner lifted the refusal (the desired state names another release); not persisted on its own:
        the next transition writes it."""
        self._state = dataclasses.replace(self._state, refused=None)

    def watch(self, probation: Probation | None) -> None:
        """Judge the serving model's requests by ``probation`` from the next one on (None: stop judging)."""
        with self.lock:
            self.probation = probation

    def swap_runner(self, runner: ModelRunner | None) -> None:
        """Serve ``runner`` from the next call on; its telemetry starts a fresh window."""
        with self.lock:
            self._runner = runner
        self.pump.on_model_changed(None if runner is None else runner.manifest)

    def report(self) -> None:
        """Report the state of now: a settled state at once, a step of a young update only once the update
        has lasted ``report_steps_after_s`` (``tick`` sends it then; protocol/steps.py says why)."""
        state, desired = self._state, self.desired
        if self.refused_desired is not None and state.phase == "rejected":
            desired = self.refused_desired  # the desired state refused (whose version and rollout id it named)
        reported = Reported(
            device=self.device, state=state.phase, model=state.current.model if state.current else None,
            version=state.current.version if state.current else None,
            desired_version=None if desired is None else desired.version,
            rollout_id=None if desired is None else desired.rollout_id, last_error=state.last_error,
            agent_version=__version__, labels=self.config.labels)
        now_due = self._steps.offer(reported, time.monotonic())
        if now_due is not None:
            self._publish_report(now_due)

    def _publish_report(self, reported: Reported) -> None:
        # a transient state goes at QoS 0 and is dropped while offline; reconnecting reports the state of then
        self.link.publish(self.topics.device(self.device, "reported"), reported.to_bytes(), qos=reported.qos,
                          retain=True)

    def emit(self, event: EventKind, ref: ModelRef, reason: str | None = None) -> None:
        message = AgentEvent(device=self.device, event=event, model=ref.model, version=ref.version,
                             reason=None if reason is None else short_reason(reason),
                             rollout_id=None if self.desired is None else self.desired.rollout_id)
        self.events.publish(message.to_bytes())

"""The model lifecycle as an explicit state machine: pure planning here, execution in installer.py.

``plan(state, desired, ...)`` makes every decision that moves the device from what it runs to what it should
run (balena's reconcile idea): install, abandon an install, stop judging a superseded probation, clear a stale
error, or just report. The installer runs one executor per planned step and persists the state *before* each
transition, so ``resume`` can map any interrupted phase to a safe one after a crash (mender's idea):

============================  ===========================================================================
persisted phase               on restart
============================  ===========================================================================
idle / serving / rejected     unchanged: serve the current pointer's model
fetching / verifying /        serving: the new release was never activated; the desired state is retried
self_testing                  when the (retained) desired message comes back
activating                    whatever the current pointer names, *after* verifying that model's bytes
                              against its signed manifest (if that fails, fall back to previous); when it
                              names the release being activated, that release goes on probation
probation                     probation restarts with an empty window (the old samples died with the process)
rolling_back (on disk only)   the rollback is finished: the pointer is moved back to the previous model if
                              the crash came before it moved, then rolled_back (``repair_rollback``)
rolled_back                   unchanged; a pointer still naming the refused release (a crash of an older
                              agent between its report and its pointer write) is repaired the same way
============================  ===========================================================================
"""

import math
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Literal, get_args

from .errors import StoreError, VerificationError
from .inference import ModelRunner
from .protocol import Desired, ReleaseManifest
from .store import ModelRef, Pointer

Phase = Literal["idle", "serving", "fetching", "verifying", "self_testing", "activating", "probation",
                "rejected", "rolling_back", "rolled_back"]
InstallKind = Literal["fetch", "verify", "self_test", "activate", "probation"]
DecisionKind = Literal["forget_refusal", "keep_installing", "abandon", "stop_probation", "clear_error", "report"]
StepKind = InstallKind | DecisionKind
INSTALL_STEPS: tuple[InstallKind, ...] = ("fetch", "verify", "self_test", "activate", "probation")


@dataclass(frozen=True)
class Step:
    """One planned action. ``ref`` is the release it is about (None only for clearing the error of a device
    that serves nothing); ``phase`` is the phase an ``abandon`` or a ``clear_error`` settles in."""

    kind: StepKind
    ref: ModelRef | None = None
    rollout_id: str | None = None
    phase: Phase | None = None


@dataclass(frozen=True)
class AgentState:
    """What the device runs and what it is doing; persisted as JSON in the data dir before each change.

    ``target`` is the release being installed (or just rejected / rolled back). ``refused`` is the last
    release rejected or rolled back: it is not tried again until the desired state names something else.
    """

    phase: Phase = "idle"
    current: ModelRef | None = None
    previous: ModelRef | None = None
    target: ModelRef | None = None
    rollout_id: str | None = None
    last_error: str | None = None
    refused: ModelRef | None = None

    def to_json(self) -> dict[str, Any]:
        def ref(r: ModelRef | None) -> dict[str, Any] | None:
            return None if r is None else r.to_json()
        return {"phase": self.phase, "current": ref(self.current), "previous": ref(self.previous),
                "target": ref(self.target), "rollout_id": self.rollout_id, "last_error": self.last_error,
                "refused": ref(self.refused)}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "AgentState":
        """Best effort: a state file we cannot read gives the default state (the pointer is the truth)."""
        try:
            phase = obj.get("phase", "idle")
            return cls(phase=phase if phase in PHASES else "idle",
                       current=ModelRef.from_json(obj.get("current")),
                       previous=ModelRef.from_json(obj.get("previous")),
                       target=ModelRef.from_json(obj.get("target")),
                       rollout_id=obj.get("rollout_id") if isinstance(obj.get("rollout_id"), str) else None,
                       last_error=obj.get("last_error") if isinstance(obj.get("last_error"), str) else None,
                       refused=ModelRef.from_json(obj.get("refused")))
        except (StoreError, TypeError, AttributeError):
            return cls()


PHASES: tuple[str, ...] = get_args(Phase)
RESUME: dict[Phase, Phase] = {
    "idle": "idle", "serving": "serving", "rejected": "rejected", "rolled_back": "rolled_back",
    "fetching": "serving", "verifying": "serving", "self_testing": "serving",
    "activating": "serving", "probation": "probation", "rolling_back": "rolled_back",
}
"""``rolling_back`` is written to disk as the intent of a rollback and never reported: a restart finishes it."""


def resume(persisted: AgentState, loaded: Pointer) -> AgentState:
    """The safe state after a restart. ``loaded`` is the pointer as actually loaded: its ``current`` is the
    model that verified and now serves (None when nothing did), its ``previous`` the fallback kept on disk."""
    phase = RESUME[persisted.phase]
    serving = loaded.current
    if serving is None:
        phase = "idle" if phase in ("serving", "probation") else phase
    elif phase == "idle" or (phase == "probation" and serving != persisted.current):
        phase = "serving"  # the pointer names another model than the one on probation (fallback, crash)
    elif persisted.phase == "activating" and loaded.previous is not None and serving == (
            persisted.target if persisted.target is not None else persisted.current):
        phase = "probation"  # the crash came after the pointer switch: the new model must not skip probation
    interrupted = persisted.phase in ("fetching", "verifying", "self_testing", "activating")
    return replace(persisted, phase=phase, current=serving, previous=loaded.previous,
                   target=None if interrupted else persisted.target)


def rollback_pointer(persisted: AgentState, pointer: Pointer) -> Pointer | None:
    """The pointer that finishes a rollback a crash interrupted, or None when there is nothing to finish.

    A rollback persists its intent (``rolling_back``, naming the failed release as ``refused``) before it moves
    the pointer back; a pointer that still names the refused release after a restart means the crash came in
    between. An agent of an older version reported ``rolled_back`` before moving the pointer: the same repair.
    """
    failed = persisted.refused
    if persisted.phase not in ("rolling_back", "rolled_back") or failed is None or pointer.current != failed:
        return None
    if persisted.previous is None or persisted.previous == failed:
        return None
    return Pointer(persisted.previous, None)


def desired_ref(desired: Desired | None) -> ModelRef | None:
    """The release ``desired`` names; None for none (or a clearing one, which names no release)."""
    if desired is None or desired.model is None or desired.version is None:
        return None
    return ModelRef(desired.model, desired.version)


def plan(current: AgentState, desired: Desired | None, *, installing: ModelRef | None = None,
         watching: ModelRef | None = None) -> list[Step]:
    """Every decision from ``current`` to ``desired``, as steps — pure, so tests assert on them without broker
    or device. ``installing`` is the release an unfinished install is working on, ``watching`` the one on
    probation. In order:

    - ``forget_refusal``: the desired state names another release than the refused one (it may be retried).
    - ``keep_installing``, and nothing else: the desired release is the one being installed.
    - ``abandon``: an install is under way and the desired state no longer names it; it settles in ``phase``.
    - ``stop_probation`` + fetch → verify → self_test → activate → probation: a desired release that does not
      run and was not refused (since the last re-targeting). A newer release supersedes the one on probation.
    - ``clear_error``: what runs is what is wanted, yet a failure (rejected, rolled back, an error) is still
      shown: it is history now, the device settles in ``phase``.
    - ``report``: nothing else reports, e.g. a new rollout id for the version already running, or a desired
      state naming the refused release. An empty plan means the same: nothing to change, report what runs.
    """
    want = desired_ref(desired)
    rollout = None if desired is None else desired.rollout_id
    state = with_desired(current, desired)
    steps = [] if state.refused == current.refused else [Step("forget_refusal", current.refused)]
    if want is not None and want not in (state.current, state.refused):
        if installing == want:
            return [*steps, Step("keep_installing", want, rollout)]
        if installing is not None:
            steps.append(Step("abandon", installing, phase=_resting(state)))
        if watching is not None:
            steps.append(Step("stop_probation", watching))
        return steps + [Step(kind, want, rollout) for kind in INSTALL_STEPS]
    if installing is not None:
        steps.append(Step("abandon", installing, phase=_resting(state)))
        state = replace(state, phase=_resting(state), target=None)
    failed = state.phase in ("rejected", "rolled_back")
    if state.refused is None and want in (None, state.current) and (failed or state.last_error is not None):
        return [*steps, Step("clear_error", state.current, phase=_resting(state) if failed else state.phase)]
    return [*steps, Step("report")] if steps else []


def _resting(state: AgentState) -> Phase:
    """Where a device settles when no install is under way: serving what it runs, or idle."""
    return "serving" if state.current else "idle"


def with_desired(state: AgentState, desired: Desired | None) -> AgentState:
    """A new desired state forgets an earlier refusal of a *different* release (it may be retried later)."""
    want = desired_ref(desired)
    if state.refused is not None and want != state.refused:
        return replace(state, refused=None)
    return state


# self-test ----------------------------------------------------------------------------------------------
def self_test(manifest: ReleaseManifest, runner: ModelRunner) -> None:
    """Run the golden samples through the same code path as serving; labels exactly, numbers within
    ``golden.tolerance``. Any disagreement rejects the release (VerificationError)."""
    golden = manifest.golden
    if golden.rows == 0:
        raise VerificationError("golden samples are empty: the release cannot be self-tested")
    columns = list(golden.inputs)
    records = [{col: golden.inputs[col][i] for col in columns} for i in range(golden.rows)]
    try:
        predictions = runner.predict_many(records)
    except Exception as exc:
        raise VerificationError(f"golden samples failed to run: {exc}") from exc
    tol = golden.tolerance
    if manifest.outputs.task == "regression":
        _compare(golden.values, [p.value for p in predictions], tol, "value")
        return
    if golden.labels is None or golden.probabilities is None:
        raise VerificationError("golden samples of a classifier need labels and probabilities")
    for i, (want, pred) in enumerate(zip(golden.labels, predictions, strict=False)):
        if str(want) != str(pred.label):
            raise VerificationError(f"golden sample {i}: label {pred.label!r} differs from expected {want!r}")
    got = [list((p.probabilities or {}).values()) for p in predictions]
    for i, (want_row, got_row) in enumerate(zip(golden.probabilities, got, strict=False)):
        _compare(want_row, got_row, tol, f"probabilities of sample {i}")


def _compare(want: list[float] | None, got: list[Any], tol: float, what: str) -> None:
    if want is None or len(want) != len(got):
        raise VerificationError(f"golden {what}: expected {0 if want is None else len(want)} values, got {len(got)}")
    for i, (w, g) in enumerate(zip(want, got, strict=True)):
        if g is None or not math.isfinite(g) or abs(w - g) > tol:
            raise VerificationError(f"golden {what}[{i}]: {g!r} differs from {w!r} by more than {tol}")


# probation ----------------------------------------------------------------------------------------------
LATENCY_MIN_SAMPLES = 20
"""A latency verdict (and a baseline) needs at least this many requests, whatever ``min_requests`` says: the
median of fewer is decided by a cold first call or one page fault."""


@dataclass
class Probation:
    """Watches a freshly activated model: one sample per request, so a batch of a thousand rows counts once
    (its cost per row) instead of outvoting every request around it.

    Latency is judged on the CPU time a request spent on its own thread (``time.thread_time``), not on the
    wall clock. On a device whose cores are busy with other work, wall time grows with the scheduler's queue,
    not with the model, and a verdict that reads it rolls healthy models back on a busy afternoon;
    onnxruntime runs a one-thread session on the caller's thread, so the thread's CPU time is the model's own
    cost. The *median* is compared, not a tail quantile: the tail of a few dozen samples is one or two
    samples, which a page fault decides. Below ``latency_floor_ms`` nothing is a breach: microseconds of
    difference matter to nobody, and a factor of a tiny baseline is mostly noise.

    It fails once at least ``min_requests`` requests were seen and the model-error rate exceeds
    ``max_error_rate``, or (with a baseline, over at least LATENCY_MIN_SAMPLES requests) the median cost per
    row exceeds ``max(baseline_ms × max_latency_factor, latency_floor_ms)``. It passes after ``duration_s``
    or ``max_requests`` requests.
    """

    ref: ModelRef
    started: float
    duration_s: float
    min_requests: int
    max_error_rate: float
    max_latency_factor: float
    baseline_ms: float | None
    latency_floor_ms: float = 1.0
    max_requests: int = 1000
    costs: list[float] = field(default_factory=list)
    errors: int = 0

    def record(self, cost_ms: float | None, error: bool) -> None:
        """One request: its CPU time per row in ms, or ``error`` when the model failed it."""
        if error:
            self.errors += 1
        elif cost_ms is not None:
            self.costs.append(cost_ms)

    @property
    def count(self) -> int:
        return len(self.costs) + self.errors

    def limit_ms(self) -> float | None:
        """The median cost per row above which the model fails, or None without a baseline."""
        if self.baseline_ms is None:
            return None
        return max(self.baseline_ms * self.max_latency_factor, self.latency_floor_ms)

    def verdict(self, now: float) -> Literal["pass", "fail", "wait"] | str:
        """"pass", "wait", or the reason of a breach."""
        n = self.count
        if n >= max(self.min_requests, 1):
            rate = self.errors / n
            if rate > self.max_error_rate:
                return f"error rate {rate:.1%} over {n} requests exceeds {self.max_error_rate:.1%}"
            limit = self.limit_ms()
            if limit is not None and len(self.costs) >= max(self.min_requests, LATENCY_MIN_SAMPLES):
                median = percentile(self.costs, 50)
                if median is not None and median > limit:
                    return (f"median CPU time per row {median:.3f} ms over {len(self.costs)} requests exceeds "
                            f"{limit:.3f} ms (the previous model's {self.baseline_ms:.3f} ms × "
                            f"{self.max_latency_factor:g}, at least {self.latency_floor_ms:g} ms)")
        if now - self.started >= self.duration_s or n >= self.max_requests:
            return "pass"
        return "wait"


class LatencyWindow:
    """CPU time per row of the serving model's recent requests: the baseline a successor is judged against."""

    def __init__(self, size: int = 1000) -> None:
        self.values: deque[float] = deque(maxlen=size)
        self.full = False  # holds ``size`` samples (read on every request: an attribute, not a property)

    def add(self, cost_ms: float) -> None:
        self.values.append(cost_ms)
        if not self.full:
            self.full = len(self.values) == self.values.maxlen

    def clear(self) -> None:
        self.values.clear()
        self.full = False

    def baseline(self, min_count: int) -> float | None:
        """The median, once enough requests were seen to make it more than noise."""
        if len(self.values) < max(min_count, LATENCY_MIN_SAMPLES):
            return None
        return percentile(list(self.values), 50)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]

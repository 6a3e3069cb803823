"""The model lifecycle as an explicit state machine: pure planning here, execution in agent.py.

``plan(state, desired)`` returns the steps that move the device from what it runs to what it should run
(balena's reconcile idea); the agent runs one executor per step and persists the state *before* each
transition, so ``resume`` can map any interrupted phase to a safe one after a crash (mender's idea):

============================  ===========================================================================
persisted phase               on restart
============================  ===========================================================================
idle / serving / rejected /   unchanged: serve the current pointer's model
rolled_back
fetching / verifying /        serving: the new release was never activated; the desired state is retried
self_testing                  when the (retained) desired message comes back
activating                    serving whatever the current pointer names, *after* verifying that model's
                              bytes against its signed manifest; if that fails, fall back to previous
probation                     probation restarts with an empty window (the old samples died with the process)
============================  ===========================================================================
"""

import math
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from .errors import StoreError, VerificationError
from .inference import ModelRunner
from .protocol import Desired, ReleaseManifest
from .store import ModelRef, Pointer

Phase = Literal["idle", "serving", "fetching", "verifying", "self_testing", "activating", "probation",
                "rejected", "rolled_back"]
StepKind = Literal["fetch", "verify", "self_test", "activate", "probation"]
INSTALL_STEPS: tuple[StepKind, ...] = ("fetch", "verify", "self_test", "activate", "probation")


@dataclass(frozen=True)
class Step:
    kind: StepKind
    ref: ModelRef
    rollout_id: str | None = None


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


PHASES: tuple[str, ...] = Phase.__args__  # type: ignore[attr-defined]
RESUME: dict[str, str] = {
    "idle": "idle", "serving": "serving", "rejected": "rejected", "rolled_back": "rolled_back",
    "fetching": "serving", "verifying": "serving", "self_testing": "serving",
    "activating": "serving", "probation": "probation",
}


def resume(persisted: AgentState, loaded: Pointer) -> AgentState:
    """The safe state after a restart. ``loaded`` is the pointer as actually loaded: its ``current`` is the
    model that verified and now serves (None when nothing did), its ``previous`` the fallback kept on disk."""
    phase = RESUME[persisted.phase]
    serving = loaded.current
    if serving is None:
        phase = "idle" if phase in ("serving", "probation") else phase
    elif phase == "idle" or (phase == "probation" and serving != persisted.current):
        phase = "serving"  # the pointer names another model than the one on probation (fallback, crash)
    interrupted = persisted.phase in ("fetching", "verifying", "self_testing", "activating")
    return replace(persisted, phase=phase, current=serving, previous=loaded.previous,  # type: ignore[arg-type]
                   target=None if interrupted else persisted.target)


def desired_ref(desired: Desired | None) -> ModelRef | None:
    return None if desired is None else ModelRef(desired.model, desired.version)


def plan(current: AgentState, desired: Desired | None) -> list[Step]:
    """The steps from ``current`` to ``desired`` — pure, so tests assert on it without broker or device.

    No desired state (cleared or never set) keeps serving whatever runs. A desired release that already
    runs, or that this device refused (rejected / rolled back) and has not been re-targeted since, needs
    nothing. Otherwise: fetch → verify → self_test → activate → probation.
    """
    want = desired_ref(desired)
    if want is None or want == current.current or want == current.refused:
        return []
    rollout = desired.rollout_id if desired is not None else None
    return [Step(kind, want, rollout) for kind in INSTALL_STEPS]


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
@dataclass
class Probation:
    """Watches a freshly activated model. It passes after ``duration_s`` (or ``max_predictions`` judged
    predictions); it fails once at least ``min_predictions`` were seen and the model-error rate exceeds
    ``max_error_rate`` or its p95 latency exceeds ``baseline_p95_ms × max_latency_factor``."""

    ref: ModelRef
    started: float
    duration_s: float
    min_predictions: int
    max_error_rate: float
    max_latency_factor: float
    baseline_p95_ms: float | None
    max_predictions: int = 1000
    latencies: list[float] = field(default_factory=list)
    errors: int = 0

    def record(self, latency_ms: float | None, error: bool) -> None:
        if error:
            self.errors += 1
        elif latency_ms is not None:
            self.latencies.append(latency_ms)

    @property
    def count(self) -> int:
        return len(self.latencies) + self.errors

    def verdict(self, now: float) -> Literal["pass", "fail", "wait"] | str:
        """"pass", "wait", or the reason of a breach."""
        n = self.count
        if n >= max(self.min_predictions, 1):
            rate = self.errors / n
            if rate > self.max_error_rate:
                return f"error rate {rate:.1%} over {n} predictions exceeds {self.max_error_rate:.1%}"
            p95 = percentile(self.latencies, 95)
            limit = None if self.baseline_p95_ms is None else self.baseline_p95_ms * self.max_latency_factor
            if limit is not None and p95 is not None and p95 > limit:
                return f"p95 latency {p95:.3f} ms exceeds {limit:.3f} ms (previous model's p95 × factor)"
        if now - self.started >= self.duration_s or n >= self.max_predictions:
            return "pass"
        return "wait"


class LatencyWindow:
    """Recent latencies of the serving model: the baseline a successor's probation is judged against."""

    def __init__(self, size: int = 1000) -> None:
        self.values: deque[float] = deque(maxlen=size)

    def add(self, latency_ms: float) -> None:
        self.values.append(latency_ms)

    def p95(self, min_count: int) -> float | None:
        return percentile(list(self.values), 95) if len(self.values) >= max(min_count, 1) else None


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def monotonic() -> float:
    return time.monotonic()

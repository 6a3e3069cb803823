"""What the installer and the HTTP API need from the agent: two small typed ports instead of the whole ``Agent``.

``Agent`` satisfies both structurally (nothing here imports agent.py), so the modules that drive it depend on a
few named operations — persist-and-report a state change, emit an event, swap the serving model — and the
import graph among the agent's modules has no cycle: agent → installer → ports, agent → http_api → ports.
A test can hand either one a small stand-in object.
"""

from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol, TypedDict, Unpack

from .config import AgentConfig
from .inference import ModelRunner, Prediction
from .lifecycle import AgentState, Phase, Probation
from .protocol import Desired, ReleaseManifest
from .store import ModelRef

EventKind = Literal["installed", "rejected", "rolled_back"]
"""The agent events an installer emits (``protocol.EVENT_KINDS``)."""


class StateChanges(TypedDict, total=False):
    """The fields of ``AgentState`` a transition may change; ``rollout_id`` belongs to the desired state."""

    phase: Phase
    current: ModelRef | None
    previous: ModelRef | None
    target: ModelRef | None
    refused: ModelRef | None
    last_error: str | None


class InstallerPort(Protocol):
    """The agent as its installer sees it: the lifecycle state, the desired state, reporting, and serving."""

    @property
    def state(self) -> AgentState: ...

    @property
    def desired(self) -> Desired | None: ...

    @property
    def probation(self) -> Probation | None: ...

    def transition(self, **changes: Unpack[StateChanges]) -> AgentState:
        """Persist the changed state (before anything acts on it), adopt it, report it."""
        ...

    def persist(self, **changes: Unpack[StateChanges]) -> None:
        """Write an intent to disk without adopting or reporting it (start-up finishes it after a crash)."""
        ...

    def forget_refusal(self) -> None:
        """Forget the refused release in memory (the next transition persists it)."""
        ...

    def report(self) -> None: ...

    def emit(self, event: EventKind, ref: ModelRef, reason: str | None = None) -> None: ...

    def swap_runner(self, runner: ModelRunner | None) -> None:
        """Serve ``runner`` from the next call on."""
        ...

    def watch(self, probation: Probation | None) -> None:
        """Judge the serving model's requests by ``probation`` from the next one on (None: stop judging)."""
        ...


class ServingPort(Protocol):
    """The agent as the HTTP API sees it: what serves, predictions and feedback, and the health it reports."""

    @property
    def config(self) -> AgentConfig: ...

    @property
    def current(self) -> tuple[str, int] | None: ...

    @property
    def manifest(self) -> ReleaseManifest | None: ...

    @property
    def state(self) -> AgentState: ...

    @property
    def connected(self) -> bool: ...

    def predict(self, record: Mapping[str, Any]) -> Prediction: ...

    def predict_many(self, records: Sequence[Mapping[str, Any]]) -> Sequence[Prediction]: ...

    def feedback(self, prediction_id: str, truth: Any) -> None: ...

"""The planner's decisions, one row each: (what the device runs, what is desired, what is under way) → steps.

No broker, no device: ``plan`` is pure. test_lifecycle_plan.py covers the install steps themselves and the
resume table; here are the decisions that used to live in the installer (abandon, clear, forget, report).
"""

import pytest

from edge_agent.lifecycle import INSTALL_STEPS, AgentState, Step, plan
from edge_agent.protocol import Desired
from edge_agent.store import ModelRef

pytestmark = pytest.mark.unit

V1, V2, V3 = ModelRef("churn", 1), ModelRef("churn", 2), ModelRef("churn", 3)


def desired(ref: ModelRef | None, rollout: str | None = "r1") -> Desired | None:
    return None if ref is None else Desired(device="d1", model=ref.model, version=ref.version, rollout_id=rollout)


def install(ref: ModelRef, rollout: str | None = "r1") -> list[Step]:
    return [Step(kind, ref, rollout) for kind in INSTALL_STEPS]


RETRYING = "fetch of churn@2 timed out after 30s; retrying in 4s"

# (name, current state, desired release, installing, watching, expected steps)
ROWS: list[tuple[str, AgentState, ModelRef | None, ModelRef | None, ModelRef | None, list[Step]]] = [
    ("serving and nothing desired: report",
     AgentState("serving", current=V1), None, None, None, []),
    ("the running version desired again (a new rollout id): report",
     AgentState("serving", current=V1), V1, None, None, []),
    ("a new release: install it",
     AgentState("serving", current=V1), V2, None, None, install(V2)),
    ("the release being installed desired again: keep installing, nothing else",
     AgentState("fetching", current=V1, target=V2), V2, V2, None, [Step("keep_installing", V2, "r1")]),
    ("another release while installing: abandon, then install the new one",
     AgentState("fetching", current=V1, target=V2), V3, V2, None,
     [Step("abandon", V2, phase="serving"), *install(V3)]),
    ("desired cleared while installing on an empty device: abandon to idle and report",
     AgentState("fetching", target=V2), None, V2, None, [Step("abandon", V2, phase="idle"), Step("report")]),
    ("back to the running version while a fetch retries: abandon and clear the retry's error",
     AgentState("fetching", current=V1, target=V2, last_error=RETRYING), V1, V2, None,
     [Step("abandon", V2, phase="serving"), Step("clear_error", V1, phase="serving")]),
    ("the refused release while installing another: abandon and report (it stays refused)",
     AgentState("fetching", current=V1, target=V2, refused=V3), V3, V2, None,
     [Step("abandon", V2, phase="serving"), Step("report")]),
    ("the refused release desired again: report, no retry",
     AgentState("rejected", current=V1, target=V2, refused=V2, last_error="bad signature"), V2, None, None, []),
    ("another release after a refusal: forget the refusal, install",
     AgentState("rejected", current=V1, target=V2, refused=V2, last_error="bad signature"), V3, None, None,
     [Step("forget_refusal", V2), *install(V3)]),
    ("desired cleared after a refusal: forget it and clear the rejection",
     AgentState("rejected", current=V1, target=V2, refused=V2, last_error="bad signature"), None, None, None,
     [Step("forget_refusal", V2), Step("clear_error", V1, phase="serving")]),
    ("desired back to the version that runs after a rollback: forget the refusal, clear the rollback",
     AgentState("rolled_back", current=V1, target=V2, refused=V2, last_error="probation failed"), V1, None, None,
     [Step("forget_refusal", V2), Step("clear_error", V1, phase="serving")]),
    ("a refused desired state (bad signature) is history once a valid one names what runs",
     AgentState("rejected", current=V1, last_error="desired state rejected: unsigned"), V1, None, None,
     [Step("clear_error", V1, phase="serving")]),
    ("a stale error while serving what is wanted: cleared, the phase kept",
     AgentState("serving", current=V1, last_error="probation failed; rollback impossible"), V1, None, None,
     [Step("clear_error", V1, phase="serving")]),
    ("an empty device with an error and nothing desired: cleared, idle",
     AgentState("idle", last_error="stored model fails verification"), None, None, None,
     [Step("clear_error", None, phase="idle")]),
    ("a refusal forgotten with nothing else to change: forget and report",
     AgentState("serving", current=V1, refused=V2), None, None, None, [Step("forget_refusal", V2), Step("report")]),
    ("a newer release while one is on probation: stop judging it, install the newer one",
     AgentState("probation", current=V2, previous=V1), V3, None, V2, [Step("stop_probation", V2), *install(V3)]),
    ("probation goes on while a refused desired state shows as rejected, until a newer release comes",
     AgentState("rejected", current=V2, previous=V1, last_error="desired state rejected"), V3, None, V2,
     [Step("stop_probation", V2), *install(V3)]),
    ("the model on probation desired again: probation goes on",
     AgentState("probation", current=V2, previous=V1), V2, None, V2, []),
    ("a first install on an empty device",
     AgentState(), V1, None, None, install(V1)),
]


@pytest.mark.parametrize(("current", "want", "installing", "watching", "expected"),
                         [row[1:] for row in ROWS], ids=[row[0] for row in ROWS])
def test_the_planner_decides(current: AgentState, want: ModelRef | None, installing: ModelRef | None,
                             watching: ModelRef | None, expected: list[Step]) -> None:
    assert plan(current, desired(want), installing=installing, watching=watching) == expected


def test_install_steps_carry_the_desired_rollout_id() -> None:
    steps = plan(AgentState("serving", current=V1), desired(V2, rollout="r-7"))
    assert {s.rollout_id for s in steps} == {"r-7"} and {s.ref for s in steps} == {V2}


def test_a_plan_decides_one_outcome_only() -> None:
    """Every row: at most one step that settles the state (install, clear, report, keep going), and last."""
    outcomes = {"clear_error", "report", "keep_installing", "probation"}
    for _name, current, want, installing, watching, _expected in ROWS:
        kinds = [s.kind for s in plan(current, desired(want), installing=installing, watching=watching)]
        assert sum(k in outcomes for k in kinds) <= 1
        assert not kinds or kinds[-1] in outcomes

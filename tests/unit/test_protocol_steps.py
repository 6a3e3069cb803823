"""StepReports: an update's steps are held for its first seconds, its outcome never is."""

from hypothesis import given
from hypothesis import strategies as st

from edge_agent.protocol import LIFECYCLE_STATES, TRANSIENT_STATES, Reported, StepReports


def rep(state: str) -> Reported:
    return Reported(device="d1", state=state)


def test_a_quick_update_sends_only_its_outcome() -> None:
    steps = StepReports(1.0)
    assert steps.offer(rep("serving"), 0.0) is not None
    for t, state in enumerate(("fetching", "verifying", "self_testing", "activating")):
        assert steps.offer(rep(state), 10.0 + t / 10) is None
    assert steps.next_due == 11.0
    serving = rep("serving")
    assert steps.offer(serving, 10.5) is serving
    assert steps.next_due is None and steps.due(99.0) is None  # the outcome superseded the held step


def test_a_slow_update_sends_its_latest_step_when_due_then_every_step_at_once() -> None:
    steps = StepReports(1.0)
    assert steps.offer(rep("fetching"), 5.0) is None
    verifying = rep("verifying")
    assert steps.offer(verifying, 5.4) is None
    assert steps.due(5.99) is None
    assert steps.due(6.0) is verifying  # the step the update is on, not the first one
    assert steps.due(7.0) is None  # sent once
    self_test = rep("self_testing")
    assert steps.offer(self_test, 6.2) is self_test  # the update has lasted: no more holding
    assert steps.offer(rep("rejected"), 6.3) is not None
    assert steps.offer(rep("fetching"), 20.0) is None  # a new update is held again, from its own start


def test_zero_sends_every_step_at_once() -> None:
    steps = StepReports(0.0)
    assert all(steps.offer(rep(s), 1.0) is not None for s in LIFECYCLE_STATES)


@given(st.lists(st.tuples(st.sampled_from(LIFECYCLE_STATES), st.floats(0, 5)), max_size=30), st.floats(0, 3))
def test_settled_reports_always_go_and_everything_sent_goes_once_in_order(
        changes: list[tuple[str, float]], after_s: float) -> None:
    steps = StepReports(after_s)
    now, offered, sent = 0.0, [], []
    for state, gap in changes:
        now += gap
        held = steps.due(now)  # what an owner loop's tick sends before the next change
        if held is not None:
            sent.append(held)
        report = rep(state)
        offered.append(report)
        out = steps.offer(report, now)
        if out is not None:
            assert out is report  # only ever the report just offered, never an older one
            sent.append(out)
    settled = [r for r in offered if r.state not in TRANSIENT_STATES]
    assert [r for r in sent if r.state not in TRANSIENT_STATES] == settled
    positions = [next(i for i, r in enumerate(offered) if r is s) for s in sent]
    assert positions == sorted(set(positions))  # each at most once, in the order offered

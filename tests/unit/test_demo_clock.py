"""The demo's deadline is per step (issue 17: with every core busy, a loop that progressed normally ran out of
one fixed budget for the whole loop): a step that takes longer than --timeout fails, a slow machine whose steps
each finish in time does not."""

import pytest

from edgeops.demo import parts as demo
from edgeops.demo.parts import Clock, DemoTimeout


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock_time(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    fake = FakeTime()
    monkeypatch.setattr(demo.time, "monotonic", fake.monotonic)
    return fake


def test_a_slow_loop_that_reaches_each_milestone_in_time_never_times_out(clock_time: FakeTime) -> None:
    clock = Clock(timeout_s=240)
    for step in ("services_up", "v1_everywhere", "deployments_served", "drift_event", "loop_closed"):
        clock_time.now += 200  # 1000 s in all: four times the old budget for the whole loop
        clock.check(step)
        clock.mark(step)
    assert clock.elapsed() == 1000


def test_a_stuck_step_fails_and_says_since_when(clock_time: FakeTime) -> None:
    clock = Clock(timeout_s=240)
    clock_time.now += 100
    clock.mark("services_up")
    clock_time.now += 241
    with pytest.raises(DemoTimeout, match=r"no progress for 240 s since services_up \(waiting for the agents\)"):
        clock.check("the agents")


def test_a_stuck_start_says_so(clock_time: FakeTime) -> None:
    clock = Clock(timeout_s=60)
    clock_time.now += 61
    with pytest.raises(DemoTimeout, match="since the start"):
        clock.check("the broker")

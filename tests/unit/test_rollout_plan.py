"""Rollout planning and decisions, without broker or database."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.protocol import Reported
from edgeops.errors import RolloutError
from edgeops.rollout.plan import (
    RolloutPolicy,
    Tally,
    evaluate_thresholds,
    judge_report,
    min_executed_for,
    parse_fraction,
    plan_waves,
    wave_settled,
)

pytestmark = pytest.mark.unit

NAMES = [f"d{i:03d}" for i in range(100)]


def test_canary_first_then_even_waves() -> None:
    plan = plan_waves(NAMES[:10], canary=0.1, waves=3)
    assert [len(w) for w in plan] == [1, 3, 3, 3]
    assert plan[0] == ["d000"]


def test_canary_is_at_least_one_device_and_rounds_up() -> None:
    assert [len(w) for w in plan_waves(NAMES[:5], canary=0.01, waves=3)] == [1, 2, 1, 1]
    assert [len(w) for w in plan_waves(NAMES[:21], canary=0.1, waves=2)] == [3, 9, 9]


def test_no_canary_and_more_waves_than_devices() -> None:
    assert plan_waves(NAMES[:2], canary=0.0, waves=5) == [["d000"], ["d001"]]
    assert plan_waves(NAMES[:1], canary=0.5, waves=3) == [["d000"]]


def test_online_devices_are_preferred_for_the_canary() -> None:
    plan = plan_waves(NAMES[:4], canary=0.25, waves=1, preferred={"d002", "d003"})
    assert plan[0] == ["d002"]


def test_empty_target_is_an_error() -> None:
    with pytest.raises(RolloutError, match="no devices"):
        plan_waves([], canary=0.1, waves=3)


@given(st.sets(st.sampled_from(NAMES), min_size=1), st.floats(0, 1), st.integers(1, 12))
def test_every_device_in_exactly_one_wave(devices: set[str], canary: float, waves: int) -> None:
    plan = plan_waves(devices, canary, waves)
    flat = [d for w in plan for d in w]
    assert sorted(flat) == sorted(devices)
    assert all(plan) and len(plan) <= waves + 1
    rest = [len(w) for w in plan[1:]] if canary > 0 else [len(w) for w in plan]
    assert max(rest, default=0) - min(rest, default=0) <= 1


@pytest.mark.parametrize(("text", "value"), [("10%", 0.1), ("0.25", 0.25), ("100%", 1.0), ("0%", 0.0)])
def test_parse_fraction(text: str, value: float) -> None:
    assert parse_fraction(text, "canary") == pytest.approx(value)


@pytest.mark.parametrize("text", ["ten", "150%", "-1%", "nan"])
def test_parse_fraction_rejects_with_the_option_name(text: str) -> None:
    with pytest.raises(RolloutError, match="max-failure"):
        parse_fraction(text, "max-failure")


def test_policy_checks_itself_and_round_trips() -> None:
    with pytest.raises(RolloutError, match="waves"):
        RolloutPolicy(waves=0)
    policy = RolloutPolicy(canary=0.2, waves=2, max_failure=0.1, min_executed=3, device_timeout_s=5)
    assert RolloutPolicy.from_json(policy.to_json()) == policy


def test_min_executed_defaults_to_canary_size() -> None:
    plan = plan_waves(NAMES[:30], canary=0.1, waves=3)
    assert min_executed_for(RolloutPolicy(), plan) == 3
    assert min_executed_for(RolloutPolicy(min_executed=500), plan) == 30


def test_thresholds_wait_for_min_executed() -> None:
    one_failure = Tally.of(["failed", "updating", "updating", "pending"])
    assert not evaluate_thresholds(one_failure, max_failure=0.05, min_executed=3).abort
    verdict = evaluate_thresholds(Tally.of(["failed", "succeeded", "succeeded"]), 0.05, 3)
    assert verdict.abort and "1 of 3" in verdict.reason


def test_thresholds_count_timeouts_but_not_offline_devices() -> None:
    tally = Tally.of(["succeeded"] * 19 + ["timed_out"] + ["offline"] * 5)
    assert tally.executed == 20 and tally.failures == 1
    assert not evaluate_thresholds(tally, max_failure=0.05, min_executed=1).abort  # exactly 5% is allowed
    assert evaluate_thresholds(tally, max_failure=0.04, min_executed=1).abort


def test_offline_devices_do_not_hold_a_wave() -> None:
    assert wave_settled(["succeeded", "updating"], [False, True])
    assert not wave_settled(["succeeded", "updating"], [False, False])
    assert not wave_settled(["pending"], [True])


def report(**kw: object) -> Reported:
    return Reported(**{"device": "d1", "state": "serving", "model": "churn", "version": 3, **kw})  # type: ignore[arg-type]


def test_judge_report() -> None:
    assert judge_report(report(version=4), "churn", 4, "r1", live=False) == ("succeeded", "")
    assert judge_report(report(state="probation", version=4), "churn", 4, "r1", live=True) is None
    rejected = report(state="rejected", desired_version=4, last_error="bad signature")
    assert judge_report(rejected, "churn", 4, "r1", live=True) == ("failed", "rejected: bad signature")
    # a retained rejection from an earlier attempt does not fail this rollout
    assert judge_report(rejected, "churn", 4, "r1", live=False) is None
    assert judge_report(report(state="rejected", desired_version=4, rollout_id="r0"), "churn", 4, "r1", True) is None
    assert judge_report(report(state="rolled_back", desired_version=4, rollout_id="r1"), "churn", 4, "r1",
                        False) == ("failed", "rolled_back: no reason given")


def test_policy_keeps_the_health_db_and_masks_its_password_for_display() -> None:
    policy = RolloutPolicy(health_db="postgresql+psycopg://edge:s3cret@db:5432/telemetry")
    assert RolloutPolicy.from_json(policy.to_json()) == policy  # stored with the rollout, resumed with it
    assert policy.to_display()["health_db"] == "postgresql+psycopg://edge:***@db:5432/telemetry"
    assert RolloutPolicy(health_db="sqlite:///t.db").to_display()["health_db"] == "sqlite:///t.db"
    assert RolloutPolicy().to_display()["health_db"] is None

import dataclasses

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from releases import build_release, new_key, with_wrong_golden

from edge_agent.errors import VerificationError
from edge_agent.inference import ModelRunner
from edge_agent.lifecycle import (
    INSTALL_STEPS,
    LATENCY_MIN_SAMPLES,
    RESUME,
    AgentState,
    LatencyWindow,
    Probation,
    percentile,
    plan,
    resume,
    rollback_pointer,
    self_test,
    with_desired,
)
from edge_agent.protocol import LIFECYCLE_STATES, Desired
from edge_agent.store import ModelRef, Pointer

pytestmark = pytest.mark.unit

V1, V2 = ModelRef("churn", 1), ModelRef("churn", 2)


def desired(version: int, model: str = "churn", rollout: str | None = "r1") -> Desired:
    return Desired(device="d1", model=model, version=version, rollout_id=rollout)


def test_nothing_desired_means_nothing_to_do() -> None:
    assert plan(AgentState("serving", current=V1), None) == []
    assert plan(AgentState(), None) == []


def test_desired_already_running_needs_nothing() -> None:
    assert plan(AgentState("serving", current=V1), desired(1)) == []


def test_a_new_version_is_fetched_verified_tested_activated_and_watched() -> None:
    steps = plan(AgentState("serving", current=V1), desired(2))
    assert [s.kind for s in steps] == list(INSTALL_STEPS) == ["fetch", "verify", "self_test", "activate", "probation"]
    assert all(s.ref == V2 and s.rollout_id == "r1" for s in steps)


def test_first_install_on_an_empty_device_plans_the_same_steps() -> None:
    assert [s.kind for s in plan(AgentState(), desired(1, "other"))] == list(INSTALL_STEPS)


def test_a_refused_release_is_not_retried_until_the_desired_state_changes() -> None:
    state = AgentState("rejected", current=V1, target=V2, refused=V2, last_error="bad signature")
    assert plan(with_desired(state, desired(2)), desired(2)) == []
    moved_on = with_desired(state, desired(3))
    assert moved_on.refused is None
    assert [s.ref.version for s in plan(moved_on, desired(3))] == [3] * 5
    back = with_desired(moved_on, desired(2))
    assert [s.ref for s in plan(back, desired(2))] == [V2] * 5  # re-targeted after a change: tried again


def test_every_protocol_state_has_a_resume_entry_and_the_rollback_intent_too() -> None:
    assert set(RESUME) == set(LIFECYCLE_STATES) | {"rolling_back"}
    assert "rolling_back" not in LIFECYCLE_STATES  # an intent on disk, never reported


@pytest.mark.parametrize("phase", ["fetching", "verifying", "self_testing", "activating"])
def test_interrupted_install_resumes_serving_the_loaded_model(phase: str) -> None:
    persisted = AgentState(phase, current=V1, target=V2)  # type: ignore[arg-type]
    state = resume(persisted, Pointer(V1, None))
    assert (state.phase, state.current, state.target) == ("serving", V1, None)


def test_activation_interrupted_after_the_point_of_no_return_puts_the_new_model_on_probation() -> None:
    state = resume(AgentState("activating", current=V1, target=V2), Pointer(V2, V1))
    assert (state.phase, state.current, state.previous) == ("probation", V2, V1)
    # the last write of activation (state names the new model) was made, probation had not started yet
    state = resume(AgentState("activating", current=V2, previous=V1), Pointer(V2, V1))
    assert (state.phase, state.current, state.previous) == ("probation", V2, V1)
    # a first install has nothing to roll back to: no probation
    assert resume(AgentState("activating", target=V2), Pointer(V2, None)).phase == "serving"


def test_a_rollback_interrupted_before_its_pointer_moved_is_finished() -> None:
    intent = AgentState("rolling_back", current=V2, previous=V1, target=V2, refused=V2, last_error="probation")
    repaired = rollback_pointer(intent, Pointer(V2, V1))
    assert repaired == Pointer(V1, None)
    state = resume(intent, repaired)
    assert (state.phase, state.current, state.previous, state.refused) == ("rolled_back", V1, None, V2)


def test_a_rollback_interrupted_after_its_pointer_moved_needs_no_repair() -> None:
    intent = AgentState("rolling_back", current=V2, previous=V1, target=V2, refused=V2)
    assert rollback_pointer(intent, Pointer(V1, None)) is None
    assert (resume(intent, Pointer(V1, None)).phase, resume(intent, Pointer(V1, None)).current) == ("rolled_back", V1)


def test_an_older_agents_half_done_rollback_is_repaired_and_a_finished_one_left_alone() -> None:
    half = AgentState("rolled_back", current=V2, previous=V1, target=V2, refused=V2)
    assert rollback_pointer(half, Pointer(V2, V1)) == Pointer(V1, None)
    done = AgentState("rolled_back", current=V1, previous=None, target=V2, refused=V2)
    assert rollback_pointer(done, Pointer(V1, None)) is None
    assert rollback_pointer(AgentState("serving", current=V2, previous=V1, refused=V2), Pointer(V2, V1)) is None


def test_resume_without_a_loadable_model_is_idle_and_keeps_refusals() -> None:
    assert resume(AgentState("serving", current=V1), Pointer()).phase == "idle"
    state = resume(AgentState("rejected", current=V1, refused=V2), Pointer(V1))
    assert (state.phase, state.refused) == ("rejected", V2)


def test_probation_resumes_only_for_the_model_it_watched() -> None:
    assert resume(AgentState("probation", current=V2, previous=V1), Pointer(V2, V1)).phase == "probation"
    assert resume(AgentState("probation", current=V2, previous=V1), Pointer(V1)).phase == "serving"


def test_state_json_round_trip_and_garbage_falls_back_to_idle() -> None:
    state = AgentState("rolled_back", current=V1, previous=None, target=V2, rollout_id="r", last_error="x",
                       refused=V2)
    assert AgentState.from_json(state.to_json()) == state
    assert AgentState.from_json({"phase": "nonsense"}).phase == "idle"
    assert AgentState.from_json({"current": {"model": "..", "version": 1}}) == AgentState()
    assert AgentState.from_json({"current": "churn"}) == AgentState()


def probation(**kw: object) -> Probation:
    args: dict = dict(ref=V2, started=0.0, duration_s=60.0, min_requests=5, max_error_rate=0.2,
                      max_latency_factor=2.0, baseline_ms=1.0, latency_floor_ms=0.0)
    args.update(kw)
    return Probation(**args)


def test_probation_waits_until_enough_requests_or_time() -> None:
    p = probation()
    for _ in range(4):
        p.record(5.0, False)  # slow, but too few to judge
    assert p.verdict(1.0) == "wait"
    assert p.verdict(61.0) == "pass"  # time is up; too few requests to call a breach
    assert probation().verdict(61.0) == "pass"


def test_probation_fails_on_error_rate() -> None:
    p = probation()
    for i in range(10):
        p.record(0.5, error=i < 3)
    assert "error rate 30.0% over 10 requests" in p.verdict(1.0)


def test_latency_is_judged_on_the_median_of_enough_requests() -> None:
    slow = probation()
    for _ in range(LATENCY_MIN_SAMPLES - 1):
        slow.record(2.5, False)
    assert slow.verdict(1.0) == "wait"  # a median of a handful of requests is noise
    slow.record(2.5, False)
    assert "median CPU time per row 2.500 ms over 20 requests exceeds 2.000 ms" in slow.verdict(1.0)
    spiky = probation()  # a few slow requests (a page fault, a cold cache) do not move the median
    for i in range(40):
        spiky.record(50.0 if i % 5 == 0 else 1.2, False)
    assert spiky.verdict(1.0) == "wait"
    ok = probation(baseline_ms=None)
    for _ in range(40):
        ok.record(2.5, False)
    assert ok.verdict(1.0) == "wait" and ok.verdict(60.0) == "pass"


def test_nothing_under_the_latency_floor_is_a_breach() -> None:
    tiny = probation(baseline_ms=0.01, max_latency_factor=3.0, latency_floor_ms=1.0)
    for _ in range(40):
        tiny.record(0.5, False)  # 50x a tiny baseline, still half a millisecond
    assert tiny.limit_ms() == 1.0 and tiny.verdict(1.0) == "wait"
    tiny.costs[:] = [1.5] * 40
    assert "exceeds 1.000 ms" in tiny.verdict(1.0)


def test_the_baseline_is_a_median_once_enough_requests_were_seen() -> None:
    window = LatencyWindow()
    for value in [1.0] * (LATENCY_MIN_SAMPLES - 1):
        window.add(value)
    assert window.baseline(5) is None
    window.add(100.0)
    assert window.baseline(5) == 1.0
    assert window.baseline(LATENCY_MIN_SAMPLES + 1) is None


def test_percentile_is_the_nearest_rank() -> None:
    assert percentile([], 95) is None
    assert percentile(list(range(1, 101)), 95) == 95
    assert percentile([3.0], 95) == 3.0


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return new_key()


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_self_test_passes_for_a_faithful_export(key: Ed25519PrivateKey, task: str) -> None:
    release = build_release("churn", 1, key, task=task)
    self_test(release.manifest, ModelRunner(release.manifest, release.data))


def test_self_test_rejects_golden_mismatch(key: Ed25519PrivateKey) -> None:
    release = with_wrong_golden(build_release("churn", 1, key), key)
    with pytest.raises(VerificationError, match="golden sample 0: label"):
        self_test(release.manifest, ModelRunner(release.manifest, release.data))


def test_self_test_rejects_probabilities_outside_tolerance(key: Ed25519PrivateKey) -> None:
    release = build_release("churn", 1, key)
    golden = release.manifest.golden
    probs = [list(row) for row in golden.probabilities or []]
    probs[2][0] += 0.01
    manifest = dataclasses.replace(release.manifest, golden=dataclasses.replace(golden, probabilities=probs))
    with pytest.raises(VerificationError, match=r"probabilities of sample 2\[0\]"):
        self_test(manifest, ModelRunner(manifest, release.data))

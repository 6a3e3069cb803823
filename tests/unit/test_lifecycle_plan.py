import dataclasses

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from releases import build_release, new_key, with_wrong_golden

from edge_agent.errors import VerificationError
from edge_agent.inference import ModelRunner
from edge_agent.lifecycle import (
    INSTALL_STEPS,
    RESUME,
    AgentState,
    Probation,
    percentile,
    plan,
    resume,
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


def test_every_protocol_state_has_a_resume_entry() -> None:
    assert set(RESUME) == set(LIFECYCLE_STATES)


@pytest.mark.parametrize("phase", ["fetching", "verifying", "self_testing", "activating"])
def test_interrupted_install_resumes_serving_the_loaded_model(phase: str) -> None:
    persisted = AgentState(phase, current=V1, target=V2)  # type: ignore[arg-type]
    state = resume(persisted, Pointer(V1, None))
    assert (state.phase, state.current, state.target) == ("serving", V1, None)


def test_activation_interrupted_after_the_point_of_no_return_serves_the_new_model() -> None:
    state = resume(AgentState("activating", current=V1, target=V2), Pointer(V2, V1))
    assert (state.phase, state.current, state.previous) == ("serving", V2, V1)


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
    args: dict = dict(ref=V2, started=0.0, duration_s=60.0, min_predictions=5, max_error_rate=0.2,
                      max_latency_factor=2.0, baseline_p95_ms=1.0)
    args.update(kw)
    return Probation(**args)


def test_probation_waits_until_enough_predictions_or_time() -> None:
    p = probation()
    for _ in range(4):
        p.record(5.0, False)  # slow, but too few to judge
    assert p.verdict(1.0) == "wait"
    assert p.verdict(61.0) == "pass"  # time is up; too few predictions to call a breach
    assert probation().verdict(61.0) == "pass"


def test_probation_fails_on_error_rate_and_on_latency() -> None:
    p = probation()
    for i in range(10):
        p.record(0.5, error=i < 3)
    assert "error rate 30.0%" in p.verdict(1.0)
    slow = probation()
    for _ in range(10):
        slow.record(2.5, False)
    assert "p95 latency 2.500 ms exceeds 2.000 ms" in slow.verdict(1.0)
    ok = probation(baseline_p95_ms=None)
    for _ in range(10):
        ok.record(2.5, False)
    assert ok.verdict(1.0) == "wait" and ok.verdict(60.0) == "pass"


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

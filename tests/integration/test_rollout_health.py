"""The telemetry health gate on a real telemetry store (SQLite): hold without evidence, advance when the new
version serves like the previous one, abort on more model errors or slower answers."""

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge_agent.protocol import TelemetryWindow
from edgeops.rollout.health import HealthPolicy, TelemetryHealthGate
from edgeops.rollout.plan import GateContext
from edgeops.telemetry.store import TelemetryStore

pytestmark = pytest.mark.integration

START = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
_seq = itertools.count()


def window(device: str, version: int, count: int, *, model_errors: int = 0, input_errors: int = 0,
           p95: float = 1.0, minutes: int = 5) -> TelemetryWindow:
    end = (START + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")
    return TelemetryWindow(device=device, seq=next(_seq), model="churn", version=version, start=end, end=end,
                           count=count, errors={"model": model_errors, "input": input_errors},
                           latency_ms={"p50": p95 / 2, "p95": p95})


def context(**outcomes: str) -> GateContext:
    return GateContext(rollout_id="r1", model="churn", version=2, wave=0, waves=3, devices=tuple(outcomes),
                       outcomes=outcomes)


@pytest.fixture
def store(tmp_path: Path) -> TelemetryStore:
    store = TelemetryStore(f"sqlite:///{tmp_path / 'telemetry.db'}")
    # the previous version's baseline: 1% model errors, p95 1 ms, from before the rollout started
    store.write([window("old-1", 1, 400, model_errors=4, minutes=-30), window("old-2", 1, 400, model_errors=4,
                                                                              minutes=-20)])
    return store


def gate(store: TelemetryStore) -> TelemetryHealthGate:
    return TelemetryHealthGate(store, since=START, policy=HealthPolicy(min_requests=50))


def test_holds_until_the_new_version_has_evidence(store: TelemetryStore) -> None:
    store.write([window("d1", 2, 20)])
    verdict = gate(store)(context(d1="succeeded"))
    assert verdict.action == "hold" and "20 of 50 requests" in verdict.reason


def test_advances_when_the_new_version_serves_like_the_previous(store: TelemetryStore) -> None:
    store.write([window("d1", 2, 100, model_errors=1, input_errors=30), window("d2", 2, 100, model_errors=2)])
    verdict = gate(store)(context(d1="succeeded", d2="succeeded"))
    assert verdict.action == "advance", verdict.reason  # input errors are the callers', not the model's
    assert "1.5% over 200 requests (v1: 1.0%)" in verdict.reason


def test_aborts_on_more_model_errors_than_the_previous_version_plus_margin(store: TelemetryStore) -> None:
    store.write([window("d1", 2, 100, model_errors=5)])
    verdict = gate(store)(context(d1="succeeded"))
    assert verdict.action == "abort" and "model error rate 5.0% over 100 requests exceeds 3.0%" in verdict.reason


def test_aborts_on_slower_answers(store: TelemetryStore) -> None:
    store.write([window("d1", 2, 100, p95=2.5)])
    verdict = gate(store)(context(d1="succeeded"))
    assert verdict.action == "abort" and "p95 latency 2.50 ms is over 2× v1's 1.00 ms" in verdict.reason


def test_only_devices_that_took_the_new_version_count(store: TelemetryStore) -> None:
    store.write([window("d1", 2, 100), window("d2", 2, 100, model_errors=50)])
    assert gate(store)(context(d1="succeeded", d2="updating")).action == "advance"
    assert gate(store)(context(d1="succeeded", d2="succeeded")).action == "abort"


def test_without_a_baseline_the_absolute_error_rate_decides(tmp_path: Path) -> None:
    fresh = TelemetryStore(f"sqlite:///{tmp_path / 'fresh.db'}")
    fresh.write([window("d1", 2, 100, model_errors=4)])
    assert gate(fresh)(context(d1="succeeded")).action == "advance"
    fresh.write([window("d2", 2, 100, model_errors=8)])
    verdict = gate(fresh)(context(d1="succeeded", d2="succeeded"))
    assert verdict.action == "abort" and "exceeds 5.0%" in verdict.reason

"""``edgeops.performance.degraded`` from both sources, on a real SQLite store: realized performance (labels credited
through telemetry 1.2 ``feedback_for``) raises it as the estimate does, one episode per version and scope whichever
source found it, and versions no device runs any more raise none."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from releases import build_release

from edge_agent.protocol import FeedbackCredit, ReleaseManifest, Reported, TelemetryWindow
from edge_agent.scoring import freeze_scores, score_cells
from edgeops.telemetry.events import EventSpec
from edgeops.telemetry.monitor import MonitorReport, episode_events, run_monitor
from edgeops.telemetry.report import fleet_rows
from edgeops.telemetry.store import TelemetryStore

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(second=0, microsecond=0)
PERFORMANCE = "edgeops.performance.degraded"


def iso(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.fixture(scope="module")
def releases() -> dict[tuple[str, int], ReleaseManifest]:
    """churn@1 and churn@2 with calibration tables, churn@3 without (estimation not available); all tested at
    accuracy 0.8."""
    key = Ed25519PrivateKey.generate()
    return {("churn", v): build_release("churn", v, key, calibrated=v < 3).manifest for v in (1, 2, 3)}


def window(device: str, seq: int, version: int, at: datetime, *, unsure: bool = False,
           credits: tuple[FeedbackCredit, ...] = ()) -> TelemetryWindow:
    """200 predictions, sure ones (probabilities 0.03 / 0.97) or unsure ones (0.4–0.6: estimated accuracy ~0.58)."""
    rng = np.random.default_rng(seq)
    p_one = rng.uniform(0.4, 0.6, 200) if unsure else rng.choice([0.03, 0.97], 200)
    w = TelemetryWindow(device=device, seq=seq, model="churn", version=version, start=iso(at),
                        end=iso(at + timedelta(minutes=1)), count=200, epoch="e1", latency_ms={"p95": 2.0},
                        scores=freeze_scores(score_cells(np.column_stack([1 - p_one, p_one]), 20), 20),
                        feedback_for=credits)
    return TelemetryWindow.parse(w.to_bytes())


def labels(version: int, at: datetime, labelled: int, correct: int) -> tuple[FeedbackCredit, ...]:
    return (FeedbackCredit("churn", version, iso(at), labelled, correct=correct),)


def monitor(store: TelemetryStore, releases: dict[tuple[str, int], ReleaseManifest], minutes: int = 0,
            **options: object) -> tuple[MonitorReport, list[EventSpec]]:
    report = run_monitor(store, lambda m, v: releases.get((m, v)), now=NOW + timedelta(minutes=minutes),
                         **options)  # type: ignore[arg-type]
    return report, episode_events(store, report)


def about(events: list[EventSpec], name: str = PERFORMANCE) -> dict[str, EventSpec]:
    return {e.resource["prefect.resource.id"]: e for e in events if e.event == name}


def test_labels_below_the_releases_test_accuracy_raise_performance_degraded_once(
        store: TelemetryStore, releases: dict[tuple[str, int], ReleaseManifest]) -> None:
    """churn@3 has no calibration table, so only labels can tell: 200 labels at 50 % against a test accuracy of 0.8
    raise edgeops.performance.degraded with source "realized" (not edgeops.health.degraded: the service answers)."""
    store.write([window("a", i, 3, NOW - timedelta(minutes=30 - i)) for i in range(5)])
    store.write([window("a", 10 + i, 3, NOW - timedelta(minutes=20 - i), credits=labels(3, NOW - timedelta(
        minutes=30 - i), 40, 20)) for i in range(5)])
    report, events = monitor(store, releases)
    assert next(j for j in report.performance if j.scope.device is None).estimate is None   # no table: no estimate
    assert about(events, "edgeops.health.degraded") == {}
    raised = about(events)
    assert set(raised) == {"edgeops.model.churn", "edgeops.device.a"}
    fleet = raised["edgeops.model.churn"].payload
    assert (fleet["version"], fleet["source"], fleet["sources"], fleet["metric"], fleet["labelled"]) == (
        3, "realized", ["realized"], "accuracy", 200)
    assert fleet["value"] == 0.5 and fleet["high"] < fleet["threshold"] == pytest.approx(0.75)
    assert fleet["estimated"] is None and fleet["realized"]["verdict"] == "degraded"
    assert about(monitor(store, releases, minutes=1)[1]) == {}                   # the same episode: no new event


def test_labels_that_see_what_the_estimate_cannot_raise_it_with_the_estimate_ok(
        store: TelemetryStore, releases: dict[tuple[str, int], ReleaseManifest]) -> None:
    """Sure probabilities (estimated accuracy near 1) but the labels say 50 %: a concept shift, which only labels
    show. The event says the labels found it; the estimate's own figures ride along."""
    store.write([window("a", i, 1, NOW - timedelta(minutes=30 - i),
                        credits=labels(1, NOW - timedelta(minutes=40 - i), 40, 20)) for i in range(5)])
    report, events = monitor(store, releases, per_device=False)
    judged = next(j for j in report.performance if j.scope.device is None)
    assert judged.verdict == "ok"
    payload = about(events)["edgeops.model.churn"].payload
    assert (payload["source"], payload["sources"], payload["estimated"]["verdict"]) == ("realized", ["realized"], "ok")


def test_one_episode_whichever_source_finds_it_first(store: TelemetryStore,
                                                     releases: dict[tuple[str, int], ReleaseManifest]) -> None:
    """The estimate opens the episode before any label; labels that later confirm it raise nothing new (one
    retrain for one problem), and the episode closes only when neither source says degraded."""
    store.write([window("a", i, 1, NOW - timedelta(minutes=30 - i), unsure=True) for i in range(5)])
    _, first = monitor(store, releases, per_device=False)
    payload = about(first)["edgeops.model.churn"].payload
    assert (payload["source"], payload["sources"], payload["realized"]["reason"]) == ("estimated", ["estimated"],
                                                                                      "no labels")
    assert payload["metric"] == "accuracy" and payload["reference"] == 0.8 and payload["rows"] == 1000
    store.write([window("a", 10 + i, 1, NOW - timedelta(minutes=20 - i), unsure=True,
                        credits=labels(1, NOW - timedelta(minutes=30 - i), 40, 20)) for i in range(5)])
    _, confirmed = monitor(store, releases, minutes=1, per_device=False)
    assert about(confirmed) == {}
    (episode,) = [e for e in store.episodes() if e["kind"] == "performance"]
    assert episode["detail"]["sources"] == ["estimated", "realized"] and episode["detail"]["source"] == "realized"
    store.write([window("a", 20 + i, 1, NOW + timedelta(minutes=40 + i)) for i in range(5)])   # sure again ...
    report, still = monitor(store, releases, minutes=50, per_device=False, window=timedelta(minutes=15),
                            label_window=timedelta(hours=24))
    assert next(j for j in report.performance if j.scope.device is None).verdict == "ok"
    assert about(still) == {}                                   # ... but the labels still say degraded: open
    assert [e["kind"] for e in store.episodes()] == ["performance"]
    _, calm = monitor(store, releases, minutes=50, per_device=False, window=timedelta(minutes=15))
    assert about(calm) == {} and store.episodes() == []         # labels out of the span, the estimate ok: closed


def test_versions_no_device_runs_any_more_raise_no_performance_event(
        store: TelemetryStore, releases: dict[tuple[str, int], ReleaseManifest]) -> None:
    """Devices a and b moved from churn@1 to churn@2. churn@1's estimate and its late labels are both degraded, yet
    retraining a model nobody serves fixes nothing: only churn@2 raises edgeops.performance.degraded. The same
    holds once churn@1's windows are out of the span and only its late labels are left."""
    old = NOW - timedelta(hours=2)
    store.write([window(dev, i, 1, old + timedelta(minutes=i), unsure=True) for dev in "ab" for i in range(5)])
    store.write([window(dev, 100 + i, 2, NOW - timedelta(minutes=10 - i), unsure=True,
                        credits=labels(1, old + timedelta(minutes=i), 40, 20)) for dev in "ab" for i in range(5)])
    store.write([Reported(device=dev, state="serving", model="churn", version=2) for dev in "ab"])
    report, events = monitor(store, releases)
    assert {("churn", 1, None), ("churn", 1, "a"), ("churn", 1, "b")} <= report.retired
    assert {j.verdict for j in report.performance if j.scope.version == 1} == {"degraded"}
    assert next(s for s in report.fleet if s.version == 1).health.realized.verdict == "degraded"  # type: ignore[union-attr]
    raised = [e for e in events if e.event == PERFORMANCE]
    assert {(e.payload["version"], e.resource["prefect.resource.id"]) for e in raised} == {
        (2, "edgeops.model.churn"), (2, "edgeops.device.a"), (2, "edgeops.device.b")}
    assert not any(e["version"] == 1 for e in store.episodes(active_only=False) if e["kind"] == "performance")
    assert [(r["device"], r["release"], r["performance"]) for r in fleet_rows(report)] == [
        ("a", "churn@2", "degraded (estimated)"), ("b", "churn@2", "degraded (estimated)")]

    late, late_events = monitor(store, releases, minutes=5, window=timedelta(minutes=30),
                                label_window=timedelta(hours=24))
    labels_only = next(s for s in late.fleet if s.version == 1)
    assert labels_only.windows == 0 and labels_only.health.realized.verdict == "degraded"  # type: ignore[union-attr]
    assert ("churn", 1, None) in late.retired
    assert [e for e in late_events if e.event == PERFORMANCE and e.payload["version"] == 1] == []

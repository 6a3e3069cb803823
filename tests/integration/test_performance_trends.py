"""The data of the ``edgeops-performance`` chart, on a real SQLite store with real windows: score counts from the
agent's own counting, labels credited through telemetry 1.2 ``feedback_for`` and through a warehouse import. Every
point must be what performance.py (the estimate) and realized.py (the labels' value and interval) give for the same
predictions: the chart is a view of the verdicts' numbers, not a second computation."""

import base64
import io
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from releases import build_release

from edge_agent.protocol import FeedbackCredit, PredictionRef, ReleaseManifest, ScoreCounts, TelemetryWindow
from edge_agent.scoring import freeze_scores, score_cells
from edgeops.config.monitor import RealizedThresholds
from edgeops.telemetry.label_import import import_labels
from edgeops.telemetry.monitor import run_monitor
from edgeops.telemetry.performance import estimate_performance
from edgeops.telemetry.performance_report import performance_markdown
from edgeops.telemetry.realized import LabelTotals, accuracy_interval, judge_realized, mae_interval
from edgeops.telemetry.store import TelemetryStore

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(minute=30, second=0, microsecond=0)
HOUR = timedelta(hours=1)


def iso(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.fixture(scope="module")
def classifier() -> ReleaseManifest:
    return build_release("churn", 5, Ed25519PrivateKey.generate(), calibrated=True).manifest   # test accuracy 0.8


def scores(rng: np.random.Generator, n: int, unsure: bool) -> ScoreCounts:
    p_one = rng.uniform(0.4, 0.6, n) if unsure else rng.choice([0.03, 0.97], n)
    return freeze_scores(score_cells(np.column_stack([1 - p_one, p_one]), 20), 20)


def window(device: str, seq: int, start: datetime, rng: np.random.Generator, *, unsure: bool = False,
           credits: tuple[FeedbackCredit, ...] = (), model: str = "churn", version: int = 5) -> TelemetryWindow:
    w = TelemetryWindow(device=device, seq=seq, model=model, version=version, start=iso(start),
                        end=iso(start + timedelta(minutes=1)), count=200, epoch="e1",
                        scores=scores(rng, 200, unsure) if model == "churn" else None, feedback_for=credits)
    return TelemetryWindow.parse(w.to_bytes())      # as the ingest receives it


def test_every_point_is_the_estimate_and_the_labels_interval_of_its_hour(store: TelemetryStore,
                                                                         classifier: ReleaseManifest) -> None:
    """Six hours of two devices (the last three unsure), labels for each hour credited an hour later by both devices
    and by a warehouse: per hour, the chart's estimate is estimate_performance over that hour's windows and its
    realized point is judge_realized (Wilson) over the credits of that hour's predictions, whenever they arrived."""
    rng = np.random.default_rng(7)
    hours = [NOW - timedelta(hours=6 - h) for h in range(6)]           # hh:30, the last one an hour ago
    made = [window(dev, 10 * h + i, at + timedelta(minutes=10 * i), rng, unsure=h >= 3)
            for h, at in enumerate(hours) for dev in ("a", "b") for i in range(3)]
    store.write(made)
    truth: dict[datetime, LabelTotals] = {}
    seq = 1000
    for h, at in enumerate(hours):           # labels about the hour's first window of each device, an hour later
        for dev, labelled, correct in (("a", 30 + h, 25), ("b", 20, 10 + h)):
            seq += 1
            credit = FeedbackCredit("churn", 5, iso(at), labelled, correct=correct)
            store.write([window(dev, seq, at + HOUR + timedelta(minutes=5), rng, unsure=h >= 2, credits=(credit,))])
            truth.setdefault(at.replace(minute=0), LabelTotals()).add(labelled, correct)
    ms = int(hours[1].timestamp() * 1000)      # a warehouse's labels of hour 1: 12 predictions, 3 right
    rows = [(i + 1, {"prediction_id": PredictionRef("churn", 5, ms, i).id, "label": "1",
                     "prediction": "1" if i < 3 else "0"}) for i in range(12)]
    assert import_labels(store, rows, lambda m, v: classifier).stored == 12
    truth[hours[1].replace(minute=0)].add(12, 3)

    report = run_monitor(store, lambda m, v: classifier if (m, v) == ("churn", 5) else None, now=NOW)
    chart = report.performance_chart["churn", 5]
    assert (chart.metric, chart.step_hours, chart.reference) == ("accuracy", 1, 0.8)
    assert chart.estimate_threshold == chart.realized_threshold == pytest.approx(0.75)

    windows = store.windows()
    for point in chart.estimated:
        in_hour = [w for w in windows if point.start <= datetime.fromisoformat(w.end) < point.start + HOUR]
        expected = estimate_performance(in_hour, lambda m, v: classifier, per_device=False)[0].get("accuracy")
        assert point.estimate == expected
    assert [p.start for p in chart.estimated] == [h.replace(minute=0) for h in hours] + [NOW.replace(minute=0)]
    assert chart.estimated[0].estimate.value > 0.9 > 0.7 > chart.estimated[-2].estimate.value   # sure, then unsure

    assert [p.start for p in chart.realized] == sorted(truth)
    for point in chart.realized:
        labels = truth[point.start]
        assert point.realized == judge_realized(labels, "binary", {"accuracy": 0.8}, RealizedThresholds())
        assert point.realized.labelled == labels.labelled
        assert (point.realized.low, point.realized.high) == accuracy_interval(int(labels.correct), labels.labelled,
                                                                              0.95)
    assert chart.realized[1].realized.labelled == 31 + 20 + 12          # both devices and the warehouse

    markdown = performance_markdown(report)
    assert "![Estimated and realized accuracy over time, churn@5](data:image/png;base64,iVBOR" in markdown
    assert "realized accuracy from labels per hour" in markdown


def test_few_labels_are_pooled_into_coarser_bins_aligned_to_the_day(store: TelemetryStore,
                                                                    classifier: ReleaseManifest) -> None:
    """12 labels an hour for 12 hours: an hour's interval would span half the axis, so they are shown per 6 hours
    (the first step of 1, 2, 3, 6 whose median bin holds 50 labels), each bin judged on its 72 labels."""
    rng = np.random.default_rng(8)
    day = NOW.replace(hour=0, minute=0) - timedelta(days=2)      # 12 hours from midnight two days ago
    credits = tuple(FeedbackCredit("churn", 5, iso(day + timedelta(hours=h, minutes=3)), 12, correct=9 if h < 6 else 4)
                    for h in range(12))
    store.write([window("a", 1, NOW - timedelta(minutes=20), rng, credits=credits)])
    report = run_monitor(store, lambda m, v: classifier, now=NOW, label_window=timedelta(days=7))
    chart = report.performance_chart["churn", 5]
    assert chart.step_hours == 6
    assert [(p.start, p.realized.labelled) for p in chart.realized] == [(day, 72), (day + timedelta(hours=6), 72)]
    assert [(p.realized.value, p.realized.verdict) for p in chart.realized] == [(0.75, "ok"), (pytest.approx(1 / 3),
                                                                                              "degraded")]
    assert (chart.realized[1].realized.low, chart.realized[1].realized.high) == accuracy_interval(24, 72, 0.95)
    assert chart.start == day and len(chart.estimated) == 1
    assert "realized accuracy from labels per 6 hours" in performance_markdown(report)


def test_a_regressors_realized_mae_has_the_student_t_interval_and_is_charted_without_an_estimate(
        store: TelemetryStore) -> None:
    """A regressor with labels and no score counts: a chart of realized MAE alone, its interval mae_interval's."""
    manifest = build_release("load", 2, Ed25519PrivateKey.generate(), task="regression").manifest  # no table
    errors = np.random.default_rng(9).exponential(2.0, 60)
    at = NOW - timedelta(hours=3)
    credit = FeedbackCredit("load", 2, iso(at), 60, abs_error_sum=float(errors.sum()),
                            abs_error_sq_sum=float((errors ** 2).sum()))
    store.write([window("a", 1, NOW - timedelta(minutes=20), np.random.default_rng(1), model="load", version=2,
                        credits=(credit,))])
    report = run_monitor(store, lambda m, v: manifest if (m, v) == ("load", 2) else None, now=NOW)
    chart = report.performance_chart["load", 2]
    assert (chart.metric, chart.estimated, chart.reference, chart.realized_threshold) == ("mae", (), None, None)
    (point,) = chart.realized
    totals = LabelTotals()
    totals.add(60, None, float(errors.sum()), float((errors ** 2).sum()))
    assert point.start == at.replace(minute=0) and point.realized.value == pytest.approx(errors.mean())
    assert (point.realized.low, point.realized.high) == mae_interval(totals, 0.95)
    assert "![Estimated and realized MAE over time, load@2](data:image/png;base64,iVBOR" in performance_markdown(report)


def test_the_flow_runs_performance_artifact_shows_the_chart(tmp_path: Path, store: TelemetryStore,
                                                            classifier: ReleaseManifest, prefect_harness: None) -> None:
    """Read back from the Prefect API what the UI shows for the run: the edgeops-performance artifact with the
    table (estimate beside the labels' verdict) and, per version, the chart of both over time as a PNG image."""
    from PIL import Image
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from edgeops.flows.monitor import monitor_flow

    manifest = tmp_path / "churn-5.json"
    manifest.write_bytes(classifier.to_bytes())
    rng = np.random.default_rng(10)
    start = datetime.now(UTC) - timedelta(hours=3)
    store.write([window("a", h, start + timedelta(hours=h), rng, unsure=h == 2,
                        credits=labels_for(start + timedelta(hours=h - 1)) if h else ()) for h in range(4)])
    state = monitor_flow(db=store.url, manifests=[str(manifest)], per_device=False, return_state=True)
    with get_client(sync_client=True) as client:
        artifacts = {a.key: a for a in client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))}
    markdown = str(artifacts["edgeops-performance"].data)
    assert "## churn@5 over time" in markdown
    image = re.search(r"!\[Estimated and realized accuracy over time, churn@5\]\(data:image/png;base64,([^)]+)\)",
                      markdown)
    assert image is not None
    with Image.open(io.BytesIO(base64.b64decode(image[1]))) as png:
        assert png.format == "PNG" and png.size[0] >= 500
    row = next(line for line in markdown.splitlines() if line.startswith("| churn@5 | accuracy |"))
    assert row.endswith("| accuracy 0.66 [0.581, 0.731] over 150 labels: degraded |")   # 99 of 150 right


def labels_for(at: datetime) -> tuple[FeedbackCredit, ...]:
    return (FeedbackCredit("churn", 5, iso(at), 50, correct=33),)

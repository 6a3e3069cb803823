"""The drift report's trends, on real stores: drift evidence per feature over time (the check points' own
p-values), health over time, which devices drift on what, and versions no device runs any more."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from manifests import fake_manifest
from typer.testing import CliRunner

from edge_agent.protocol import (
    CategoricalBins,
    Counts,
    NumericBins,
    Reference,
    ReleaseManifest,
    Reported,
    TelemetryWindow,
)
from edgeops.config.monitor import DriftThresholds
from edgeops.demo.prefect_api import parse_drift_report
from edgeops.telemetry.drift import PREDICTION
from edgeops.telemetry.monitor import MonitorReport, run_monitor
from edgeops.telemetry.report import device_feature_markdown, drift_markdown
from edgeops.telemetry.store import TelemetryStore
from edgeops.telemetry.trends import MAX_POINTS, chart_buckets, device_drift, evidence_trend, health_trends

pytestmark = pytest.mark.unit

NUMERIC, CATEGORICAL = "monthly charges", "plan/type"
NOW = datetime.now(UTC).replace(second=0, microsecond=0)


def manifest(version: int = 1) -> ReleaseManifest:
    """A release whose references are 4,000-row samples, so a shifted window is seen at once."""
    return fake_manifest(version=version, reference={
        NUMERIC: Reference(NumericBins((0.0, 1.0, 2.0, 3.0, 4.0, 5.0)), Counts((800, 800, 800, 800, 800))),
        CATEGORICAL: Reference(CategoricalBins(("a", "b")), Counts((2400, 1600)))},
        prediction_reference=Reference(CategoricalBins(("0", "1")), Counts((3000, 1000))))


def draw(ref: Reference, n: int, rng: np.random.Generator, shift: bool = False) -> Counts:
    probs = np.asarray(ref.counts.vector(), dtype=float)
    probs = probs / probs.sum()
    if shift:      # half of the values move to the first bin
        probs = 0.5 * probs + 0.5 * np.eye(len(probs))[0]
    drawn = rng.multinomial(n, probs).tolist()
    k = len(ref.counts.counts)
    return Counts(tuple(drawn[:k]), *drawn[k:])


def window(m: ReleaseManifest, device: str, seq: int, minutes_ago: int, rng: np.random.Generator, *,
           shifted: str | None = None, count: int = 400, errors: int = 0,
           latency: dict[str, float] | None = None) -> TelemetryWindow:
    end = (NOW - timedelta(minutes=minutes_ago) + timedelta(seconds=30)).isoformat()
    return TelemetryWindow(
        device=device, seq=seq, model=m.name, version=m.version, start=end, end=end, count=count,
        errors={"model": errors} if errors else {}, latency_ms=latency or {"p50": 1.0, "p95": 2.0, "p99": 3.0},
        features={col: draw(ref, count, rng, col == shifted) for col, ref in m.reference.items()},
        predictions=draw(m.prediction_reference, count, rng))


def lookup(*manifests: ReleaseManifest):  # type: ignore[no-untyped-def]
    by_key = {(m.name, m.version): m for m in manifests}
    return lambda model, version: by_key.get((model, version))


def test_the_drift_trend_is_the_check_points_own_decision(store: TelemetryStore) -> None:
    """Evidence above the decision line exactly where the monitor's check points rejected: one statistic."""
    m, rng = manifest(), np.random.default_rng(1)
    store.write([window(m, "dev", i, 30 - i, rng, shifted=NUMERIC if i >= 25 else None) for i in range(30)])
    report = run_monitor(store, lookup(m), now=NOW + timedelta(minutes=1))
    (fleet,) = report.fleet
    timeline = fleet.timeline
    assert timeline is not None and timeline.p is not None
    assert timeline.series == (NUMERIC, CATEGORICAL, PREDICTION) and timeline.p.shape == (30, 3)
    trend = evidence_trend(timeline, report.buckets)
    assert trend is not None and len(trend.times) == 30          # 30 check points, one point each
    rejected = [tuple(n for n, hit in zip(trend.series, row, strict=True) if hit) for row in trend.rejected]
    assert rejected == [tuple(r) for r in timeline.rejecting]
    assert [bool(r) for r in rejected] == [False] * 25 + [True] * 5
    assert trend.decision == pytest.approx(-np.log10(timeline.alpha))
    assert trend.opened == datetime.fromisoformat(timeline.checks[25])


def test_a_day_of_check_points_fits_the_chart_and_one_rejecting_minute_still_shows(store: TelemetryStore) -> None:
    m, rng = manifest(), np.random.default_rng(2)
    store.write([window(m, "dev", i, 1440 - i, rng, count=500, shifted=CATEGORICAL if i == 700 else None)
                 for i in range(1440)])
    report = run_monitor(store, lookup(m), now=NOW + timedelta(minutes=1))
    assert report.buckets.width == 360          # a day of 1-minute check points: 6 a bucket
    trend = evidence_trend(report.fleet[0].timeline, report.buckets)  # type: ignore[arg-type]
    assert trend is not None and len(trend.times) == MAX_POINTS
    hits = np.flatnonzero(trend.rejected[:, trend.series.index(CATEGORICAL)])
    assert len(hits) == 1                    # the strongest check point of its bucket: not averaged away
    assert trend.times[hits[0]] <= datetime.fromisoformat(report.fleet[0].timeline.checks[700])  # type: ignore[union-attr]
    assert not trend.rejected[:, trend.series.index(NUMERIC)].any()


def test_health_over_time_sums_the_windows_of_each_bucket(store: TelemetryStore) -> None:
    m, rng = manifest(), np.random.default_rng(3)
    store.write([
        window(m, "a", 0, 10, rng, count=100, errors=10, latency={"p50": 1.0, "p95": 4.0, "p99": 9.0, "max": 20.0}),
        window(m, "b", 0, 10, rng, count=300, errors=2, latency={"p50": 3.0, "p95": 8.0, "p99": 10.0, "max": 30.0}),
        window(m, "a", 1, 5, rng, count=50, errors=0, latency={"p50": 2.0, "p95": 2.0, "p99": 2.0})])
    buckets = chart_buckets(NOW - timedelta(minutes=10), NOW, 60)
    points = health_trends(store.windows(), buckets)[(m.name, m.version)]
    assert [p.windows for p in points] == [2, 1]
    first = points[0]
    assert (first.count, first.errors, first.error_rate) == (400, 12, pytest.approx(0.03))
    assert first.latency("p50") == pytest.approx((1.0 * 100 + 3.0 * 300) / 400)
    assert first.latency("p99") == pytest.approx((9.0 * 100 + 10.0 * 300) / 400)
    assert first.latency_max == 30.0
    assert points[1].latency_max is None and points[1].error_rate == 0.0


def test_the_device_view_puts_drifting_devices_first_and_says_how_many_are_left_out(store: TelemetryStore) -> None:
    m, rng = manifest(), np.random.default_rng(4)
    devices = [f"dev-{i:02d}" for i in range(12)]
    drifting = {"dev-07": NUMERIC, "dev-10": CATEGORICAL}
    store.write([window(m, d, i, 6 - i, rng, shifted=drifting.get(d) if i >= 3 else None)
                 for d in devices for i in range(6)])
    report = run_monitor(store, lookup(m), now=NOW + timedelta(minutes=1))
    rows = device_drift(report.scopes, m.name, m.version)
    assert [r.device for r in rows[:2]] == ["dev-07", "dev-10"] and len(rows) == 12
    assert rows[0].open == (NUMERIC,) and rows[0].rejections[NUMERIC] == 3 and rows[0].rejections[CATEGORICAL] == 0
    lines = device_feature_markdown(report, report.fleet[0], max_rows=4)
    header = next(line for line in lines if line.startswith("| device |"))
    assert header == f"| device | verdict | check points | {NUMERIC} | {CATEGORICAL} | predictions |"
    table = [line for line in lines if line.startswith("| dev-")]
    assert table[0] == "| dev-07 | **drift** | 6 | **drift** 3 | · | · |"
    assert table[1] == "| dev-10 | **drift** | 6 | · | **drift** 3 | · |"
    assert len(table) == 4
    assert "8 more devices not shown (0 with an open episode, 0 with earlier rejections, the rest quiet)." in lines


def test_the_report_shows_both_trend_charts_per_version(store: TelemetryStore) -> None:
    m, rng = manifest(), np.random.default_rng(5)
    store.write([window(m, "dev", i, 20 - i, rng, shifted=NUMERIC if i >= 18 else None) for i in range(20)])
    markdown = drift_markdown(run_monitor(store, lookup(m), now=NOW + timedelta(minutes=1)))
    assert "![Drift evidence per feature over time, churn@1](data:image/png;base64,iVBOR" in markdown
    assert "![Health over time, churn@1](data:image/png;base64,iVBOR" in markdown
    assert f"dashed line: the decision level p < {DriftThresholds().alpha(3):.2g}" in markdown
    assert "| dev | **drift** | 20 | **drift** 2 | · | · |" in markdown
    (scope,) = parse_drift_report(markdown)          # the demo still reads the verdict and the feature rows
    assert (scope.release, scope.verdict, scope.drifted, len(scope.rows)) == ("churn@1", "drift", [NUMERIC], 3)


def moved_on(store: TelemetryStore, *devices: str, version: int) -> None:
    store.write([Reported(device=d, state="serving", model="churn", version=version) for d in devices])


def test_a_version_every_device_has_moved_on_from_is_retired_not_current(store: TelemetryStore,
                                                                        tmp_path: Path) -> None:
    """churn@1 drifted, the fleet moved to churn@2. The report used to list churn@1 as a current verdict
    ("## churn@1: **drift**"), and ``monitor run --fail-on drift`` failed on a version nobody runs."""
    from edgeops.cli.monitor import app

    old, new, rng = manifest(1), manifest(2), np.random.default_rng(6)
    store.write([window(old, d, i, 40 - i, rng, shifted=NUMERIC) for d in ("a", "b") for i in range(5)])
    store.write([window(new, d, 100 + i, 20 - i, rng) for d in ("a", "b") for i in range(15)])
    moved_on(store, "a", "b", version=2)
    paths = []
    for m in (old, new):
        paths += ["--manifest", str(tmp_path / f"churn-{m.version}.json")]
        (tmp_path / f"churn-{m.version}.json").write_bytes(m.to_bytes())
    markdown = drift_markdown(run_monitor(store, lookup(old, new), now=NOW + timedelta(minutes=1)))
    verdicts = [(s.release, s.verdict) for s in parse_drift_report(markdown)]
    assert verdicts == [("churn@2", "ok"), ("churn@1", "retired")]   # history kept, marked, after current ones
    assert "## churn@1: **retired**, no device runs it any more (at the end of the span: drift;" in markdown
    run = CliRunner().invoke(app, ["run", *paths, "--db", store.url, "--fail-on", "drift"])
    assert run.exit_code == 0, run.output
    assert "churn@1 fleet (2 devices, 10 windows) — RETIRED (no device runs it any more): DRIFT" in run.output
    assert "churn@1 device a (1 device, 5 windows) — MOVED ON (the device runs another release): DRIFT" in run.output
    assert "churn@2 fleet (2 devices, 30 windows): no drift" in run.output


def test_a_version_stays_current_while_one_sender_runs_it_or_never_said(store: TelemetryStore) -> None:
    m, rng = manifest(1), np.random.default_rng(7)
    store.write([window(m, d, i, 10 - i, rng) for d in ("a", "b", "silent") for i in range(3)])
    moved_on(store, "a", version=2)
    moved_on(store, "b", version=1)
    report = run_monitor(store, lookup(m), now=NOW + timedelta(minutes=1))
    assert report.retired == frozenset({("churn", 1, "a")})
    moved_on(store, "b", version=2)       # "silent" never reported: nothing says it moved on
    assert ("churn", 1, None) not in run_monitor(store, lookup(m), now=NOW + timedelta(minutes=1)).retired


def test_json_output_says_which_scopes_are_retired(store: TelemetryStore) -> None:
    m, rng = manifest(1), np.random.default_rng(8)
    store.write([window(m, "a", i, 10 - i, rng) for i in range(3)])
    moved_on(store, "a", version=2)
    report: MonitorReport = run_monitor(store, lookup(m), now=NOW + timedelta(minutes=1))
    assert {(s["device"], s["retired"]) for s in report.to_dict()["scopes"]} == {(None, True), ("a", True)}

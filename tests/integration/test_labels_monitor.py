"""Realized performance in the monitor, on a real SQLite store and real release manifests: labels credited to
the version and time of their predictions, judged by default against the release's test accuracy, with a
minimum count and an interval; the thresholds from edgeops.yaml, the command line and the flow."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from releases import write_manifests
from typer.testing import CliRunner

from edge_agent.protocol import TelemetryWindow
from edgeops.telemetry.monitor import episode_events, manifest_references, run_monitor
from edgeops.telemetry.store import TelemetryStore

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)


def iso(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.fixture(scope="module")
def manifests(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """churn@1 and churn@2, binary classifiers whose holdout accuracy was 0.8."""
    return write_manifests(tmp_path_factory.mktemp("manifests"), [("churn", 1, "binary"), ("churn", 2, "binary")])


def window(device: str, seq: int, version: int, at: datetime, count: int, **fields: object) -> TelemetryWindow:
    return TelemetryWindow(device=device, seq=seq, model="churn", version=version, start=iso(at),
                           end=iso(at + timedelta(minutes=1)), count=count, latency_ms={"p95": 2.0},
                           epoch="e1", **fields)  # type: ignore[arg-type]


def credit(version: int, at: datetime, labelled: int, correct: int) -> object:
    from edge_agent.protocol import FeedbackCredit  # here, so the other tests also run against older code

    return FeedbackCredit("churn", version, iso(at), labelled, correct=correct)


def fleet(report, version: int):  # type: ignore[no-untyped-def]
    return next(s for s in report.scopes if s.device is None and s.version == version)


def test_accuracy_well_below_the_releases_test_accuracy_is_degraded_by_default(store: TelemetryStore,
                                                                              manifests: list[Path]) -> None:
    """200 labels at 50 % on a release tested at 80 %: never judged before (no threshold unless set in Python)."""
    store.write([window("a", i, 1, NOW - timedelta(minutes=10 - i), 100, feedback={"labelled": 20.0,
                                                                                     "accuracy": 0.5})
                 for i in range(10)])
    report = run_monitor(store, manifest_references(manifests[:1]), now=NOW + timedelta(minutes=1))
    health = fleet(report, 1).health
    assert health.realized is not None and health.verdict == "ok"    # the service answers; the model is wrong
    assert "accuracy 0.5 [0.431, 0.569] over 200 labels < 0.75" in health.realized.reason
    events = episode_events(store, report)
    assert "edgeops.health.degraded" not in [e.event for e in events]
    performance = [e for e in events if e.event == "edgeops.performance.degraded"]
    assert {e.resource["prefect.resource.id"] for e in performance} == {"edgeops.model.churn", "edgeops.device.a"}
    payload = next(e for e in performance if e.resource["prefect.resource.id"] == "edgeops.model.churn").payload
    assert (payload["source"], payload["labelled"], payload["verdict"], payload["threshold"]) == (
        "realized", 200, "degraded", pytest.approx(0.75))


def test_late_labels_are_credited_to_the_old_version_and_its_time(store: TelemetryStore, manifests: list[Path]) -> None:
    """churn@1 served two hours ago, churn@2 now; labels for churn@1's predictions arrive in churn@2's windows."""
    old = NOW - timedelta(hours=2)
    store.write([window("a", 0, 1, old, 300), window("b", 0, 1, old, 300)])
    late = [window("a", 1, 2, NOW, 100, feedback={"labelled": 120.0, "accuracy": 0.5},
                   feedback_for=(credit(1, old, 100, 50), credit(2, NOW, 20, 10))),
            window("b", 1, 2, NOW, 100, feedback={"labelled": 60.0, "accuracy": 0.5},
                   feedback_for=(credit(1, old, 60, 30),))]
    store.write([TelemetryWindow.parse(w.to_bytes()) for w in late])
    store.write([TelemetryWindow.parse(w.to_bytes()) for w in late[:1]])   # a redelivery credits nothing again
    report = run_monitor(store, manifest_references(manifests), window=timedelta(hours=1),
                         now=NOW + timedelta(minutes=5), label_window=timedelta(hours=24))
    assert fleet(report, 1).windows == 0   # churn@1 has no window in the last hour: judged on its labels alone
    assert (fleet(report, 1).health.labelled, fleet(report, 1).health.accuracy) == (160, 0.5)
    assert fleet(report, 1).health.realized.verdict == "degraded"  # type: ignore[union-attr]
    assert (fleet(report, 2).health.labelled, fleet(report, 2).health.accuracy) == (20, 0.5)   # not the 180 arrived
    assert fleet(report, 2).health.realized.verdict == "insufficient_data"  # type: ignore[union-attr]
    by_device = {(s.device, s.version): s.health.labelled for s in report.scopes if s.device}
    assert by_device == {("a", 1): 100, ("b", 1): 60, ("a", 2): 20, ("b", 2): 0}
    short = run_monitor(store, manifest_references(manifests), window=timedelta(hours=1),
                        now=NOW + timedelta(minutes=5), label_window=timedelta(hours=1))
    assert {s.version for s in short.scopes} == {2}   # labels count by when the prediction was made


def test_thresholds_come_from_edgeops_yaml_and_the_command_line(tmp_path: Path, store: TelemetryStore,
                                                                manifests: list[Path],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeops.cli import build_app

    app = build_app()

    store.write([window("a", i, 1, NOW - timedelta(minutes=30 - i), 100, feedback={"labelled": 8.0, "accuracy": 0.75})
                 for i in range(10)])   # 80 labels at 75 %: ok against 0.8 - 0.05, whatever the interval
    monkeypatch.chdir(tmp_path)
    args = ["monitor", "run", "--db", store.url, "--manifest", str(manifests[0]), "--fleet-only", "--json"]
    runner = CliRunner()

    def realized(*extra: str) -> dict[str, object]:
        result = runner.invoke(app, [*args, *extra])
        assert result.exit_code == 0, result.output
        return json.loads(result.output)["scopes"][0]["health"]["realized"]

    assert realized()["verdict"] == "ok"
    (tmp_path / "edgeops.yaml").write_text("monitor:\n  labels:\n    min_accuracy: 0.9\n    min_labels: 100\n")
    assert realized()["reason"] == "80 labels < 100"
    assert realized("--min-labels", "80")["verdict"] == "degraded"
    assert realized("--min-labels", "80", "--min-accuracy", "0.7")["verdict"] == "ok"
    text = runner.invoke(app, [*args[:-1], "--min-labels", "80"])
    assert "accuracy 0.75 [0.645, 0.832] over 80 labels (threshold 0.9)" in text.output
    assert "from 80 labels on" in text.output
    (tmp_path / "edgeops.yaml").write_text("monitor:\n  labels:\n    confidence: 1.5\n")
    bad = runner.invoke(app, args)
    assert bad.exit_code == 1 and "monitor.labels.confidence: must be between 0 and 1" in bad.output


def test_without_db_the_commands_read_the_store_edgeops_yaml_names(tmp_path: Path, manifests: list[Path],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """``telemetry.url`` is the one setting of the store; `monitor run`, `telemetry stats` and `telemetry serve`
    used to open ./.edgeops/telemetry.db whatever it said (a worker's monitor and the ingest then disagreed)."""
    from edgeops.cli import app

    project = tmp_path / "project"
    project.mkdir()
    (project / "edgeops.yaml").write_text("telemetry:\n  url: sqlite:///shared/telemetry.db\n")
    (project / "shared").mkdir()
    store = TelemetryStore(f"sqlite:///{project / 'shared' / 'telemetry.db'}")  # relative: to edgeops.yaml
    store.write([window("a", i, 1, NOW - timedelta(minutes=10 - i), 100) for i in range(3)])
    store.close()
    monkeypatch.chdir(tmp_path)  # another folder: ./.edgeops/telemetry.db would be empty
    runner = CliRunner()
    config = ["--config", str(project / "edgeops.yaml")]
    monitor = runner.invoke(app, ["monitor", "run", "--manifest", str(manifests[0]), "--fleet-only", "--json",
                                  *config])
    assert monitor.exit_code == 0, monitor.output
    assert [s["windows"] for s in json.loads(monitor.output)["scopes"]] == [3]
    stats = runner.invoke(app, ["telemetry", "stats", "--json", *config])
    assert stats.exit_code == 0, stats.output
    assert json.loads(stats.output)["windows"] == 3
    assert not (tmp_path / ".edgeops").exists()


def test_the_monitor_flow_takes_the_thresholds_as_parameters(store: TelemetryStore, manifests: list[Path],
                                                              prefect_harness: None) -> None:

    from edgeops.flows.monitor import monitor_flow

    store.write([window("a", i, 1, NOW - timedelta(minutes=30 - i), 100, feedback={"labelled": 8.0, "accuracy": 0.75})
                 for i in range(10)])
    summary = monitor_flow(db=store.url, manifests=[str(manifests[0])], per_device=False, min_labels=80,
                           min_accuracy=0.9)
    assert summary["events"] == ["edgeops.performance.degraded"]
    assert summary["performance_degraded"] == ["churn@1 (realized)"]

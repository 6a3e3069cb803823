"""Performance estimated without labels in the monitor's outputs: the CLI line and ``--fail-on performance``, the
flow's artifact and its ``edgeops.performance.degraded`` event (once per episode), on a real SQLite store with
windows whose score counts come from the agent's own counting."""

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from releases import build_release
from typer.testing import CliRunner

from edge_agent.protocol import ScoreCounts, TelemetryWindow, now_iso
from edge_agent.scoring import freeze_scores, score_cells
from edgeops.telemetry.monitor import manifest_references, run_monitor
from edgeops.telemetry.performance_report import performance_markdown
from edgeops.telemetry.store import TelemetryStore

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def manifest_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("manifest") / "churn-5.json"
    path.write_bytes(build_release("churn", 5, Ed25519PrivateKey.generate(), calibrated=True).manifest.to_bytes())
    return path


def scores(p_one: np.ndarray) -> ScoreCounts:
    return freeze_scores(score_cells(np.column_stack([1 - p_one, p_one]), 20), 20)


def window(device: str, seq: int, p_one: np.ndarray) -> TelemetryWindow:
    ts = now_iso()
    return TelemetryWindow(device=device, seq=seq, model="churn", version=5, start=ts, end=ts, count=len(p_one),
                           scores=scores(p_one))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TelemetryStore]:
    """Device ``sure`` answers like the training data (probabilities near 0 or 1), ``unsure`` near 0.5."""
    rng = np.random.default_rng(4)
    s = TelemetryStore(f"sqlite:///{tmp_path / 'telemetry.db'}")
    s.write([*[window("sure", i, rng.choice([0.03, 0.97], 200)) for i in range(3)],
             *[window("unsure", i, rng.uniform(0.45, 0.55, 200)) for i in range(3)]])
    yield s
    s.close()


def test_the_cli_prints_the_estimate_per_scope_and_fails_on_performance(store: TelemetryStore,
                                                                        manifest_path: Path) -> None:
    from edgeops.cli.monitor import app

    base = ["run", "--manifest", str(manifest_path), "--db", store.url]
    result = CliRunner().invoke(app, base)
    assert result.exit_code == 0, result.output
    lines = {line.split(":")[0]: line for line in result.output.splitlines() if "estimated" in line}
    unsure, sure = lines["churn@5 device unsure"], lines["churn@5 device sure"]
    assert "on 600 predictions (test 0.8)" in unsure and "DEGRADED" in unsure and "< 0.750]" in unsure
    assert sure.split(" [")[-1].startswith("0.9") and sure.endswith(" ok")   # e.g. "1 [0.972, 1] ... ok"
    fleet = CliRunner().invoke(app, [*base, "--fleet-only", "--fail-on", "performance"])
    assert fleet.exit_code == 0, fleet.output            # the fleet's interval still reaches 0.75
    devices = CliRunner().invoke(app, [*base, "--fail-on", "performance"])
    assert devices.exit_code == 0, devices.output        # --fail-on judges fleet-wide scopes only


def test_fail_on_performance_exits_6_when_the_fleet_estimate_is_degraded(tmp_path: Path, manifest_path: Path) -> None:
    from edgeops.cli.monitor import app

    store = TelemetryStore(f"sqlite:///{tmp_path / 'unsure.db'}")
    rng = np.random.default_rng(5)
    store.write([window("unsure", i, rng.uniform(0.45, 0.55, 200)) for i in range(3)])
    store.close()
    failing = CliRunner().invoke(app, ["run", "--manifest", str(manifest_path), "--db", store.url, "--fleet-only",
                                       "--fail-on", "performance"])
    assert failing.exit_code == 6 and "failing (--fail-on performance): churn@5 (estimated performance)" \
        in failing.output  # EXIT_DEGRADED


def test_the_flow_publishes_the_estimate_and_raises_one_event_per_episode(store: TelemetryStore,
                                                                         manifest_path: Path,
                                                                         prefect_harness: None) -> None:
    from edgeops.flows.monitor import monitor_flow

    report = run_monitor(store, manifest_references([manifest_path]))
    markdown = performance_markdown(report)
    assert "| churn@5 | accuracy |" in markdown and "| unsure | churn@5 | accuracy |" in markdown
    assert "## churn@5 per hour" in markdown and "| predictions |" in markdown
    assert "![Estimated and realized accuracy over time, churn@5](data:image/png;base64," in markdown
    assert "no labels for these predictions yet" in markdown and report.performance_chart["churn", 5].step_hours == 1
    summary = monitor_flow(db=store.url, manifests=[str(manifest_path)])
    again = monitor_flow(db=store.url, manifests=[str(manifest_path)])
    assert summary["events"].count("edgeops.performance.degraded") >= 1
    assert "edgeops.performance.degraded" not in again["events"]
    rows = store.episodes()
    assert {(r["kind"], r["scope"]) for r in rows} >= {("performance", "unsure")}

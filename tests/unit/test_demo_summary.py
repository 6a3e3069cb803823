"""The demo's last lines: facts, never placeholders (issue 17 saw ``churn@-`` and ``v?`` after a failed loop),
and what to do next, with ``--keep-running`` named."""

from edgeops.cli.demo import next_steps, summary_lines
from edgeops.demo.parts import DemoResult

PLACEHOLDERS = ("@-", "v?", "/?", "(-", "run -")


def closed() -> DemoResult:
    return DemoResult(closed=True, work_dir="/w", prefect_ui="http://127.0.0.1:4200", drift_feature="monthly charges",
                      drift={"psi": {"monthly charges": 0.91}}, version_before=1, version_after=2, champion=2,
                      devices={"demo-edge-1": 2, "demo-edge-2": 2}, retrain_run="r-1", seconds=80.0,
                      timings={"v1 on every agent": 30.0})


def test_a_closed_loop_reads_as_the_versions_it_went_through() -> None:
    text = "\n".join(summary_lines(closed()))
    assert "LOOP CLOSED in 80.0 s" in text
    assert "churn@1 → churn@2 (champion churn@2; retrain run r-1)" in text
    assert "2 of 2 on churn@2 (demo-edge-1 churn@2, demo-edge-2 churn@2)" in text
    assert "http://" not in text  # the UI is gone once the summary's reader sees it, unless --keep-running


def test_a_loop_that_failed_before_anything_prints_no_placeholder() -> None:
    result = DemoResult(closed=False, reason="the broker did not start", work_dir="/w", seconds=3.0)
    text = "\n".join(summary_lines(result))
    assert not [p for p in PLACEHOLDERS if p in text], text
    assert "drift:        not detected" in text and "no release was trained" in text
    assert "agents:       none reported a model" in text
    assert "reason:       the broker did not start" in text


def test_a_loop_that_stopped_before_the_retrain_names_what_each_agent_runs() -> None:
    result = DemoResult(closed=False, reason="timeout", work_dir="/w", version_before=1,
                        devices={"demo-edge-1": 1, "demo-edge-2": None}, seconds=240.0)
    text = "\n".join(summary_lines(result))
    assert not [p for p in PLACEHOLDERS if p in text], text
    assert "churn@1, not retrained" in text
    assert "demo-edge-1 churn@1, demo-edge-2 no model" in text


def test_the_next_steps_name_keep_running_unless_it_was_used() -> None:
    steps = "\n".join(next_steps(closed(), kept_running=False))
    assert "edgeops demo --keep-running" in steps and "edgeops up" in steps and "edgeops quickstart" in steps
    assert "--keep-running" not in "\n".join(next_steps(closed(), kept_running=True))
    failed = DemoResult(closed=False, reason="timeout", work_dir="/w")
    assert "/w/logs/" in "\n".join(next_steps(failed, kept_running=False))

"""``edgeops demo`` as a user runs it: its own Mosquitto and Prefect server on free ports, three real
``edgeops-agent`` processes, the ingest, the served monitor/retrain deployments — and the loop must close:
drift on the shifted feature → edgeops.drift.detected → triggered retrain → canary rollout → every agent on
v2, v2 champion. Afterwards nothing it started may still run; also not after a Ctrl-C in the middle."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from services import processes_mentioning

from edgeops.flows.serve_demo import RETRAIN_TRIGGER
from edgeops.release.registry import Registry
from edgeops.stack.supervisor import group_alive

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
EDGEOPS = Path(sys.executable).with_name("edgeops")
SHIFTED = "monthly charges"  # DemoOptions.shift_feature


def demo_env() -> dict[str, str]:
    """No broker and no Prefect API from the outside: the demo must start its own, on free ports."""
    return {k: v for k, v in os.environ.items() if k not in ("EDGEOPS_MQTT_URL", "PREFECT_API_URL")}


def test_retrain_trigger_of_the_demo_is_the_deployed_one() -> None:
    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    (trigger,) = next(d for d in spec["deployments"] if d["name"] == "retrain")["triggers"]
    assert trigger == RETRAIN_TRIGGER


def test_demo_closes_the_loop_and_leaves_nothing_running(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    proc = subprocess.run([str(EDGEOPS), "demo", "--agents", "3", "--timeout", "240", "--json", "--work-dir",
                           str(work)], env=demo_env(), cwd=tmp_path, capture_output=True, text=True, timeout=290)
    print(proc.stderr[-6000:])
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)

    assert result["closed"] is True and result["reason"] == ""
    assert result["drift_feature"] == SHIFTED
    assert SHIFTED in result["drift"]["drifted"]  # the edgeops.drift.detected payload
    assert result["drift"]["scope"] == "fleet"
    # the monitor run's drift report artifact (read back through the demo's Prefect API) names the feature
    (row,) = result["drift_report"]
    assert row.startswith(f"| {SHIFTED} |") and row.endswith("| drift |")

    assert (result["version_before"], result["version_after"], result["champion"]) == (1, 2, 2)
    assert result["devices"] == {f"demo-edge-{i}": 2 for i in (1, 2, 3)}
    assert Registry(work / ".edgeops" / "registry").champion("churn").version == 2  # type: ignore[union-attr]
    assert result["retrain_run"]
    assert result["prefect_ui"].startswith("http://127.0.0.1:")
    assert result["broker_url"].startswith("mqtt://127.0.0.1:")

    assert len(result["pids"]) == 3 + 4  # agents + broker, Prefect server, ingest, serving process
    assert [pid for pid in result["pids"] if group_alive(pid)] == []
    assert processes_mentioning(str(work)) == []
    print(f"demo: {result['seconds']} s; milestones {result['timings']}")


def test_ctrl_c_in_the_middle_stops_everything(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(EDGEOPS), "demo", "--agents", "2", "--timeout", "240", "--work-dir", str(work)],
                                env=demo_env(), cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while "serving deployments" not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        assert processes_mentioning(str(work))  # the services are up: there is something to stop
        os.kill(proc.pid, signal.SIGINT)
        code = proc.wait(90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = log.read_text(errors="replace")
    assert code != 0, text
    assert "interrupted" in text.splitlines()[-1], text
    assert processes_mentioning(str(work)) == [], text

"""CLI conventions with the real parts behind them: a Mosquitto, simulated devices, a telemetry store, a
Prefect test server for the rollout flow, and ``edgeops telemetry serve`` as a process."""

import itertools
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_procs import run_edgeops
from releases import build_release
from services import Mosquitto, free_port, wait_until
from simulated_fleet import SimDevice, SimFleet
from typer.testing import CliRunner

from edge_agent.protocol import Status, Topics
from edgeops.cli import build_app
from edgeops.mqtt import ControlClient
from edgeops.release.registry import Registry
from edgeops.release.signing import generate_keys, load_private_key, load_public_key

pytestmark = pytest.mark.integration
runner = CliRunner()


@dataclass
class Project:
    root: Path
    broker: str
    topics: Topics

    def invoke(self, *args: str) -> tuple[int, str, str]:
        result = runner.invoke(build_app(), list(args))
        return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def project(tmp_path: Path, session_broker: str, topic_prefix: str,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    """A project whose edgeops.yaml names the session's broker and a prefix of this test's own."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EDGEOPS_MQTT_URL", raising=False)
    (tmp_path / "edgeops.yaml").write_text(f"mqtt:\n  url: {session_broker}\n  prefix: {topic_prefix}\n")
    private, _ = generate_keys(tmp_path / ".edgeops" / "keys")
    key = load_private_key(private)
    registry = Registry(tmp_path / ".edgeops" / "registry")
    for _ in range(2):
        registry.register("churn", lambda v: (lambda r: (r.manifest, r.data))(build_release("churn", v, key)))
    yield Project(tmp_path, session_broker, Topics(topic_prefix))
    with ControlClient(session_broker) as client:
        client.publish_many((t, b"", True) for t in client.collect_retained(f"{topic_prefix}/#"))


def test_fleet_ls_names_the_broker_it_asked_and_where_that_came_from(project: Project,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = project.invoke("fleet", "ls")
    assert code == 0
    assert out.strip() == (f"no devices have reported on {project.broker} under prefix {project.topics.prefix!r} "
                           "(URL from mqtt.url of the config)")
    dead = f"mqtt://127.0.0.1:{free_port()}"
    monkeypatch.setenv("EDGEOPS_MQTT_URL", dead)
    code, out, err = project.invoke("fleet", "ls", "--json")
    assert code == 1 and out == ""
    assert err.startswith(f"edgeops: cannot reach the MQTT broker at {dead}: ") and len(err.splitlines()) == 1
    assert "(URL from $EDGEOPS_MQTT_URL; --broker or $EDGEOPS_MQTT_URL chooses another)" in err
    code, _, err = project.invoke("fleet", "ls", "--broker", dead)
    assert code == 1 and err.strip().endswith("(URL from --broker)")


def test_fleet_ls_wait_returns_once_a_matching_device_is_online(project: Project) -> None:
    """The README starts an agent in the background and lists it next: `--wait` bridges its start-up."""
    code, _, err = project.invoke("fleet", "ls", "--target", "site=berlin", "--wait", "1")
    assert code == 1
    assert err.strip() == (f"edgeops: no device matching the target came online within 1 s on {project.broker} "
                           f"under prefix {project.topics.prefix!r}")
    sims = [SimDevice("late", {"site": "berlin"}, "churn", 1, state="serving")]
    fleet = SimFleet(project.broker, project.topics, sims)
    starter = threading.Timer(1.5, fleet.__enter__)  # comes online while `fleet ls` waits
    starter.start()
    try:
        code, out, err = project.invoke("fleet", "ls", "--target", "site=berlin", "--wait", "30", "--json")
    finally:
        starter.join()
        fleet.__exit__(None, None, None)
    assert code == 0, err
    assert [(d["device"], d["online"]) for d in json.loads(out)] == [("late", True)]


def test_fleet_ls_piped_is_one_whole_line_per_device(project: Project) -> None:
    labels = {"site": "berlin-charlottenburg-north-building-7", "line": "assembly-line-number-12", "shift": "night"}
    sims = [SimDevice("edge-device-with-a-rather-long-name-0001", labels, "churn", 1, state="serving")]
    with SimFleet(project.broker, project.topics, sims) as fleet:
        fleet.wait_until(lambda: fleet.devices[sims[0].device].announced, 10, "announced")
        run = run_edgeops(["fleet", "ls"], project.root)
    assert run.code == 0, run.stderr
    header, row = (line.split("\t") for line in run.stdout.splitlines())
    assert header == ["DEVICE", "LABELS", "MODEL@VERSION", "STATE", "STATUS", "LAST SEEN", "LAST ERROR"]
    assert row[:5] == ["edge-device-with-a-rather-long-name-0001",
                       "line=assembly-line-number-12,shift=night,site=berlin-charlottenburg-north-building-7",
                       "churn@1", "serving", "online"]
    assert run.heavy() == []


def test_fleet_ls_without_a_config_file_uses_the_default_prefix_and_loads_only_what_it_reads(
        tmp_path: Path, own_broker: Mosquitto) -> None:
    """As quickstart leaves a project (no edgeops.yaml): the broker section's defaults, no whole config, no
    telemetry or manifest classes, and paho without the standard library's HTTP stack (tests/unit/test_cli_fast.py
    holds the commands that need no broker)."""
    sims = [SimDevice("d-default", {"site": "a"}, "churn", 1, state="serving")]
    with SimFleet(own_broker.url, Topics("edgeops"), sims) as fleet:
        fleet.wait_until(lambda: fleet.devices["d-default"].announced, 10, "announced")
        run = run_edgeops(["fleet", "ls", "--json"], tmp_path, env={"EDGEOPS_MQTT_URL": own_broker.url})
    assert run.code == 0, run.stderr
    assert [(d["device"], d["online"]) for d in json.loads(run.stdout)] == [("d-default", True)]
    loaded = {"edgeops.config.load", "edgeops.config.train", "edge_agent.protocol.manifest",
              "edge_agent.protocol.window", "urllib.request", "http.client", "email.parser"} & run.modules
    assert loaded == set() and run.heavy() == []


def test_one_device_and_three_waves_warns_and_numbers_waves_from_one(project: Project,
                                                                      prefect_harness: None) -> None:
    key = load_public_key(project.root / ".edgeops" / "keys" / "release.pub")
    sims = [SimDevice("d0", {"site": "berlin"}, "churn", 1, state="serving", public_keys=(key,))]
    with SimFleet(project.broker, project.topics, sims):
        code, out, err = project.invoke("rollout", "start", "churn@2", "--waves", "3", "--json")
        assert code == 0, err
        rollout = json.loads(out)
        assert f"rollout {rollout['id']}: churn@2 to 1 device in 1 wave (canary 1)" in err
        assert ("edgeops: warning: --waves: asked for a canary and 3 waves after it, but 1 device fills only 1 wave "
                "(a wave needs at least one device)") in err
    code, out, _ = project.invoke("rollout", "status", rollout["id"])
    assert code == 0
    summary, header, row = out.splitlines()
    assert " completed wave 1/1: 1 succeeded, 0 failed" in summary
    assert summary.count("succeeded") == 1  # a completed rollout's reason only repeated the counts
    assert header.split("\t") == ["DEVICE", "WAVE", "OUTCOME", "ONLINE", "RESTORED", "DETAIL"]
    assert row.split("\t")[:4] == ["d0", "1/1", "succeeded", "yes"]


def test_telemetry_serve_logs_only_when_something_changed(project: Project) -> None:
    db = f"sqlite:///{project.root / 'telemetry.db'}"
    child = subprocess.Popen([sys.executable, "-m", "edgeops.cli", "telemetry", "serve", "--db", db,
                              "--group", "g" + project.topics.prefix.rsplit("/", 1)[-1], "--flush-ms", "20",
                              "--stats-every", "0.05", "--no-events"],
                             stderr=subprocess.PIPE, text=True, cwd=project.root)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(child.stderr), daemon=True)  # type: ignore[arg-type]
    reader.start()
    try:
        assert wait_until(lambda: any("subscribed 1" in line for line in lines), 30), lines
        with ControlClient(project.broker) as client:
            client.publish(project.topics.device("dev-a", "status"), Status(device="dev-a", status="online").to_bytes())
        assert wait_until(lambda: any("other 1" in line for line in lines), 30), lines
        settled = len(lines)
        time.sleep(1.0)  # twenty checks of unchanged counters
        assert [line for line in lines[settled:] if " ingest: " in line] == []
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(30)
        reader.join(5)
    stats = [line for line in lines if " ingest: " in line]
    assert all(a.split(" ingest: ")[1] != b.split(" ingest: ")[1] for a, b in itertools.pairwise(stats))
    assert "IngestStats(" not in "".join(lines) and lines[-1].startswith("stopped: received ")

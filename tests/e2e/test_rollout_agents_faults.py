"""Rollout faults with real ``edgeops-agent`` processes, driven through the installed ``edgeops`` command:
an operator abort mid-rollout, a second overlapping rollout, a controller killed with SIGKILL and resumed,
and devices that are offline during the rollout (one comes back, one does not until after it).

Mid-rollout windows are made deterministic without sleeps: a frozen (SIGSTOP) agent keeps its TCP session, so
the broker and the controller still see it online and its wave waits for it until ``--device-timeout``
(120 s here); the tests poll the rollout database for that state and act inside the window. The agents are
shared by the module (starting six costs ~5 s); each test starts from "every agent online and serving the
version it is told to" and leaves the fleet in that state again.

Fleet plan by name (all online): canary f1, waves [f2 f3] [f4 f5] [f6]."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from agent_procs import AgentProcess, spawn_agent, stop_all, wait_fleet
from prefect.settings import PREFECT_API_URL
from releases import build_release
from services import unique_prefix

from edge_agent.protocol import Desired, Topics
from edgeops.mqtt import ControlClient
from edgeops.release.publish import publish_release
from edgeops.release.registry import Registry
from edgeops.release.signing import generate_keys, load_private_key
from edgeops.rollout.controller import RolloutController, start_rollout
from edgeops.rollout.fleet import DeviceView
from edgeops.rollout.plan import RolloutPolicy
from edgeops.rollout.signer import DesiredSigner
from edgeops.rollout.state import RolloutRecord, RolloutStore

pytestmark = pytest.mark.e2e

EDGEOPS = Path(sys.executable).with_name("edgeops")  # the console script pyproject.toml installs
DEVICES = [f"f{i}" for i in range(1, 7)]
TARGET = "group=faults"
WAVE_ARGS = ("--target", TARGET, "--canary", "10%", "--waves", "3", "--max-failure", "5%")
HANG_WINDOW = ("--device-timeout", "120")  # a frozen agent holds its wave this long: the window to act in


@dataclass
class Project:
    root: Path
    broker: str
    topics: Topics
    agents: dict[str, AgentProcess]
    env: dict[str, str]
    store: RolloutStore
    background: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def config(self) -> Path:
        return self.root / "edgeops.yaml"

    def cli(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(EDGEOPS), *args, "--config", str(self.config)], cwd=self.root, env=self.env,
                              capture_output=True, text=True, timeout=timeout, check=False)

    def spawn(self, name: str, *args: str) -> subprocess.Popen[str]:
        """An ``edgeops`` command in the background (own session: cleanup can end it and any child)."""
        with (self.root / f"{name}.out").open("w") as out, (self.root / f"{name}.err").open("w") as err:
            proc = subprocess.Popen([str(EDGEOPS), *args, "--config", str(self.config)], cwd=self.root,
                                    env=self.env, stdout=out, stderr=err, text=True, start_new_session=True)
        self.background.append(proc)
        return proc

    def output(self, name: str) -> tuple[str, str]:
        return (self.root / f"{name}.out").read_text(), (self.root / f"{name}.err").read_text()

    def fleet_ls(self) -> dict[str, dict[str, object]]:
        """``edgeops fleet ls --json`` as an operator runs it."""
        result = self.cli("fleet", "ls", "--json", "--target", TARGET)
        assert result.returncode == 0, result.stderr
        return {row["device"]: row for row in json.loads(result.stdout)}

    def desired(self) -> dict[str, bytes]:
        """The retained desired state of every device (absent: none)."""
        with ControlClient(self.broker) as client:
            held = client.collect_retained(self.topics.all_devices("desired"))
        return {self.topics.parse_device_topic(t)[0]: p for t, p in held.items()}

    def wait_fleet(self, what: str, ok: Callable[[dict[str, DeviceView]], bool],
                   timeout: float = 60.0) -> dict[str, DeviceView]:
        running = [a for a in self.agents.values() if a.proc is not None and a.running]
        with ControlClient(self.broker) as client:
            return wait_fleet(client, self.topics, what, ok, running, timeout)


def new_rollout(project: Project, known: set[str], proc: subprocess.Popen[str], name: str) -> str:
    """The id of the rollout ``proc`` (an ``edgeops rollout start``) created."""
    return wait_rollout(project, None, "a new rollout", lambda r: True, proc, name, known=known).id


def wait_rollout(project: Project, rollout_id: str | None, what: str, ok: Callable[[RolloutRecord], bool],
                 proc: subprocess.Popen[str] | None, name: str, timeout: float = 90.0,
                 known: Collection[str] = ()) -> RolloutRecord:
    """Poll the rollout database (as ``edgeops rollout status`` reads it) until ``ok`` holds; fail early,
    with the command's output, when the command driving the rollout exited."""
    deadline = time.monotonic() + timeout
    while True:
        if rollout_id is None:
            fresh = [r for r in project.store.records() if r.id not in known]
            rec = fresh[0] if fresh else None
        else:
            rec = project.store.get(rollout_id)
        if rec is not None and ok(rec):
            return rec
        if proc is not None and proc.poll() is not None:
            out, err = project.output(name)
            raise AssertionError(f"`{name}` exited {proc.returncode} before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            shown = rec and {d.device: (d.outcome, d.offline) for d in rec.devices.values()}
            raise AssertionError(f"timed out waiting for {what}: {rec and (rec.status, rec.wave, rec.reason)} "
                                 f"{shown}")
        time.sleep(0.1)


def outcomes(rec: RolloutRecord) -> dict[str, str]:
    return {d: rec.devices[d].outcome for d in sorted(rec.devices)}


def serving(version: int, devices: list[str] = DEVICES) -> Callable[[dict[str, DeviceView]], bool]:
    """Every named device online, serving churn@version, and told to (not mid-change)."""
    return lambda fleet: all(
        d in fleet and fleet[d].online is True and fleet[d].state == "serving" and fleet[d].release ==
        f"churn@{version}" and fleet[d].desired_version == version for d in devices)


def cli_env(home: Path) -> dict[str, str]:
    """The test's Prefect server for the CLI's flow runs (no temporary server per command), its own Prefect
    home, and no broker from the environment (the project config names it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "EDGEOPS_MQTT_URL"}
    env.update(PREFECT_API_URL=str(PREFECT_API_URL.value()), PREFECT_HOME=str(home),
               PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return env


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, session_broker: str,
            prefect_harness: None) -> Iterator[Project]:
    """Project dir (keys, edgeops.yaml, churn@1..5 registered), six agents, and churn@1 rolled out to all."""
    root = tmp_path_factory.mktemp("faults")
    prefix = unique_prefix()
    private, public = generate_keys(root / ".edgeops" / "keys")
    (root / "edgeops.yaml").write_text(f"mqtt:\n  url: {session_broker}\n  prefix: {prefix}\n"
                                       "registry:\n  root: .edgeops/registry\n  keys_dir: .edgeops/keys\n")
    key = load_private_key(private)
    registry = Registry(root / ".edgeops" / "registry")
    for seed in range(5):
        registry.register("churn", lambda v, s=seed: (lambda r: (r.manifest, r.data))(
            build_release("churn", v, key, seed=s, chunk_size=512)))
    # keepalive 300 s: a frozen agent must not be declared offline (Last Will) inside the test's window
    (root / "agents").mkdir()
    agents = {d: spawn_agent(root / "agents", session_broker, prefix, d, public,
                             {"site": "berlin", "group": "faults"}, keepalive_s=300) for d in DEVICES}
    topics = Topics(prefix)
    store = RolloutStore(root / ".edgeops" / "rollouts.db")  # where the CLI keeps it (beside the registry)
    proj = Project(root, session_broker, topics, agents, cli_env(root / "prefect-home"), store)
    try:
        with ControlClient(session_broker) as client:
            record = registry.get("churn", 1)
            publish_release(client, topics, record.manifest, record.onnx_bytes())
            wait_fleet(client, topics, "six idle agents", lambda f: sum(
                d.online is True and d.state == "idle" for d in f.values()) == 6, agents.values())
            first = start_rollout(store, client, topics, model="churn", version=1, selector={"group": "faults"},
                                  policy=RolloutPolicy(canary=0.5, waves=1, device_timeout_s=60))
            signer = DesiredSigner(key)
            assert RolloutController(store, client, topics, signer=signer).run(first.id).status == "completed"
        proj.wait_fleet("churn@1 everywhere", serving(1))
        yield proj
    finally:
        for proc in proj.background:
            end_session(proc)
        stop_all(agents.values())
        with ControlClient(session_broker) as client:
            client.publish_many((t, b"", True) for t in client.collect_retained(f"{prefix}/#"))


def end_session(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture
def fleet(project: Project) -> Iterator[Project]:
    """Each test starts from a settled fleet; whatever a failed test left (a frozen or stopped agent, a
    command still running, an unfinished rollout) is undone so the next test is not judged on it."""
    yield project
    for proc in project.background:
        end_session(proc)
    project.background.clear()
    for agent in project.agents.values():
        agent.thaw()
        if not agent.running:
            agent.start()
    for rec in project.store.records(active_only=True):
        project.cli("rollout", "abort", rec.id, "--reason", "test cleanup")


def current_version(project: Project) -> int:
    """The version the whole fleet settled on (the previous test's, or churn@1 from the module setup)."""
    def settled(fleet: dict[str, DeviceView]) -> bool:
        versions = {fleet[d].version for d in DEVICES if d in fleet}
        return len(versions) == 1 and serving(versions.pop() or 0)(fleet)

    return project.wait_fleet("a settled fleet", settled)[DEVICES[0]].version or 0


def test_cli_abort_mid_rollout_restores_changed_agents_and_an_overlapping_rollout_is_refused(
        fleet: Project) -> None:
    before_version = current_version(fleet)
    before = fleet.desired()
    assert set(before) == set(DEVICES)
    known = {r.id for r in fleet.store.records()}
    fleet.agents["f3"].freeze()  # wave 1 = f2 f3: f2 updates, f3 hangs, the wave waits
    start = fleet.spawn("start", "rollout", "start", "churn@2", *WAVE_ARGS, *HANG_WINDOW, "--wait")
    rid = new_rollout(fleet, known, start, "start")
    mid = wait_rollout(fleet, rid, "wave 1 waiting for f3", lambda r: r.wave == 1 and outcomes(r)["f2"] ==
                       "succeeded", start, "start")
    assert mid.status == "running" and outcomes(mid) == {
        "f1": "succeeded", "f2": "succeeded", "f3": "updating", "f4": "pending", "f5": "pending", "f6": "pending"}
    assert not mid.devices["f3"].offline  # frozen, not offline: it is waited for, not skipped
    shown = fleet.fleet_ls()
    assert [shown[d]["version"] for d in DEVICES] == [2, 2] + [before_version] * 4
    assert shown["f3"]["online"] is True and shown["f3"]["desired_version"] == before_version

    # a second rollout over the same devices, while the first one runs: refused, nothing touched
    second = fleet.cli("rollout", "start", "churn@5", "--target", "site=berlin", "--device-timeout", "120",
                       timeout=30)  # when wrongly accepted, it would run (and wait for f3) instead of exiting
    assert second.returncode == 1, second.stdout + second.stderr
    assert f"rollout {rid} (running) already targets 6 of these devices" in second.stderr
    assert {r.id for r in fleet.store.records()} == known | {rid}
    assert {d: p for d, p in fleet.desired().items() if d in ("f4", "f5", "f6")} == \
        {d: before[d] for d in ("f4", "f5", "f6")}

    abort = fleet.cli("rollout", "abort", rid, "--reason", "operator: canary metrics look wrong")
    assert abort.returncode == 3, abort.stdout + abort.stderr
    assert start.wait(60) == 3  # the controller rolled back and `rollout start` says "aborted"
    assert "aborted" in fleet.output("start")[0] and "canary metrics look wrong" in fleet.output("start")[0]
    fleet.agents["f3"].thaw()  # now sees the rollout's desired state and then the restored one

    done = fleet.store.get(rid)
    assert done.status == "aborted" and done.reason == "operator: canary metrics look wrong"
    assert [d for d in DEVICES if done.devices[d].restored] == ["f1", "f2", "f3"]
    assert all(done.devices[d].desired_at is None for d in ("f4", "f5", "f6"))  # never reached
    now = fleet.desired()
    assert {d: now[d] for d in ("f4", "f5", "f6")} == {d: before[d] for d in ("f4", "f5", "f6")}  # never touched
    for device in ("f1", "f2", "f3"):  # what each was told before, as a new signed message (the old one is a replay)
        again, was = Desired.parse(now[device]), Desired.parse(before[device])
        assert (again.model, again.version, again.rollout_id) == (was.model, was.version, was.rollout_id)
        assert again.counter > was.counter  # type: ignore[operator]
    fleet.wait_fleet(f"churn@{before_version} again everywhere", serving(before_version))
    shown = fleet.fleet_ls()
    assert all(shown[d]["version"] == before_version and shown[d]["state"] == "serving" and shown[d]["online"]
               for d in DEVICES), shown


def test_controller_killed_mid_rollout_is_resumed_from_the_cli(fleet: Project) -> None:
    before_version = current_version(fleet)
    known = {r.id for r in fleet.store.records()}
    fleet.agents["f5"].freeze()  # wave 2 = f4 f5
    start = fleet.spawn("start", "rollout", "start", "churn@3", *WAVE_ARGS, *HANG_WINDOW, "--wait")
    rid = new_rollout(fleet, known, start, "start")
    wait_rollout(fleet, rid, "wave 2 waiting for f5", lambda r: r.wave == 2 and outcomes(r)["f4"] == "succeeded",
                 start, "start")
    start.send_signal(signal.SIGKILL)  # kill -9 the `edgeops rollout start ... --wait` process
    assert start.wait(30) == -signal.SIGKILL

    status = fleet.cli("rollout", "status", rid)
    assert f"(no controller: `edgeops rollout resume {rid}`)" in status.stdout, status.stdout + status.stderr
    listed = json.loads(fleet.cli("rollout", "status", rid, "--json").stdout)
    assert listed["status"] == "running" and listed["wave"] == 2
    assert listed["counts"] == {"pending": 1, "updating": 1, "succeeded": 4, "failed": 0, "timed_out": 0,
                                "offline": 0}
    held = fleet.desired()
    assert [Desired.parse(held[d]).version for d in DEVICES] == [3, 3, 3, 3, 3, before_version]

    resume = fleet.spawn("resume", "rollout", "resume", rid, "--wait")
    wait_rollout(fleet, rid, "the resumed controller's claim",
                 lambda r: r.controller == f"{socket.gethostname()}:{resume.pid}", resume, "resume")
    fleet.agents["f5"].thaw()  # f5 finishes while the new controller watches; then wave 3 (f6) runs
    assert resume.wait(90) == 0, fleet.output("resume")
    assert "completed" in fleet.output("resume")[0]

    done = fleet.store.get(rid)
    assert done.status == "completed" and done.tally()["succeeded"] == 6 and done.controller is None
    held = fleet.desired()
    assert all((Desired.parse(held[d]).version, Desired.parse(held[d]).rollout_id) == (3, rid) for d in DEVICES)
    fleet.wait_fleet("churn@3 everywhere", serving(3))
    shown = fleet.fleet_ls()
    assert all(shown[d]["version"] == 3 and shown[d]["rollout_id"] == rid for d in DEVICES), shown


def test_offline_agents_one_returns_and_one_is_counted_offline_then_catches_up(fleet: Project) -> None:
    before_version = current_version(fleet)
    known = {r.id for r in fleet.store.records()}
    fleet.agents["f6"].stop()  # SIGTERM: a clean shutdown
    fleet.agents["f2"].kill()  # SIGKILL: the broker publishes its Last Will
    fleet.wait_fleet("f2 and f6 offline", lambda f: f["f2"].online is False and f["f6"].online is False)
    # a short device timeout: f2 stays away past it; f6 is back long before its own
    start = fleet.spawn("start", "rollout", "start", "churn@4", *WAVE_ARGS, "--device-timeout", "15", "--wait")
    rid = new_rollout(fleet, known, start, "start")
    waiting = wait_rollout(fleet, rid, "the last wave waiting for the offline devices",
                           lambda r: r.reason.startswith("waiting for"), start, "start")
    assert [sorted(d.device for d in waiting.wave_devices(w)) for w in range(4)] == \
        [["f1"], ["f3", "f4"], ["f2", "f5"], ["f6"]]  # online devices first: the canary gives evidence
    assert waiting.status == "running" and waiting.reason == "waiting for 2 offline device(s) until their timeout"
    assert {d: (r.outcome, r.offline) for d, r in waiting.devices.items() if d in ("f2", "f6")} == \
        {"f2": ("updating", True), "f6": ("updating", True)}
    assert all(outcomes(waiting)[d] == "succeeded" for d in ("f1", "f3", "f4", "f5"))
    shown = fleet.fleet_ls()
    assert shown["f2"]["online"] is False and shown["f6"]["online"] is False
    assert shown["f2"]["version"] == shown["f6"]["version"] == before_version
    assert all(Desired.parse(fleet.desired()[d]).version == 4 for d in DEVICES)  # set while they are away

    fleet.agents["f6"].start()  # back: it finds its retained desired state
    assert start.wait(90) == 0, fleet.output("start")
    out = fleet.output("start")[0]
    assert "completed" in out and "f2: offline" in out and "f6:" not in out
    done = fleet.store.get(rid)
    assert outcomes(done) == {"f1": "succeeded", "f2": "offline", "f3": "succeeded", "f4": "succeeded",
                              "f5": "succeeded", "f6": "succeeded"}
    assert done.reason == "5 succeeded, 0 failed, 1 offline"

    fleet.agents["f2"].start()  # after the rollout: it still picks the release up
    fleet.wait_fleet("churn@4 everywhere", serving(4))
    shown = fleet.fleet_ls()
    assert all(shown[d]["version"] == 4 and shown[d]["online"] is True for d in DEVICES), shown

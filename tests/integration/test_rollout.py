"""Staged rollouts against a real Mosquitto and simulated devices (real protocol, real MQTT sessions)."""

import getpass
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from releases import Release, build_release, new_key
from services import Mosquitto, running_mosquitto
from simulated_fleet import SimDevice, SimFleet

from edge_agent.protocol import Desired, Reported, TelemetryWindow, Topics
from edgeops.errors import RolloutError
from edgeops.mqtt import ControlClient
from edgeops.release.publish import publish_release
from edgeops.rollout.controller import RolloutController, start_rollout
from edgeops.rollout.health import TelemetryHealthGate
from edgeops.rollout.plan import GateContext, GateVerdict, RolloutPolicy
from edgeops.rollout.signer import DesiredSigner
from edgeops.rollout.state import RolloutRecord, RolloutStore
from edgeops.telemetry.drift import parse_ts
from edgeops.telemetry.store import TelemetryStore

pytestmark = pytest.mark.integration

KEY = new_key()
SIGNER = DesiredSigner(KEY)
SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(scope="module")
def release() -> Release:
    return build_release("churn", 4, KEY, chunk_size=256)  # several chunks: the chunked path is exercised


@pytest.fixture
def topics(topic_prefix: str) -> Topics:
    return Topics(topic_prefix)


@pytest.fixture
def control(session_broker: str, topics: Topics, release: Release) -> Iterator[ControlClient]:
    with ControlClient(session_broker) as client:
        publish_release(client, topics, release.manifest, release.data)
        yield client
        retained = client.collect_retained(f"{topics.prefix}/#")
        client.publish_many((t, b"", True) for t in retained)


@pytest.fixture
def store(tmp_path: Path) -> RolloutStore:
    return RolloutStore(tmp_path / "rollouts.db")


def devices(n: int, **overrides: object) -> list[SimDevice]:
    base = {"labels": {"site": "berlin"}, "model": "churn", "version": 3, "state": "serving",
            "public_keys": (KEY.public_key(),)}
    return [SimDevice(f"d{i:02d}", **{**base, **overrides}) for i in range(n)]  # type: ignore[arg-type]


def set_previous(client: ControlClient, topics: Topics, names: list[str], version: int = 3) -> dict[str, bytes]:
    previous = {n: SIGNER.sign(n, "churn", version) for n in names}
    client.publish_many((topics.device(n, "desired"), p, True) for n, p in previous.items())
    return previous


def restores(payload: bytes, previous: bytes | None) -> bool:
    """Whether ``payload`` is a newer signed desired state naming what ``previous`` named (a clear for none)."""
    now = Desired.parse(payload)
    if previous is None:
        return now.clears and now.signature is not None
    before = Desired.parse(previous)
    return (now.model, now.version, now.rollout_id) == (before.model, before.version, before.rollout_id) \
        and now.signature is not None and now.counter > before.counter  # type: ignore[operator]


def project_config(tmp: Path) -> str:
    """An edgeops.yaml whose key directory holds KEY, as `edgeops keys init` leaves it: the rollout flow reads the
    key on its own (a key is never a flow parameter)."""
    from cryptography.hazmat.primitives import serialization

    from edgeops.release.signing import key_paths

    private = key_paths(tmp / "keys")[0]
    private.parent.mkdir(parents=True, exist_ok=True)
    private.write_bytes(KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    (tmp / "edgeops.yaml").write_text("registry: {keys_dir: keys}\n")
    return str(tmp / "edgeops.yaml")


def desired_now(client: ControlClient, topics: Topics) -> dict[str, bytes]:
    retained = client.collect_retained(topics.all_devices("desired"))
    return {topics.parse_device_topic(t)[0]: p for t, p in retained.items()}


POLICY = RolloutPolicy(canary=0.1, waves=3, max_failure=0.05, device_timeout_s=20)


def test_rollout_succeeds_in_canary_plus_three_waves(control: ControlClient, topics: Topics,
                                                    store: RolloutStore, session_broker: str) -> None:
    fleet_devices = [*devices(6), SimDevice("other", labels={"site": "paris"}, model="churn", version=3)]
    with SimFleet(session_broker, topics, fleet_devices) as fleet:
        rec = start_rollout(store, control, topics, model="churn", version=4, selector={"site": "berlin"},
                            policy=POLICY)
        assert rec.waves == 4 and len(rec.wave_devices(0)) == 1 and "other" not in rec.devices
        done = RolloutController(store, control, topics, signer=SIGNER).run(rec.id)
        assert done.status == "completed", done.reason
        assert done.tally()["succeeded"] == 6
        assert all(fleet.devices[f"d{i:02d}"].version == 4 for i in range(6))
        assert fleet.devices["other"].version == 3
        # waves are staged: each wave was set only after the previous wave had finished
        for wave in range(1, done.waves):
            before = max(d.finished_at or 0 for d in done.wave_devices(wave - 1))
            assert all((d.desired_at or 0) >= before for d in done.wave_devices(wave))
        desired = desired_now(control, topics)
        assert {Desired.parse(desired[f"d{i:02d}"]).version for i in range(6)} == {4}
        assert store.get(rec.id).status == "completed"  # as another process would read it


def test_canary_rejected_by_a_device_with_another_key_aborts_and_restores(
        control: ControlClient, topics: Topics, store: RolloutStore, session_broker: str) -> None:
    sims = devices(6)
    sims[0].public_keys = (new_key().public_key(),)  # d00 is the canary and trusts another key only
    previous = set_previous(control, topics, [d.device for d in sims])
    with SimFleet(session_broker, topics, sims) as fleet:
        rec = start_rollout(store, control, topics, model="churn", version=4, selector={"site": "berlin"},
                            policy=POLICY)
        done = RolloutController(store, control, topics, signer=SIGNER).run(rec.id)
        assert done.status == "aborted"
        assert done.devices["d00"].outcome == "failed" and "unknown signing key" in done.devices["d00"].detail
        assert done.devices["d00"].restored
        assert all(done.devices[f"d{i:02d}"].outcome == "pending" for i in range(1, 6))
        now = desired_now(control, topics)
        assert now["d00"] != previous["d00"] and restores(now["d00"], previous["d00"])  # a new message: no replay
        assert all(now[n] == previous[n] for n in previous if n != "d00")  # never touched
        assert all(d.version == 3 for d in fleet.devices.values())


def test_abort_from_another_process_restores_changed_devices(control: ControlClient, topics: Topics,
                                                            tmp_path: Path, session_broker: str) -> None:
    sims = devices(6, install_s=1.0)
    previous = set_previous(control, topics, [d.device for d in sims[:3]])  # d03.. had no desired state
    store = RolloutStore(tmp_path / "rollouts.db")
    with SimFleet(session_broker, topics, sims):
        rec = start_rollout(store, control, topics, model="churn", version=4, selector={"site": "berlin"},
                            policy=POLICY)
        result: list[object] = []
        runner = threading.Thread(target=lambda: result.append(RolloutController(
            store, control, topics, signer=SIGNER).run(rec.id)))
        runner.start()
        other = RolloutStore(tmp_path / "rollouts.db")  # what `edgeops rollout abort` does from another shell
        deadline = time.monotonic() + 30
        while other.get(rec.id).wave < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        other.request_abort(rec.id, "stop: operator saw something")
        runner.join(30)
        done = other.get(rec.id)
        assert done.status == "aborted" and "operator" in done.reason
        changed = {d.device for d in done.devices.values() if d.desired_at is not None}
        assert "d00" in changed and len(changed) < 6
        now = desired_now(control, topics)
        for name in done.devices:
            if name in changed:
                assert restores(now[name], previous.get(name))  # restored, or a signed clear when there was none
            else:
                assert now.get(name) == previous.get(name)  # never touched
        with pytest.raises(RolloutError, match="already aborted"):
            other.request_abort(rec.id)


def test_offline_device_is_waited_for_and_counted(control: ControlClient, topics: Topics, store: RolloutStore,
                                                  session_broker: str) -> None:
    sims = devices(5) + devices(1)
    sims[-1].device = "d99"
    with SimFleet(session_broker, topics, sims) as fleet:
        fleet.go_offline("d00")  # the first by name: the planner must not pick it as the canary
        fleet.wait_until(lambda: not fleet.devices["d00"].online, 10, "d00 offline")
        policy = RolloutPolicy(canary=0.1, waves=2, max_failure=0.05, device_timeout_s=30)
        rec = start_rollout(store, control, topics, model="churn", version=4, selector={"site": "berlin"},
                            policy=policy)
        assert rec.wave_devices(0)[0].device != "d00"
        controller = RolloutController(store, control, topics, signer=SIGNER)
        runner = threading.Thread(target=lambda: controller.run(rec.id))
        runner.start()
        other = RolloutStore(store.path)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            live = other.get(rec.id)
            if live.tally()["succeeded"] == 5:
                break
            time.sleep(0.05)
        assert live.devices["d00"].outcome == "updating" and live.devices["d00"].offline
        assert live.status == "running"  # it waits for the offline device
        fleet.come_online("d00")  # picks up its retained desired state
        runner.join(30)
        done = other.get(rec.id)
        assert done.status == "completed" and done.tally()["succeeded"] == 6
        assert fleet.devices["d00"].version == 4


def test_offline_device_that_never_returns_times_out_as_offline(control: ControlClient, topics: Topics,
                                                                store: RolloutStore, session_broker: str) -> None:
    with SimFleet(session_broker, topics, devices(3)) as fleet:
        fleet.go_offline("d02")
        fleet.wait_until(lambda: not fleet.devices["d02"].online, 10, "d02 offline")
        policy = RolloutPolicy(canary=0.3, waves=1, device_timeout_s=2)
        rec = start_rollout(store, control, topics, model="churn", version=4, selector={}, policy=policy)
        done = RolloutController(store, control, topics, signer=SIGNER).run(rec.id)
        assert done.status == "completed"
        assert done.devices["d02"].outcome == "offline" and done.tally()["succeeded"] == 2
        assert "1 offline" in done.reason


def test_a_report_that_names_another_device_than_its_topic_does_not_count(
        control: ControlClient, topics: Topics, store: RolloutStore, session_broker: str) -> None:
    with SimFleet(session_broker, topics, devices(3)) as fleet:
        fleet.go_offline("d02")
        fleet.wait_until(lambda: not fleet.devices["d02"].online, 10, "d02 offline")
        policy = RolloutPolicy(canary=0.3, waves=1, device_timeout_s=2)
        rec = start_rollout(store, control, topics, model="churn", version=4, selector={}, policy=policy)
        forged = Reported(device="d01", state="serving", model="churn", version=4, desired_version=4,
                          rollout_id=rec.id)  # d01 speaking for the offline d02, on d02's topic
        control.publish(topics.device("d02", "reported"), forged.to_bytes(), retain=True)
        done = RolloutController(store, control, topics, signer=SIGNER).run(rec.id)
    assert done.devices["d02"].outcome == "offline" and done.tally()["succeeded"] == 2


def test_killed_controller_is_resumed(control: ControlClient, topics: Topics, store: RolloutStore,
                                      session_broker: str) -> None:
    with SimFleet(session_broker, topics, devices(6, install_s=0.7)) as fleet:
        rec = start_rollout(store, control, topics, model="churn", version=4, selector={"site": "berlin"},
                            policy=POLICY)
        script = ("import sys; from edge_agent.protocol import Topics; from edgeops.mqtt import ControlClient;"
                  "from edgeops.rollout.controller import RolloutController; from edgeops.rollout.state import "
                  "RolloutStore; from edgeops.rollout.signer import DesiredSigner; from cryptography.hazmat."
                  "primitives.asymmetric.ed25519 import Ed25519PrivateKey\nwith ControlClient(sys.argv[1]) as c:\n"
                  "    RolloutController(RolloutStore(sys.argv[3]), c, Topics(sys.argv[2]),\n"
                  "                      signer=DesiredSigner(Ed25519PrivateKey.generate())).run(sys.argv[4])")
        proc = subprocess.Popen([sys.executable, "-c", script, session_broker, topics.prefix, str(store.path),
                                 rec.id], env={**os.environ, "PYTHONPATH": str(SRC.parent)})
        deadline = time.monotonic() + 30
        while store.get(rec.id).wave < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        mid = store.get(rec.id)
        assert mid.status == "running" and mid.tally()["succeeded"] < 6
        with pytest.raises(RolloutError, match="already targets"):  # the interrupted rollout still holds them
            start_rollout(store, control, topics, model="churn", version=4, selector={}, policy=POLICY)
        done = RolloutController(store, control, topics, signer=SIGNER).run(rec.id)  # a new controller takes over
        assert done.status == "completed" and done.tally()["succeeded"] == 6
        assert all(d.version == 4 and d.installs == 1 for d in fleet.devices.values())


def test_overlapping_rollouts_are_refused(control: ControlClient, topics: Topics, store: RolloutStore,
                                          session_broker: str) -> None:
    sims = [*devices(4), SimDevice("p1", labels={"site": "paris"}, model="churn", version=3)]
    with SimFleet(session_broker, topics, sims):
        first = start_rollout(store, control, topics, model="churn", version=4, selector={"site": "berlin"},
                              policy=POLICY)
        with pytest.raises(RolloutError, match=f"rollout {first.id} .*already targets 4"):
            start_rollout(store, control, topics, model="churn", version=4, selector={}, policy=POLICY)
        paris = start_rollout(store, control, topics, model="churn", version=4, selector={"site": "paris"},
                              policy=POLICY)  # a disjoint target may run at the same time
        assert set(paris.devices) == {"p1"}


def test_health_gate_can_abort_after_a_wave(control: ControlClient, topics: Topics, store: RolloutStore,
                                            session_broker: str) -> None:
    seen: list[GateContext] = []

    def gate(context: GateContext) -> GateVerdict:
        seen.append(context)
        return GateVerdict("abort", "p95 latency 3x the previous version") if context.wave == 1 else \
            GateVerdict("advance")

    with SimFleet(session_broker, topics, devices(5)):
        rec = start_rollout(store, control, topics, model="churn", version=4, selector={}, policy=POLICY)
        done = RolloutController(store, control, topics, signer=SIGNER, gate=gate).run(rec.id)
        assert done.status == "aborted" and "p95 latency" in done.reason
        assert [c.wave for c in seen] == [0, 1]
        assert all(d.restored for d in done.devices.values() if d.desired_at is not None)
        cleared = desired_now(control, topics)  # nobody had a desired state before: a signed clear each
        assert cleared and all(restores(p, None) for p in cleared.values())


def erring_v4(tmp_path: Path) -> TelemetryStore:
    """A telemetry store where v3 erred 1% across the fleet and v4 errs 20% on every device that runs it."""
    telemetry = TelemetryStore(f"sqlite:///{tmp_path / 'telemetry.db'}")
    soon = (datetime.now(UTC) + timedelta(minutes=1)).isoformat().replace("+00:00", "Z")

    def window(device: str, version: int, seq: int, model_errors: int) -> TelemetryWindow:
        return TelemetryWindow(device=device, seq=seq, model="churn", version=version, start=soon, end=soon,
                               count=200, errors={"model": model_errors}, latency_ms={"p95": 1.0})

    telemetry.write([window(f"d{i:02d}", 3, 1, 2) for i in range(5)] +
                    [window(f"d{i:02d}", 4, 2, 40) for i in range(5)])
    return telemetry


def assert_canary_aborted_by_the_gate(done: RolloutRecord) -> None:
    assert done.status == "aborted" and "model error rate 20.0% over 200 requests exceeds 3.0%" in done.reason
    assert sum(d.desired_at is not None for d in done.devices.values()) == 1  # only the canary was touched
    assert all(d.restored for d in done.devices.values() if d.desired_at is not None)


def test_telemetry_gate_aborts_a_canary_that_errs_more_than_the_previous_version(
        control: ControlClient, topics: Topics, store: RolloutStore, session_broker: str, tmp_path: Path) -> None:
    telemetry = erring_v4(tmp_path)
    with SimFleet(session_broker, topics, devices(5)):
        rec = start_rollout(store, control, topics, model="churn", version=4, selector={}, policy=POLICY)
        gate = TelemetryHealthGate(telemetry, since=parse_ts(rec.created))
        done = RolloutController(store, control, topics, signer=SIGNER, gate=gate).run(rec.id)
    assert_canary_aborted_by_the_gate(done)


def test_a_resumed_rollout_keeps_the_health_gate_it_was_started_with(
        control: ControlClient, topics: Topics, store: RolloutStore, session_broker: str, tmp_path: Path,
        prefect_harness: None) -> None:
    """The gate's database is part of the stored policy: the flow run that resumes the rollout (as
    `edgeops rollout resume` does) is not told about it and must still apply it."""
    from edgeops.flows.rollout import rollout_flow

    erring_v4(tmp_path)
    url = f"sqlite:///{tmp_path / 'telemetry.db'}"
    with SimFleet(session_broker, topics, devices(5)):
        rec = start_rollout(store, control, topics, model="churn", version=4, selector={},
                            policy=replace(POLICY, health_db=url))
        assert store.get(rec.id).policy.health_db == url
        final = rollout_flow(broker_url=session_broker, db_path=str(store.path), prefix=topics.prefix,
                             rollout_id=rec.id, config_path=project_config(tmp_path))
    assert_canary_aborted_by_the_gate(store.get(final["id"]))


def test_a_resumed_rollout_marks_the_dead_controllers_flow_run_crashed(
        control: ControlClient, topics: Topics, store: RolloutStore, session_broker: str, tmp_path: Path,
        prefect_harness: None) -> None:
    """A SIGKILLed controller tells Prefect nothing: its flow run would stay Running for ever. The flow run that
    resumes the rollout marks it Crashed and becomes the rollout's run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.states import Running

    from edgeops.flows.rollout import rollout_flow

    with SimFleet(session_broker, topics, devices(3)):
        rec = start_rollout(store, control, topics, model="churn", version=4, selector={}, policy=POLICY)
        with get_client(sync_client=True) as client:
            orphan = client.create_flow_run(rollout_flow, state=Running())  # what the dead controller left
        assert store.swap_flow_run(rec.id, str(orphan.id)) is None
        final = rollout_flow(broker_url=session_broker, db_path=str(store.path), prefix=topics.prefix,
                             rollout_id=rec.id, config_path=project_config(tmp_path))
    assert final["status"] == "completed"
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(orphan.id).state
    assert state is not None and state.type == StateType.CRASHED and rec.id in (state.message or "")
    assert store.swap_flow_run(rec.id, "x") not in (None, str(orphan.id))  # the resuming run recorded itself


@pytest.fixture
def restartable_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """Our own Mosquitto that keeps retained messages over a restart. ``user`` = the current user: started as
    root, Mosquitto otherwise drops to the ``mosquitto`` user, cannot write its persistence file in our
    temporary directory, and silently loses every retained message on restart."""
    with running_mosquitto(tmp_path / "mosquitto", f"user {getpass.getuser()}\n") as broker:
        yield broker


def test_rollout_survives_a_broker_restart(restartable_broker: Mosquitto, topic_prefix: str, release: Release,
                                           tmp_path: Path) -> None:
    own_broker = restartable_broker
    topics = Topics(topic_prefix)
    store = RolloutStore(tmp_path / "rollouts.db")
    with ControlClient(own_broker.url) as client, SimFleet(own_broker.url, topics, devices(6, install_s=0.5)) as fleet:
        publish_release(client, topics, release.manifest, release.data)
        rec = start_rollout(store, client, topics, model="churn", version=4, selector={}, policy=POLICY)
        result: list[RolloutRecord] = []
        runner = threading.Thread(target=lambda: result.append(RolloutController(
            store, client, topics, signer=SIGNER).run(rec.id)))
        runner.start()
        deadline = time.monotonic() + 30
        while store.get(rec.id).wave < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.get(rec.id).status == "running"  # the restart happens mid-rollout
        own_broker.restart(down_for=1.0, kill=False)  # retained state is persisted across a clean restart
        runner.join(60)
        assert result and result[0].status == "completed", result and (result[0].reason, result[0].to_json()["devices"])
        assert result[0].tally()["succeeded"] == 6
        assert all(d.version == 4 for d in fleet.devices.values())


def test_unpublished_release_or_empty_target_is_refused(control: ControlClient, topics: Topics, store: RolloutStore,
                                                        session_broker: str) -> None:
    with SimFleet(session_broker, topics, devices(2)):
        with pytest.raises(RolloutError, match="churn@5 is not published"):
            start_rollout(store, control, topics, model="churn", version=5, selector={}, policy=POLICY)
        with pytest.raises(RolloutError, match="no device matches target site=paris among 2 known devices"):
            start_rollout(store, control, topics, model="churn", version=4, selector={"site": "paris"},
                          policy=POLICY)
        assert store.records() == []


def test_running_only_targets_devices_that_run_the_model(control: ControlClient, topics: Topics,
                                                         store: RolloutStore, session_broker: str) -> None:
    sims = [*devices(3), SimDevice("fresh", labels={"site": "berlin"})]  # "fresh" runs nothing yet
    with SimFleet(session_broker, topics, sims):
        rec = start_rollout(store, control, topics, model="churn", version=4, selector={"site": "berlin"},
                            policy=POLICY, running_only=True)
        assert sorted(rec.devices) == ["d00", "d01", "d02"]


def test_simulated_devices_report_a_step_only_when_their_update_lasts(
        control: ControlClient, topics: Topics, store: RolloutStore, session_broker: str) -> None:
    sims = [*devices(1), *devices(1, install_s=1.0)]
    sims[1].device = "slow"
    with SimFleet(session_broker, topics, sims, report_steps_after_s=0.3), \
            ControlClient(session_broker) as watcher:
        watcher.subscribe(topics.all_devices("reported"))
        rec = start_rollout(store, control, topics, model="churn", version=4, selector={},
                            policy=replace(POLICY, canary=0.0, waves=1))
        assert RolloutController(store, control, topics, signer=SIGNER).run(rec.id).status == "completed"
        states: dict[str, list[str]] = {"d00": [], "slow": []}
        for msg in watcher.drain(1.0):
            report = Reported.parse(msg.payload)
            if report.desired_version == 4:
                states[report.device].append(report.state)
    assert states == {"d00": ["serving"], "slow": ["fetching", "serving"]}  # like an agent (StepReports)

"""``edgeops release``, ``fleet`` and ``rollout`` commands against a real Mosquitto, a real registry, and
simulated devices. Each command group is tested through its own Typer app."""

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from releases import build_release, new_key, public_pem
from services import free_port
from simulated_fleet import SimDevice, SimFleet
from typer.testing import CliRunner

from edge_agent.protocol import Desired, Reported, Topics
from edgeops.cli.fleet import app as fleet_app
from edgeops.cli.release import app as release_app
from edgeops.cli.rollout import app as rollout_app
from edgeops.mqtt import BrokerAddress, ControlClient
from edgeops.release.registry import Registry
from edgeops.release.signing import generate_keys, load_private_key, load_public_key

pytestmark = pytest.mark.integration

runner = CliRunner()


@dataclass
class Project:
    config: Path
    registry: Registry
    topics: Topics
    broker: str

    def args(self, *extra: str) -> list[str]:
        return [*extra, "--config", str(self.config), "--broker", self.broker]


@pytest.fixture
def project(tmp_path: Path, session_broker: str, topic_prefix: str) -> Iterator[Project]:
    config = tmp_path / "edgeops.yaml"
    config.write_text(f"mqtt:\n  url: mqtt://127.0.0.1:{free_port()}\n  prefix: {topic_prefix}\n"
                      "registry:\n  root: .edgeops/registry\n  keys_dir: .edgeops/keys\n")
    private, _public = generate_keys(tmp_path / ".edgeops" / "keys")
    key = load_private_key(private)
    registry = Registry(tmp_path / ".edgeops" / "registry")
    for _ in range(2):  # churn@1 and churn@2, chunked
        registry.register("churn", lambda v: (lambda r: (r.manifest, r.data))(
            build_release("churn", v, key, chunk_size=256)))
    yield Project(config, registry, Topics(topic_prefix), session_broker)
    with ControlClient(session_broker) as client:
        client.publish_many((t, b"", True) for t in client.collect_retained(f"{topic_prefix}/#"))


def release_topics(project: Project, version: int) -> dict[str, bytes]:
    with ControlClient(project.broker) as client:
        return client.collect_retained(project.topics.release_filter("churn", version))


def test_publish_sends_artifact_chunks_before_manifest_and_is_idempotent(project: Project) -> None:
    address = BrokerAddress.parse(project.broker)
    seen: list[str] = []
    watcher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    watcher.on_message = lambda _c, _u, msg: seen.append(msg.topic)
    watcher.connect(address.host, address.port)
    watcher.subscribe(project.topics.release_filter("churn", 2), qos=1)
    watcher.loop_start()
    try:
        result = runner.invoke(release_app, project.args("publish", "churn@2"))
        assert result.exit_code == 0, result.output
        assert "published churn@2" in result.output
        record = project.registry.get("churn", 2)
        held = release_topics(project, 2)
        chunks = record.manifest.artifact.chunks
        assert chunks > 1 and len(held) == chunks + 1
        assert held[project.topics.manifest("churn", 2)] == record.manifest.to_bytes()
        data = b"".join(held[project.topics.artifact("churn", 2, i)] for i in range(chunks))
        assert data == record.onnx_bytes()
        again = runner.invoke(release_app, project.args("publish", "churn@2"))
        assert again.exit_code == 0 and "already published" in again.output
    finally:
        watcher.loop_stop()
        watcher.disconnect()
    manifest_topic = project.topics.manifest("churn", 2)
    assert seen.count(manifest_topic) == 1 and seen[-1] == manifest_topic  # artifact first; nothing re-sent


def test_unpublish_clears_every_retained_topic(project: Project) -> None:
    assert runner.invoke(release_app, project.args("publish", "churn@1")).exit_code == 0
    assert release_topics(project, 1)
    result = runner.invoke(release_app, project.args("unpublish", "churn@1"))
    assert result.exit_code == 0 and "cleared" in result.output
    assert release_topics(project, 1) == {}
    assert "nothing to clear" in runner.invoke(release_app, project.args("unpublish", "churn@1")).output


def test_rejected_or_unknown_releases_are_not_published(project: Project) -> None:
    key = load_private_key(project.config.parent / ".edgeops" / "keys" / "release.key")
    project.registry.register("churn", lambda v: (lambda r: (r.manifest, r.data))(build_release("churn", v, key)),
                              status="rejected")
    result = runner.invoke(release_app, project.args("publish", "churn@3"))
    assert result.exit_code == 1 and "churn@3 is rejected" in result.output
    result = runner.invoke(release_app, project.args("publish", "churn@9"))
    assert result.exit_code == 1 and "no version 9" in result.output
    assert release_topics(project, 3) == {}


def test_a_release_not_signed_by_the_project_key_is_not_published(project: Project) -> None:
    keys = project.config.parent / ".edgeops" / "keys"
    (keys / "release.pub").write_bytes(public_pem(new_key()))  # the project now trusts another key
    result = runner.invoke(release_app, project.args("publish", "churn@2"))
    assert result.exit_code == 1 and "does not verify with the project's public key" in result.output
    assert release_topics(project, 2) == {}


def test_unreachable_broker_is_one_clear_line(project: Project) -> None:
    url = f"mqtt://127.0.0.1:{free_port()}"
    result = runner.invoke(fleet_app, ["ls", "--config", str(project.config), "--broker", url])
    assert result.exit_code == 1
    assert url in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_broker_url_from_environment_when_no_flag(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEOPS_MQTT_URL", project.broker)  # the config's mqtt.url points at nothing
    result = runner.invoke(fleet_app, ["ls", "--config", str(project.config), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == []


def test_fleet_ls_shows_devices_and_filters_by_labels(project: Project) -> None:
    sims = [SimDevice("b1", {"site": "berlin", "line": "1"}, "churn", 1, state="serving"),
            SimDevice("b2", {"site": "berlin", "line": "2"}, "churn", 1, state="serving"),
            SimDevice("p1", {"site": "paris", "line": "1"})]
    with SimFleet(project.broker, project.topics, sims) as fleet, ControlClient(project.broker) as client:
        fleet.go_offline("b2")
        fleet.wait_until(lambda: not fleet.devices["b2"].online, 10, "b2 offline")
        client.publish(project.topics.device("bad", "reported"), b"{not json", retain=True)
        result = runner.invoke(fleet_app, project.args("ls", "--json"))
        assert result.exit_code == 0, result.output
        rows = {r["device"]: r for r in json.loads(result.stdout)}
        assert set(rows) == {"b1", "b2", "p1"}
        assert rows["b1"]["model"] == "churn" and rows["b1"]["version"] == 1 and rows["b1"]["online"] is True
        assert rows["b2"]["online"] is False and rows["p1"]["state"] == "idle"
        assert "bad/reported" in result.stderr  # reported, not hiding the rest
        only = runner.invoke(fleet_app, project.args("ls", "--json", "--target", "site=berlin", "-t", "line=1"))
        assert [r["device"] for r in json.loads(only.stdout)] == ["b1"]
        table = runner.invoke(fleet_app, project.args("ls", "--target", "site=berlin"))
        assert "b1" in table.stdout and "churn@1" in table.stdout and "offline" in table.stdout
        bad = runner.invoke(fleet_app, project.args("ls", "--target", "site"))
        assert bad.exit_code == 1 and "key=value" in bad.output


async def prefect_records(rollout_id: str) -> tuple[dict[str, object], list[str]]:
    """The rollout's artifacts (key → data) and event names, as the Prefect API holds them."""
    from prefect.client.orchestration import get_client  # imported late: the CLI sets Prefect's log level first
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from edgeops.flows.rollout import artifact_key

    async with get_client() as client:
        found = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(like_=artifact_key(rollout_id))))
        response = await client.request("POST", "/events/filter", json={  # type: ignore[arg-type]
            "filter": {"resource": {"id": [f"edgeops.rollout.{rollout_id}"]}, "any_resource": None}, "limit": 50})
    data = {a.key: json.loads(a.data) if isinstance(a.data, str) else a.data for a in found if a.key}
    return data, [e["event"] for e in response.json()["events"]]


def test_cli_rollout_completes_then_a_rejected_canary_exits_3(project: Project) -> None:
    key = load_public_key(project.config.parent / ".edgeops" / "keys" / "release.pub")
    sims = [SimDevice(f"d{i}", {"site": "berlin"}, "churn", 1, state="serving", public_keys=(key,)) for i in range(5)]
    with SimFleet(project.broker, project.topics, sims) as fleet:
        result = runner.invoke(rollout_app, project.args("start", "churn@2", "--target", "site=berlin", "--canary",
                                                         "10%", "--waves", "3", "--max-failure", "5%", "--wait"))
        assert result.exit_code == 0, result.output
        assert all(d.version == 2 for d in fleet.devices.values())
        status = runner.invoke(rollout_app, ["status", "--json", "--config", str(project.config)])
        (done,) = json.loads(status.stdout)
        assert done["status"] == "completed" and done["counts"]["succeeded"] == 5 and done["waves"] == 4
        expected = ["edgeops.rollout.completed", "edgeops.rollout.started"] + ["edgeops.rollout.wave.completed"] * 4
        for _attempt in range(50):  # events are sent and stored asynchronously
            artifacts, events = asyncio.run(prefect_records(done["id"]))
            if sorted(events) == expected:
                break
            time.sleep(0.2)
        key = "rollout-" + done["id"].lower()
        assert artifacts[key] == 100.0  # the progress artifact ends at 100 %
        assert len(artifacts[key + "-devices"]) == 5  # one table row per device
        assert sorted(events) == expected
        fleet.devices["d0"].reject = "golden samples differ"  # the canary of the next rollout refuses
        back = runner.invoke(rollout_app, project.args("start", "churn@1", "--target", "site=berlin"))
        assert back.exit_code == 3, (back.exit_code, repr(back.exception), back.output)  # seen once as not 3
        assert "aborted" in back.stdout and "d0: failed" in back.stdout
        assert all(d.version == 2 for d in fleet.devices.values())


def test_cli_abort_without_a_live_controller_rolls_back_itself(project: Project) -> None:
    sims = [SimDevice(f"d{i}", {"site": "berlin"}, "churn", 1, state="serving") for i in range(3)]
    with SimFleet(project.broker, project.topics, sims), ControlClient(project.broker) as client:
        assert runner.invoke(release_app, project.args("publish", "churn@2")).exit_code == 0
        from edgeops.cli.rollout import rollout_store
        from edgeops.config import load_config
        from edgeops.rollout.controller import start_rollout
        from edgeops.rollout.plan import RolloutPolicy

        store = rollout_store(load_config(project.config))
        rec = start_rollout(store, client, project.topics, model="churn", version=2, selector={},
                            policy=RolloutPolicy(canary=0.3, waves=1))
        rec.devices["d0"].desired_at = 1.0  # as if a controller had set d0's desired state and then died
        store.save(rec, [rec.devices["d0"]])
        listed = runner.invoke(rollout_app, ["status", "--config", str(project.config)])
        assert f"(no controller: `edgeops rollout resume {rec.id}`)" in listed.output
        result = runner.invoke(rollout_app, project.args("abort", rec.id, "--reason", "bad canary"))
        assert result.exit_code == 3, result.output
        done = store.get(rec.id)
        assert done.status == "aborted" and done.reason == "bad canary" and done.devices["d0"].restored
        restored = client.collect_retained(project.topics.all_devices("desired"))  # d0 had none: a signed clear
        assert list(restored) == [project.topics.device("d0", "desired")]
        cleared = Desired.parse(restored[project.topics.device("d0", "desired")])
        assert cleared.clears and cleared.signature is not None


def test_a_message_naming_another_device_is_a_problem_line(project: Project) -> None:
    with ControlClient(project.broker) as client:
        wrong = Reported(device="other", state="idle").to_bytes()
        client.publish(project.topics.device("d1", "reported"), wrong, retain=True)
        result = runner.invoke(fleet_app, project.args("ls"))
        assert result.exit_code == 0 and "names device 'other'" in result.stderr

"""The fleet simulator itself: each simulated device is one clean MQTT session, connected once."""

import time

import pytest
from releases import build_release, new_key
from simulated_fleet import SimDevice, SimFleet

from edge_agent.protocol import Desired, Status, Topics
from edgeops.mqtt import ControlClient
from edgeops.release.publish import publish_release
from edgeops.rollout.fleet import read_fleet

pytestmark = pytest.mark.integration


def statuses(client: ControlClient, n: int, quiet_s: float = 1.0) -> list[Status]:
    """Status messages until ``n`` arrived, then any more that come within ``quiet_s``."""
    got: list[Status] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        msg = client.next_message(quiet_s)
        if msg is None:
            if len(got) >= n:
                break
            continue
        got.append(Status.parse(msg.payload))
    return got


def test_each_device_connects_once_and_leaves_cleanly(session_broker: str, topic_prefix: str) -> None:
    topics = Topics(topic_prefix)
    sims = [SimDevice(f"s{i:02d}") for i in range(20)]
    with ControlClient(session_broker) as watcher:
        watcher.subscribe(topics.all_devices("status"))
        with SimFleet(session_broker, topics, sims):
            entered = statuses(watcher, len(sims))
        left = statuses(watcher, len(sims))
        retained = watcher.collect_retained(topics.all_devices("status"))
        watcher.publish_many((t, b"", True) for t in retained)
    # a second connection with the same client id would take the first one over, and the broker would send
    # the first one's Last Will ("offline") while the device is coming online
    assert sorted(s.device for s in entered) == [d.device for d in sims]
    assert {s.status for s in entered} == {"online"}
    assert sorted(s.device for s in left) == [d.device for d in sims] and {s.status for s in left} == {"offline"}


def test_entered_fleet_is_in_the_retained_state(session_broker: str, topic_prefix: str) -> None:
    """Once ``with SimFleet`` is in, a controller planning at once must see every device: entering waits for
    the broker's acknowledgement of each device's first report, not just for the connection (a rollout test
    once planned over 0 devices)."""
    topics = Topics(topic_prefix)
    sims = [SimDevice(f"r{i:03d}") for i in range(200)]
    with ControlClient(session_broker) as client:
        with SimFleet(session_broker, topics, sims):
            seen = read_fleet(client, topics)
            assert all(d.announced for d in sims)
        client.publish_many((t, b"", True) for t in client.collect_retained(f"{topics.prefix}/devices/#"))
    assert [d.device for d in seen.devices] == [d.device for d in sims]
    assert {d.state for d in seen.devices} == {"idle"}


def test_each_device_verifies_the_release_it_received(session_broker: str, topic_prefix: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A simulated device spends what an agent spends on an update: it checks the signature over the manifest
    bytes it received when they arrive (edge_agent's fetch; ``verifying`` trusts that check) and hashes the
    artifact, and shares no result with the other devices; otherwise a fleet benchmark would leave out the
    devices' cost."""
    import simulated_fleet as simulate

    checked: list[bytes | None] = []
    real = simulate.verify_manifest

    def counting(manifest: object, keyring: object, payload: bytes | None = None) -> None:
        checked.append(payload)
        real(manifest, keyring, payload)  # type: ignore[arg-type]

    monkeypatch.setattr(simulate, "verify_manifest", counting)
    key = new_key()
    release = build_release("churn", 4, key, chunk_size=256)
    topics = Topics(topic_prefix)
    sims = [SimDevice(f"v{i}", public_keys=(key.public_key(),)) for i in range(4)]
    with ControlClient(session_broker) as client:
        publish_release(client, topics, release.manifest, release.data)
        with SimFleet(session_broker, topics, sims) as fleet:
            client.publish_many((topics.device(d.device, "desired"),
                                 Desired(device=d.device, model="churn", version=4).to_bytes(), True) for d in sims)
            fleet.wait_until(lambda: all(d.version == 4 for d in sims), 30, "every device serving v4")
            spent = fleet.verify_cpu_s
        client.publish_many((t, b"", True) for t in client.collect_retained(f"{topics.prefix}/#"))
    assert len(checked) == len(sims)
    assert set(checked) == {release.manifest.to_bytes()}
    assert spent > 0

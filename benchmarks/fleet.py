"""Rollout cost at fleet scale: a staged rollout to N simulated devices against a raw retained fan-out.

Starts its own Mosquitto on a free port (raised queue limits), connects N simulated
devices (one real MQTT session each, edgeops.simulate), publishes a signed release, then measures in the same
run and on the same broker:

* baseline — every device subscribes to the retained release and receives manifest + artifact (no desired,
  no reports): the least any delivery of these bytes to N devices can cost here;
* rollout — ``start_rollout`` + the controller (canary 10 %, 3 waves) until every device reported serving:
  planning from the retained fleet, desired state per wave, fetch, signature + hash verification, reports.

Prints both times, their ratio (target <= 3x), the CPU seconds each spent (simulated fleet + controller +
broker: on a shared 2-core machine the wall-clock ratio tends towards this one), and broker PUBLISH messages per
device (in: sent by a device or the controller; out: delivered to one), counted at the clients.

    .venv/bin/python benchmarks/fleet.py [--devices 1000] [--artifact-kb 0] [--canary 10%] [--waves 3]

``--artifact-kb`` pads the artifact to that size (a forest is 100s of KB; the test model is ~1 KB): the
simulated devices check hashes and signatures but never load the model, so padding is fair to both sides.
"""

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import NamedTuple

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the test helpers: Mosquitto on a free port, a signed real release

from releases import Release, build_release, new_key, with_bytes  # noqa: E402
from services import Mosquitto  # noqa: E402

from edge_agent.protocol import Topics  # noqa: E402
from edgeops.mqtt import ControlClient  # noqa: E402
from edgeops.publish import publish_release  # noqa: E402
from edgeops.rollout.controller import RolloutController, start_rollout  # noqa: E402
from edgeops.rollout.plan import RolloutPolicy, parse_fraction  # noqa: E402
from edgeops.rollout.signer import DesiredSigner  # noqa: E402
from edgeops.rollout.state import RolloutStore  # noqa: E402
from edgeops.simulate import SimDevice, SimFleet  # noqa: E402

BROKER_CONFIG = "max_inflight_messages 100\nset_tcp_nodelay true\n"
"""Nagle's algorithm holds small packets for the peer's delayed ACK (~40 ms a hop on Linux): a rollout is a
chain of small messages, so production brokers for the control plane should disable it too."""


def run_fleet(url: str, prefix: str, n: int, public_pem: bytes, conn: Connection) -> None:
    """The simulated devices, in a process of their own: real devices do not share the controller's CPU
    (or its GIL). Commands arrive on ``conn``: ("fetch", version) → seconds until every device holds the
    release; ("counts",) → (published, received); ("versions",) → set of versions run; ("stop",)."""
    key = serialization.load_pem_public_key(public_pem)
    devices = [SimDevice(f"dev{i:05d}", {"site": "berlin"}, "churn", 1, state="serving", public_keys=(key,))
               for i in range(n)]  # type: ignore[arg-type]
    with SimFleet(url, Topics(prefix), devices) as fleet:
        conn.send("ready")
        while True:
            command = conn.recv()
            if command[0] == "fetch":
                fleet.fetched.clear()
                t0 = time.perf_counter()
                fleet.fetch_release("churn", command[1])
                fleet.wait_until(lambda: len(fleet.fetched) == n, 600, "the raw fan-out")
                conn.send(time.perf_counter() - t0)
            elif command[0] == "cpu":
                conn.send(time.process_time())
            elif command[0] == "counts":
                conn.send((fleet.published, fleet.received))
            elif command[0] == "versions":
                conn.send({d.version for d in fleet.devices.values()})
            else:
                break


class FleetProcess:
    def __init__(self, url: str, prefix: str, n: int, public_pem: bytes) -> None:
        self.conn, child = multiprocessing.Pipe()
        self.proc = multiprocessing.get_context("spawn").Process(
            target=run_fleet, args=(url, prefix, n, public_pem, child), daemon=True)
        self.proc.start()
        if not self.conn.poll(120) or self.conn.recv() != "ready":
            raise RuntimeError("the simulated fleet did not come up")

    def ask(self, *command: object) -> object:
        self.conn.send(command)
        return self.conn.recv()

    def stop(self) -> None:
        self.conn.send(("stop",))
        self.proc.join(30)


def counts(fleet: FleetProcess, client: ControlClient) -> tuple[int, int]:
    """(PUBLISH messages into the broker, PUBLISH messages out of it) so far, counted at every client."""
    published, received = fleet.ask("counts")  # type: ignore[misc]
    return published + client.published, received + client.received


def broker_cpu(pid: int) -> float:
    """CPU seconds (user + system) the broker process used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuClock:
    """CPU seconds spent by the simulated fleet, this process (the controller) and the broker together."""

    def __init__(self, fleet: FleetProcess, broker_pid: int) -> None:
        self.fleet, self.broker_pid = fleet, broker_pid

    def now(self) -> float:
        return float(self.fleet.ask("cpu")) + time.process_time() + broker_cpu(self.broker_pid)  # type: ignore[arg-type]


def make_release(version: int, key: Ed25519PrivateKey, artifact_kb: int) -> Release:
    release = build_release("churn", version, key, chunk_size=64 * 1024)
    if artifact_kb:
        release = with_bytes(release, os.urandom(artifact_kb * 1024), key)
    return release


class Round(NamedTuple):
    fanout_s: float
    rollout_s: float
    fanout_cpu: float
    rollout_cpu: float
    plan_s: float  # of rollout_s: start_rollout, which reads the fleet's retained state and records the plan
    messages: tuple[int, int]  # rollout PUBLISH messages in / out of the broker


def one_round(fleet: FleetProcess, client: ControlClient, store: RolloutStore, topics: Topics, release: Release,
              policy: RolloutPolicy, cpu: CpuClock, signer: DesiredSigner) -> Round:
    version = release.manifest.version
    publish_release(client, topics, release.manifest, release.data)
    c0 = cpu.now()
    fanout_s = float(fleet.ask("fetch", version))  # type: ignore[arg-type]
    fanout_cpu = cpu.now() - c0
    before = counts(fleet, client)
    c0 = cpu.now()
    t0 = time.perf_counter()
    rec = start_rollout(store, client, topics, model="churn", version=version, selector={"site": "berlin"},
                        policy=policy)
    plan_s = time.perf_counter() - t0
    done = RolloutController(store, client, topics, signer=signer).run(rec.id)  # the CLI default poll
    rollout_s = time.perf_counter() - t0
    rollout_cpu = cpu.now() - c0
    time.sleep(0.5)  # let the last events reach the controller's counter
    after = counts(fleet, client)
    if done.status != "completed" or done.tally()["succeeded"] != len(done.devices):
        raise RuntimeError(f"rollout {done.id} did not complete: {done.reason}")
    if fleet.ask("versions") != {version}:
        raise RuntimeError("not every simulated device runs the new version")
    return Round(fanout_s, rollout_s, fanout_cpu, rollout_cpu, plan_s, (after[0] - before[0], after[1] - before[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--artifact-kb", type=int, default=0)
    parser.add_argument("--canary", default="10%")
    parser.add_argument("--waves", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=5, help="Rounds (each a new version); medians are shown.")
    args = parser.parse_args()
    n = args.devices
    key = new_key()
    signer = DesiredSigner(key)
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    releases = [make_release(v, key, args.artifact_kb) for v in range(2, 2 + args.repeat)]
    info = releases[0].manifest.artifact
    print(f"release: artifact {info.size} bytes in {info.chunks} message(s); {n} simulated devices")
    policy = RolloutPolicy(canary=parse_fraction(args.canary, "canary"), waves=args.waves, max_failure=0.05,
                           device_timeout_s=600)
    topics = Topics("bench")
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(Path(tmp) / "mosquitto", extra_config=BROKER_CONFIG).start()
        try:
            t0 = time.perf_counter()
            fleet = FleetProcess(broker.url, topics.prefix, n, public_pem)
            print(f"connected {n} simulated devices in {time.perf_counter() - t0:.1f} s")
            store = RolloutStore(Path(tmp) / "rollouts.db")
            assert broker.proc is not None
            cpu = CpuClock(fleet, broker.proc.pid)
            with ControlClient(broker.url, timeout_s=60) as client:
                for release in releases:
                    r = one_round(fleet, client, store, topics, release, policy, cpu, signer)
                    rounds.append(r)
                    print(f"  round v{release.manifest.version}: fan-out {r.fanout_s:.2f} s "
                          f"({r.fanout_cpu:.2f} s CPU), rollout {r.rollout_s:.2f} s ({r.rollout_cpu:.2f} s CPU; "
                          f"planning {r.plan_s:.2f} s)")
            fleet.stop()
        finally:
            broker.stop()

    fanout_s = statistics.median(r.fanout_s for r in rounds)
    rollout_s = statistics.median(r.rollout_s for r in rounds)
    msgs_in, msgs_out = rounds[-1].messages
    print(f"raw retained fan-out to {n} subscribers: median {fanout_s:6.2f} s "
          f"(manifest + {info.chunks} artifact message(s) out per device)")
    print(f"rollout to {n} devices (canary {args.canary} + {args.waves} waves): median {rollout_s:6.2f} s "
          f"(planning {statistics.median(r.plan_s for r in rounds):.2f} s)")
    print(f"broker PUBLISH messages per device per rollout: {msgs_in / n:.2f} in + {msgs_out / n:.2f} out "
          f"= {(msgs_in + msgs_out) / n:.1f}")
    cpu_ratio = statistics.median(r.rollout_cpu for r in rounds) / statistics.median(r.fanout_cpu for r in rounds)
    print(f"CPU seconds (fleet + controller + broker), rollout / fan-out: {cpu_ratio:.2f}x")
    ratio = rollout_s / fanout_s
    print(f"ratio rollout / fan-out: {ratio:.2f}x (target <= 3x) -> {'OK' if ratio <= 3 else 'OVER TARGET'}")


if __name__ == "__main__":
    main()

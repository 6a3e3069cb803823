"""Rollout cost at fleet scale: a staged rollout to N simulated devices against a raw retained fan-out.

    .venv/bin/python benchmarks/fleet.py [--devices 1000] [--artifact-kb 0] [--canary 10%] [--waves 3] [--rounds 7]

Starts its own Mosquitto on a free port (raised queue limits, ``$SYS`` counters every second), connects N
simulated devices (one real MQTT session each, simulated_fleet, in a process of their own), then runs
interleaved rounds (benchmarks/rounds.py), each with a new signed release and both measurements on the same
broker, alternating which goes first:

* baseline — every device subscribes to the retained release and receives manifest + artifact (no desired, no
  reports, no verification): the least any delivery of these bytes to N devices can cost here;
* rollout — ``start_rollout`` + the controller (canary 10 %, 3 waves) until every device reported serving:
  planning from the retained fleet, desired state per wave, fetch, verification, reports. Each simulated device
  verifies what an agent verifies for an update, on its own bytes: the manifest's signature when it arrives,
  again before installing, and the artifact's hash (tests/simulated_fleet.py); the CPU that costs is printed.

Each round gives the ratio rollout / fan-out of wall time and of CPU seconds (simulated fleet + controller +
broker, /proc), shown as the median over rounds with the spread; and the bytes on the wire: what the broker
received and sent (its ``$SYS/broker/bytes`` counters: every MQTT packet whole — fixed and variable headers,
PUBACKs, SUBSCRIBEs — as it crossed the sockets), per device. Broker PUBLISH messages per device are counted at
the clients.

``--artifact-kb`` pads the artifact to that size (a forest is 100s of KB; the test model is ~1 KB): the
simulated devices check hashes and signatures but never load the model, so padding is fair to both sides.
"""

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import NamedTuple

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the test helpers: Mosquitto on a free port, a signed real release

from releases import Release, build_release, new_key, with_bytes  # noqa: E402
from rounds import Ratio, cpu_seconds, load_average, print_table  # noqa: E402
from services import Mosquitto  # noqa: E402
from simulated_fleet import SimDevice, SimFleet  # noqa: E402
from wire import PUBACK_BYTES, SUBACK_BYTES, UNSUBACK_BYTES, publish_bytes, subscribe_bytes, unsubscribe_bytes  # noqa: E402

from edge_agent.protocol import Topics  # noqa: E402
from edgeops.mqtt import ControlClient  # noqa: E402
from edgeops.release.publish import publish_release, release_messages  # noqa: E402
from edgeops.rollout.controller import RolloutController, start_rollout  # noqa: E402
from edgeops.rollout.plan import RolloutPolicy, parse_fraction  # noqa: E402
from edgeops.rollout.signer import DesiredSigner  # noqa: E402
from edgeops.rollout.state import RolloutStore  # noqa: E402

BROKER_CONFIG = "max_inflight_messages 100\nset_tcp_nodelay true\nsys_interval 1\n"
"""Nagle's algorithm holds small packets for the peer's delayed ACK (~40 ms a hop on Linux): a rollout is a
chain of small messages, so production brokers for the control plane should disable it too."""


def run_fleet(url: str, prefix: str, n: int, public_pem: bytes, conn: Connection) -> None:
    """The simulated devices, in a process of their own: real devices do not share the controller's CPU
    (or its GIL). Commands arrive on ``conn``: ("fetch", version) → seconds until every device holds the
    release; ("cpu",) / ("verify",) → CPU seconds of the process / of verification; ("counts",) → (published,
    received); ("versions",) → set of versions run; ("stop",)."""
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
            elif command[0] == "verify":
                conn.send(fleet.verify_cpu_s)
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


class BrokerBytes:
    """Bytes the broker has received and sent so far, from its ``$SYS/broker/bytes/*`` counters (published every
    ``sys_interval`` second, and only when they changed: ``read`` pokes the broker to make sure they do)."""

    def __init__(self, host: str, port: int) -> None:
        self.values: dict[str, tuple[int, float]] = {}  # counter -> (value, when it arrived)
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.subscribe("$SYS/broker/bytes/+", qos=0)
        self.client.loop_start()

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.values[msg.topic.rsplit("/", 1)[1]] = int(msg.payload), time.monotonic()

    def read(self) -> tuple[int, int]:
        """(received, sent) as counted by the first ``$SYS`` update that began more than a second from now, so
        after everything before this call. Includes this reader's own few bytes (~80 B/s)."""
        asked = time.monotonic()
        while time.monotonic() < asked + 10:
            self.client.publish("bench/poke", b"", qos=0)  # 5 bytes: the counters change, so they are published
            time.sleep(0.25)
            with self.lock:
                fresh = [self.values.get(name, (0, 0.0)) for name in ("received", "sent")]
            if all(when > asked + 1.1 for _value, when in fresh):
                return fresh[0][0], fresh[1][0]
        raise RuntimeError("the broker published no $SYS byte counters (sys_interval)")

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class CpuClock:
    """CPU seconds spent by the simulated fleet, this process (the controller) and the broker together."""

    def __init__(self, fleet: FleetProcess, broker_pid: int) -> None:
        self.fleet, self.broker_pid = fleet, broker_pid

    def now(self) -> float:
        return float(self.fleet.ask("cpu")) + time.process_time() + cpu_seconds(self.broker_pid)  # type: ignore[arg-type]


def fanout_packet_bytes(topics: Topics, release: Release) -> tuple[int, int]:
    """What one device's fetch should cost on the wire by the MQTT 3.1.1 packet sizes (benchmarks/wire.py):
    in = its SUBSCRIBE, PUBACKs and UNSUBSCRIBE; out = SUBACK, the release's PUBLISHes, UNSUBACK."""
    m = release.manifest
    messages = list(release_messages(topics, m, release.data))
    release_filter = topics.release_filter(m.name, m.version)
    into = subscribe_bytes(release_filter) + len(messages) * PUBACK_BYTES + unsubscribe_bytes(release_filter)
    out = SUBACK_BYTES + sum(publish_bytes(t, p, qos=1) for t, p in messages) + UNSUBACK_BYTES
    return into, out


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
    verify_cpu: float  # of rollout_cpu: the simulated devices' verification (manifest, signatures, hashes)
    messages: tuple[int, int]  # rollout PUBLISH messages in / out of the broker
    fanout_bytes: tuple[int, int]  # bytes the broker received / sent during the fan-out
    rollout_bytes: tuple[int, int]  # the same during the rollout


class Bench(NamedTuple):
    fleet: FleetProcess
    client: ControlClient
    store: RolloutStore
    topics: Topics
    policy: RolloutPolicy
    cpu: CpuClock
    signer: DesiredSigner
    wire: BrokerBytes


def fan_out(bench: Bench, version: int) -> tuple[float, float, tuple[int, int]]:
    """(wall s, CPU s, broker bytes in / out) of the raw retained fan-out of ``version``."""
    b0, c0 = bench.wire.read(), bench.cpu.now()
    seconds = float(bench.fleet.ask("fetch", version))  # type: ignore[arg-type]
    spent = bench.cpu.now() - c0
    b1 = bench.wire.read()
    return seconds, spent, (b1[0] - b0[0], b1[1] - b0[1])


def roll_out(bench: Bench, version: int) -> tuple[float, float, float, float, tuple[int, int], tuple[int, int]]:
    """(wall s, CPU s, planning s, verification CPU s, PUBLISH in / out, broker bytes in / out) of a rollout."""
    fleet, client = bench.fleet, bench.client
    b0 = bench.wire.read()
    before = counts(fleet, client)
    v0 = float(fleet.ask("verify"))  # type: ignore[arg-type]
    c0 = bench.cpu.now()
    t0 = time.perf_counter()
    rec = start_rollout(bench.store, client, bench.topics, model="churn", version=version,
                        selector={"site": "berlin"}, policy=bench.policy)
    plan_s = time.perf_counter() - t0
    done = RolloutController(bench.store, client, bench.topics, signer=bench.signer).run(rec.id)  # CLI's poll
    seconds = time.perf_counter() - t0
    spent = bench.cpu.now() - c0
    verify = float(fleet.ask("verify")) - v0  # type: ignore[arg-type]
    time.sleep(0.5)  # let the last events reach the controller's counter
    after = counts(fleet, client)
    b1 = bench.wire.read()
    if done.status != "completed" or done.tally()["succeeded"] != len(done.devices):
        raise RuntimeError(f"rollout {done.id} did not complete: {done.reason}")
    if fleet.ask("versions") != {version}:
        raise RuntimeError("not every simulated device runs the new version")
    return (seconds, spent, plan_s, verify, (after[0] - before[0], after[1] - before[1]),
            (b1[0] - b0[0], b1[1] - b0[1]))


def one_round(bench: Bench, release: Release, rollout_first: bool) -> Round:
    version = release.manifest.version
    publish_release(bench.client, bench.topics, release.manifest, release.data)
    if rollout_first:
        rollout = roll_out(bench, version)
        fanout = fan_out(bench, version)
    else:
        fanout = fan_out(bench, version)
        rollout = roll_out(bench, version)
    return Round(fanout[0], rollout[0], fanout[1], rollout[1], rollout[2], rollout[3], rollout[4], fanout[2],
                 rollout[5])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--artifact-kb", type=int, default=0)
    parser.add_argument("--canary", default="10%")
    parser.add_argument("--waves", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds, each with a new version")
    args = parser.parse_args()
    n = args.devices
    key = new_key()
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    releases = [make_release(v, key, args.artifact_kb) for v in range(2, 2 + args.rounds)]
    info = releases[0].manifest.artifact
    print(f"release: artifact {info.size} bytes in {info.chunks} message(s), manifest "
          f"{len(releases[0].manifest.to_bytes())} bytes; {n} simulated devices", flush=True)
    policy = RolloutPolicy(canary=parse_fraction(args.canary, "canary"), waves=args.waves, max_failure=0.05,
                           device_timeout_s=600)
    topics = Topics("bench")
    rounds: list[Round] = []
    load_start = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(Path(tmp) / "mosquitto", extra_config=BROKER_CONFIG).start()
        try:
            t0 = time.perf_counter()
            fleet = FleetProcess(broker.url, topics.prefix, n, public_pem)
            print(f"connected {n} simulated devices in {time.perf_counter() - t0:.1f} s", flush=True)
            assert broker.proc is not None
            wire = BrokerBytes(broker.host, broker.port)
            with ControlClient(broker.url, timeout_s=60) as client:
                bench = Bench(fleet, client, RolloutStore(Path(tmp) / "rollouts.db"), topics, policy,
                              CpuClock(fleet, broker.proc.pid), DesiredSigner(key), wire)
                for i, release in enumerate(releases):
                    r = one_round(bench, release, rollout_first=i % 2 == 1)
                    rounds.append(r)
                    print(f"  round v{release.manifest.version}: fan-out {r.fanout_s:.2f} s ({r.fanout_cpu:.2f} s "
                          f"CPU), rollout {r.rollout_s:.2f} s ({r.rollout_cpu:.2f} s CPU, of which verification "
                          f"{r.verify_cpu:.2f} s; planning {r.plan_s:.2f} s): {r.rollout_s / r.fanout_s:.2f}× "
                          f"wall, {r.rollout_cpu / r.fanout_cpu:.2f}× CPU", flush=True)
            wire.stop()
            fleet.stop()
        finally:
            broker.stop()
    report(rounds, n, args, info.chunks, load_start, fanout_packet_bytes(topics, releases[-1]))


def report(rounds: list[Round], n: int, args: argparse.Namespace, chunks: int, load_start: float,
           computed: tuple[int, int]) -> None:
    def med(values: list[float]) -> float:
        return statistics.median(values)

    msgs_in, msgs_out = rounds[-1].messages
    fan_in, fan_out_b = (med([r.fanout_bytes[i] / n for r in rounds]) for i in (0, 1))
    roll_in, roll_out_b = (med([r.rollout_bytes[i] / n for r in rounds]) for i in (0, 1))
    print(f"raw retained fan-out to {n} subscribers: median {med([r.fanout_s for r in rounds]):.2f} s "
          f"(manifest + {chunks} artifact message(s) out per device)")
    print(f"rollout to {n} devices (canary {args.canary} + {args.waves} waves): median "
          f"{med([r.rollout_s for r in rounds]):.2f} s (planning {med([r.plan_s for r in rounds]):.2f} s); the "
          f"devices' verification {med([r.verify_cpu for r in rounds]) / n * 1e6:.0f} µs of CPU each "
          f"({med([r.verify_cpu / r.rollout_cpu for r in rounds]):.0%} of the rollout's CPU; a real fleet spends it "
          "in parallel, on each device)")
    print(f"broker PUBLISH messages per device per rollout: {msgs_in / n:.2f} in + {msgs_out / n:.2f} out "
          f"= {(msgs_in + msgs_out) / n:.1f}")
    print(f"bytes on the wire per device (MQTT packets whole, broker $SYS counters): fan-out {fan_in:,.0f} in + "
          f"{fan_out_b:,.0f} out (by the packet sizes: {computed[0]:,} + {computed[1]:,}), rollout {roll_in:,.0f} "
          f"in + {roll_out_b:,.0f} out")
    wall = [r.rollout_s / r.fanout_s for r in rounds]
    cpu = [r.rollout_cpu / r.fanout_cpu for r in rounds]
    results = [
        Ratio(f"rollout / raw fan-out, {n} devices, wall time", wall, 3.0,
              cpu=cpu),
        Ratio(f"rollout / raw fan-out, {n} devices, CPU seconds", cpu, 3.0,
              detail="simulated fleet + controller + broker"),
        Ratio("  the same, the devices verifying in parallel (est.)",
              [(r.rollout_s - r.verify_cpu + r.verify_cpu / n * (args.waves + 1)) / r.fanout_s for r in rounds], None,
              detail="wall minus the simulator's serial verification CPU, plus one device's per stage"),
        Ratio("rollout / raw fan-out, bytes on the wire", [sum(r.rollout_bytes) / sum(r.fanout_bytes) for r in rounds],
              None, detail=f"{roll_in + roll_out_b:,.0f} vs {fan_in + fan_out_b:,.0f} B per device, in + out"),
    ]
    artifact = f"{args.artifact_kb} KB artifact" if args.artifact_kb else "the test model's artifact"
    print_table(results, load_start, f"{artifact}; the simulated fleet in one process, the controller in this one")


if __name__ == "__main__":
    main()

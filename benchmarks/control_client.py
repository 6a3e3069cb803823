"""The control plane's MQTT client against bare paho: publishing a batch and reading a retained state.

Starts its own Mosquitto on a free port and, in the same run and on the same broker, times:

* publish — N retained QoS 1 messages until every PUBACK is in: ``ControlClient.publish_many`` against a bare
  paho client that publishes them and waits on the last one;
* read — the N retained messages under a filter: ``ControlClient.collect_retained`` (with its end-of-state
  marker) against a bare paho subscriber that counts until the N-th message arrives (it knows N, which a real
  reader does not).

Interleaved rounds (benchmarks/rounds.py): each round runs both sides of each measure, alternating which goes
first, and gives one ratio ControlClient / bare paho of wall-clock and one of CPU seconds (this process: both
threads); the table shows their medians with the min–max spread. A rollout's planning is the read, its waves are
publishes (docs/rollout.md). No target: the figures say what the client costs over paho.

    .venv/bin/python benchmarks/control_client.py [--messages 3000] [--rounds 7]
"""

import argparse
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the test helpers: Mosquitto on a free port

from rounds import Ratio, in_turn, load_average, print_table  # noqa: E402
from services import Mosquitto  # noqa: E402

from edgeops.mqtt import ControlClient  # noqa: E402

Timing = tuple[float, float]  # wall-clock seconds, CPU seconds


def timed(fn: Callable[[], object]) -> Timing:
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def bare_client(host: str, port: int) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.max_inflight_messages_set(0)
    client.connect(host, port)
    client.loop_start()
    return client


def bare_publish(client: mqtt.Client, messages: list[tuple[str, bytes]]) -> None:
    infos = [client.publish(topic, payload, qos=1, retain=True) for topic, payload in messages]
    infos[-1].wait_for_publish(60)
    if not all(info.is_published() for info in infos):
        raise RuntimeError("bare paho: not every message was acknowledged")


def bare_read(host: str, port: int, topic_filter: str, n: int) -> Timing:
    """Subscribe and wait for the n-th retained message (connect time not counted)."""
    done, count = threading.Event(), [0]

    def on_message(_c: mqtt.Client, _u: object, _msg: mqtt.MQTTMessage) -> None:
        count[0] += 1
        if count[0] == n:
            done.set()

    client = bare_client(host, port)
    client.on_message = on_message
    try:
        def read() -> None:
            client.subscribe(topic_filter, qos=0)
            if not done.wait(60):
                raise RuntimeError(f"bare paho read {count[0]} of {n} messages")
        return timed(read)
    finally:
        client.disconnect()
        client.loop_stop()


def publish_bare(host: str, port: int, messages: list[tuple[str, bytes]]) -> Timing:
    bare = bare_client(host, port)
    try:
        return timed(lambda: bare_publish(bare, messages))
    finally:
        bare.disconnect()
        bare.loop_stop()


def publish_ours(url: str, messages: list[tuple[str, bytes]]) -> Timing:
    with ControlClient(url, timeout_s=60) as client:
        return timed(lambda: client.publish_many((t, p, True) for t, p in messages))


def read_ours(url: str, messages: list[tuple[str, bytes]]) -> Timing:
    with ControlClient(url, timeout_s=60) as client:
        got: dict[str, bytes] = {}
        timing = timed(lambda: got.update(client.collect_retained("bench/devices/+/desired", sync_root="bench")))
    if got != dict(messages):
        raise RuntimeError(f"collect_retained returned {len(got)} of {len(messages)} messages")
    return timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds")
    args = parser.parse_args()
    load_start = load_average()
    ratios: dict[str, tuple[list[float], list[float]]] = {"publish": ([], []), "read": ([], [])}
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(Path(tmp) / "mosquitto", extra_config="set_tcp_nodelay true\n").start()
        try:
            host, port = "127.0.0.1", broker.port
            for r in range(args.rounds):
                messages = [(f"bench/devices/d{i:05d}/desired", f'{{"round": {r}, "i": {i}}}'.encode())
                            for i in range(args.messages)]
                # publishing: each side publishes the round's messages (the retained state both reads find)
                got = {side: publish_bare(host, port, messages) if side == "bare" else
                       publish_ours(broker.url, messages) for side in in_turn(["bare", "ours"], r)}
                bare, ours = got["bare"], got["ours"]
                ratios["publish"][0].append(ours[0] / bare[0])
                ratios["publish"][1].append(ours[1] / bare[1])
                got = {side: bare_read(host, port, "bench/devices/+/desired", args.messages) if side == "bare" else
                       read_ours(broker.url, messages) for side in in_turn(["bare", "ours"], r)}
                bare, ours = got["bare"], got["ours"]
                ratios["read"][0].append(ours[0] / bare[0])
                ratios["read"][1].append(ours[1] / bare[1])
                print(f"  round {r + 1}: publish {ratios['publish'][0][-1]:.2f}× wall "
                      f"{ratios['publish'][1][-1]:.2f}× CPU, read {ratios['read'][0][-1]:.2f}× wall "
                      f"{ratios['read'][1][-1]:.2f}× CPU (last: bare {bare[0]:.3f} s, ours {ours[0]:.3f} s)",
                      flush=True)
        finally:
            broker.stop()
    results = [Ratio(f"{what} {args.messages} retained, ControlClient / bare paho", wall, None,
                     cpu=cpu) for what, (wall, cpu) in ratios.items()]
    print_table(results, load_start, "one broker, both clients in this process")


if __name__ == "__main__":
    main()

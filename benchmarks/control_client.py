"""The control plane's MQTT client against bare paho: publishing a batch and reading a retained state.

Starts its own Mosquitto on a free port and, in the same run and on the same broker, times:

* publish — N retained QoS 1 messages until every PUBACK is in: ``ControlClient.publish_many`` against a bare
  paho client that publishes them and waits on the last one;
* read — the N retained messages under a filter: ``ControlClient.collect_retained`` (with its end-of-state
  marker) against a bare paho subscriber that counts until the N-th message arrives (it knows N, which a real
  reader does not).

Prints medians of wall-clock and CPU seconds (this process: both threads) and their ratios; a rollout's
planning is the read, its waves are publishes (docs/rollout.md).

    .venv/bin/python benchmarks/control_client.py [--messages 3000] [--repeat 5]
"""

import argparse
import statistics
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rows: dict[str, list[Timing]] = {"publish, bare paho": [], "publish, ControlClient": [],
                                     "read, bare paho": [], "read, ControlClient": []}
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(Path(tmp) / "mosquitto", extra_config="set_tcp_nodelay true\n").start()
        try:
            host, port = "127.0.0.1", broker.port
            for r in range(args.repeat):
                messages = [(f"bench/devices/d{i:05d}/desired", f'{{"round": {r}, "i": {i}}}'.encode())
                            for i in range(args.messages)]
                bare = bare_client(host, port)
                rows["publish, bare paho"].append(timed(lambda: bare_publish(bare, messages)))  # noqa: B023
                bare.disconnect()
                bare.loop_stop()
                with ControlClient(broker.url, timeout_s=60) as client:
                    rows["publish, ControlClient"].append(timed(lambda: client.publish_many(
                        (t, p, True) for t, p in messages)))  # noqa: B023
                rows["read, bare paho"].append(bare_read(host, port, "bench/devices/+/desired", args.messages))
                with ControlClient(broker.url, timeout_s=60) as client:
                    got: dict[str, bytes] = {}
                    rows["read, ControlClient"].append(timed(lambda: got.update(  # noqa: B023
                        client.collect_retained("bench/devices/+/desired", sync_root="bench"))))
                    if got != dict(messages):
                        raise RuntimeError(f"collect_retained returned {len(got)} of {len(messages)} messages")
        finally:
            broker.stop()
    medians = {name: (statistics.median(t[0] for t in ts), statistics.median(t[1] for t in ts))
               for name, ts in rows.items()}
    print(f"{args.messages} messages, medians of {args.repeat} rounds (wall s / CPU s of this process):")
    for name, (wall, cpu) in medians.items():
        print(f"  {name:24s} {wall:6.3f} / {cpu:6.3f}")
    for what in ("publish", "read"):
        bare, ours = medians[f"{what}, bare paho"], medians[f"{what}, ControlClient"]
        print(f"{what}: ControlClient / bare paho = {ours[0] / bare[0]:.2f}x wall, {ours[1] / bare[1]:.2f}x CPU")


if __name__ == "__main__":
    main()

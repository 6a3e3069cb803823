"""SIGTERM to a real ``edgeops-agent run`` process: it exits, says ``offline`` when it can, and keeps the
telemetry the broker has not acknowledged.

The hang these guard against (shutdown.py) was a race of a few bytecodes: these tests catch a hang when it
happens (every wait below is a hang detector, not a speed check) but cannot force it. A thaw from SIGSTOP
followed at once by SIGTERM is the moment that made it likeliest (about 1 in 60 in a loop of real agents).
"""

import json
import signal
import sqlite3
import threading
import urllib.request
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from agent_procs import AgentProcess, spawn_agent
from releases import build_release, kid, new_key, preinstall, public_pem
from services import Mosquitto, clear_retained, free_port

pytestmark = pytest.mark.integration

ROW = {"age in years": 52.0, "income": 4.5, "plan": "pro"}
EXIT_BOUND_S = 15.0  # generous: a clean stop takes well under a second; only a hang runs into this


def retained_status(url: str, topic: str, want: str, timeout: float = 30.0) -> bool:
    """Wait until the retained status on ``topic`` says ``want`` (a fresh subscription each time: the retained
    message is what a fleet view would read)."""
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    seen = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        if msg.payload and json.loads(msg.payload)["status"] == want:
            seen.set()

    client.on_message = on_message
    client.on_connect = lambda c, *_: c.subscribe(topic, 1)
    client.connect(host, int(port))
    client.loop_start()
    try:
        return seen.wait(timeout)
    finally:
        client.loop_stop()
        client.disconnect()


def sigterm_and_wait(agent: AgentProcess) -> int:
    assert agent.proc is not None
    agent.proc.send_signal(signal.SIGTERM)
    try:
        return agent.proc.wait(timeout=EXIT_BOUND_S)
    except Exception:
        agent.stop(timeout=0)  # SIGABRT: faulthandler writes every thread's stack to the log
        raise AssertionError(f"agent did not exit on SIGTERM:\n{agent.log.read_text()[-4000:]}") from None


def key_file(tmp: Path) -> tuple[object, Path]:
    key = new_key()
    path = tmp / f"{kid(key)}.pub"
    path.write_bytes(public_pem(key))
    return key, path


def test_sigterm_right_after_a_thaw_exits_cleanly_and_leaves_offline(session_broker: str, topic_prefix: str,
                                                                       tmp_path: Path) -> None:
    _key, public = key_file(tmp_path)
    device = "stop-1"
    status = f"{topic_prefix}/devices/{device}/status"
    agent = spawn_agent(tmp_path, session_broker, topic_prefix, device, public, {"site": "x"})
    try:
        for round_ in range(4):
            assert retained_status(session_broker, status, "online"), f"round {round_}: never online"
            agent.freeze()
            threading.Event().wait(1.2)  # longer than every timed wait in the agent: all threads wake at once
            agent.thaw()
            assert sigterm_and_wait(agent) == 0, agent.log.read_text()[-3000:]
            assert retained_status(session_broker, status, "offline", timeout=10)
            agent.start()
    finally:
        agent.stop()
        clear_retained(session_broker, [status, f"{topic_prefix}/devices/{device}/reported"])


def test_sigterm_with_the_broker_gone_exits_and_the_outbox_keeps_the_window(tmp_path: Path) -> None:
    key, public = key_file(tmp_path)
    release = build_release("churn", 1, key)
    broker = Mosquitto(tmp_path / "mosquitto").start()
    device = "stop-2"
    port = free_port()
    agent = spawn_agent(tmp_path, broker.url, "edgeops", device, public, {"site": "x"},
                        http=f"127.0.0.1:{port}")  # type: ignore[arg-type]
    status = f"edgeops/devices/{device}/status"
    try:
        assert retained_status(broker.url, status, "online")
        assert sigterm_and_wait(agent) == 0  # the first run made the data dir; now give it a model and restart
        preinstall(tmp_path / device / "data", release)
        agent.start()
        assert retained_status(broker.url, status, "online")
        broker.stop()  # the broker is gone for good: nothing can be published any more
        for _ in range(5):
            request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/predict", method="POST",
                                             data=json.dumps({"record": ROW}).encode(),
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 200
        assert sigterm_and_wait(agent) == 0, agent.log.read_text()[-3000:]
    finally:
        agent.stop()
        broker.stop()
    with sqlite3.connect(tmp_path / device / "data" / "outbox.sqlite") as db:
        payloads = [json.loads(p) for (p,) in db.execute("SELECT payload FROM windows")]
    assert [w["count"] for w in payloads] == [5]  # the shutdown flush stored the open window, unsent

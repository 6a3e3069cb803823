"""A desired state naming a model the name rule refuses, sent to a real agent over a real Mosquitto.

The old rule (``match`` with ``$``) let ``"churn\\n"`` through: the agent subscribed to
``{p}/releases/churn\\n/2/#``, Mosquitto dropped the connection for the control character, the agent reconnected,
subscribed again and was dropped again, many times a second, and never said why. Now the desired state is
refused as it arrives, reported ``rejected``, and the link stays up.
"""

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from releases import Control, agent_config, build_release, is_reported, new_key, preinstall
from services import Mosquitto

from edge_agent.agent import Agent
from edge_agent.link import client_id_for
from edge_agent.protocol import Desired

pytestmark = pytest.mark.integration

DEVICE = "dev-1"
PREFIX = "names"
TIMEOUT = 30.0


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return new_key()


@pytest.fixture
def control(own_broker: Mosquitto, key: Ed25519PrivateKey) -> Iterator[Control]:
    ctl = Control(own_broker.url, PREFIX, key)
    ctl.client.subscribe(ctl.topics.device(DEVICE, "status"), qos=1)
    ctl.watch(DEVICE)
    yield ctl
    ctl.close()


def statuses(control: Control) -> list[str]:
    return [json.loads(p)["status"] for p in control.messages("status") if p]


def connections(broker: Mosquitto, client_id: str) -> int:
    """How often the client connected, from the broker's own log (``connection_messages`` is on by default)."""
    return broker.log().count(f" as {client_id} (")


def test_a_desired_model_with_a_trailing_newline_is_rejected_and_the_agent_stays_connected(
        own_broker: Mosquitto, control: Control, key: Ed25519PrivateKey, tmp_path: Path) -> None:
    preinstall(tmp_path / "data", build_release("churn", 1, key))
    agent = Agent(agent_config(tmp_path, own_broker.url, PREFIX, key, DEVICE)).start()
    try:
        control.wait_for(lambda t, p: t.endswith("/status") and json.loads(p)["status"] == "online")
        control.wait_for(is_reported("serving", 1))

        control.publish(control.topics.device(DEVICE, "desired"),
                        Desired(device=DEVICE, model="churn\n", version=2, rollout_id="r-nl").to_bytes())
        # The refusal is reported; on the old code the agent flapped instead, which shows as a second status.
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and len(statuses(control)) < 2:
            if any(is_reported("rejected", 1)(t, p) for t, p in list(control.received)):
                break
            time.sleep(0.02)
        assert statuses(control) == ["online"], f"the agent flapped: {statuses(control)[:12]}"
        _, payload = control.wait_for(is_reported("rejected", 1), timeout=1.0)
        assert "model" in json.loads(payload)["last_error"]

        # A valid desired state afterwards installs over the same, never interrupted connection: the agent's
        # link has been exercised for the whole install before we count.
        v2 = build_release("churn", 2, key, seed=1, chunk_size=500)
        control.publish_release(v2)
        control.set_desired(DEVICE, "churn", 2)
        control.wait_for(is_reported("serving", 2), timeout=TIMEOUT)
        assert agent.current == ("churn", 2)
        assert agent.link.connected
        assert statuses(control) == ["online"]
        assert connections(own_broker, client_id_for(agent.config)) == 1, own_broker.log()[-2000:]
    finally:
        agent.stop()

"""The agent under stress: a broker outage around an update, and predictions racing a model swap."""

import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from releases import Control, agent_config, build_release, is_reported, new_key, preinstall
from services import Mosquitto, unique_prefix

from edge_agent.agent import Agent
from edge_agent.inference import Prediction

pytestmark = pytest.mark.integration

ROW = {"age in years": 52.0, "income": 4.5, "plan": "pro"}
DEVICE = "dev-r"


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return new_key()


def test_serves_through_a_broker_outage_in_the_middle_of_a_fetch_and_finishes_it_after(
        tmp_path: Path, own_broker: Mosquitto, key: Ed25519PrivateKey) -> None:
    prefix = unique_prefix()
    preinstall(tmp_path / "data", build_release("churn", 1, key))
    agent = Agent(agent_config(tmp_path, own_broker.url, prefix, key, DEVICE, reconnect_max_s=0.5)).start()
    control = Control(own_broker.url, prefix, key)
    try:
        control.watch(DEVICE)
        control.set_desired(DEVICE, "churn", 2)  # its release is not published yet: the agent waits for it
        control.wait_for(is_reported("fetching", 1, desired_version=2))
        control.close(clear=False)
        own_broker.stop(kill=True)
        assert agent.predict(ROW).label in (0, 1)  # serving never depended on the broker
        own_broker.start()
        control = Control(own_broker.url, prefix, key)
        control.watch(DEVICE)
        control.publish_release(build_release("churn", 2, key, seed=1))  # reaches the re-subscribed agent
        control.wait_for(is_reported("serving", 2), timeout=60)
        assert agent.current == ("churn", 2)
    finally:
        agent.stop()
        control.close(clear=False)


def test_predictions_from_many_threads_never_fail_while_models_swap(
        tmp_path: Path, session_broker: str, topic_prefix: str, key: Ed25519PrivateKey) -> None:
    preinstall(tmp_path / "data", build_release("churn", 1, key))
    agent = Agent(agent_config(tmp_path, session_broker, topic_prefix, key, DEVICE)).start()
    control = Control(session_broker, topic_prefix, key)
    stop = threading.Event()
    failures: list[BaseException] = []
    seen: list[set[int]] = []

    def hammer(income: float) -> None:
        versions: set[int] = set()
        seen.append(versions)
        while not stop.is_set():
            try:
                model = agent.current
                p: Prediction = agent.predict({**ROW, "income": income})
                assert p.label in (0, 1) and abs(sum(p.probabilities.values()) - 1) < 1e-4  # type: ignore[union-attr]
                versions.add(model[1])  # type: ignore[index]
            except BaseException as exc:  # any failure is the finding
                failures.append(exc)
                return

    threads = [threading.Thread(target=hammer, args=(float(i),)) for i in range(4)]
    try:
        control.watch(DEVICE)
        for t in threads:
            t.start()
        for version in (2, 3, 4):
            control.publish_release(build_release("churn", version, key, seed=version % 3))
            control.set_desired(DEVICE, "churn", version)
            control.wait_for(is_reported("serving", version), timeout=60)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
        agent.stop()
        control.close()
    assert failures == []
    assert set().union(*seen) >= {1, 4}

"""A prediction says which model version gave it (``"model": "churn@2"``), beside the fields it always had."""

import http.client
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from releases import agent_config, build_release, new_key, preinstall

from edge_agent.agent import Agent

pytestmark = pytest.mark.integration

ROW = {"age in years": 52.0, "income": 4.5, "plan": "pro"}


def predict(agent: Agent, body: dict[str, Any]) -> dict[str, Any]:
    host, port = agent.http_address  # type: ignore[misc]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request("POST", "/v1/predict", body=json.dumps(body).encode())
    response = conn.getresponse()
    payload = json.loads(response.read())
    conn.close()
    assert response.status == 200, payload
    return payload


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return new_key()


@pytest.mark.parametrize("version", [1, 2])
def test_the_answer_names_the_model_version_that_gave_it(tmp_path: Path, session_broker: str, topic_prefix: str,
                                                          key: Ed25519PrivateKey, version: int) -> None:
    release = build_release("churn", version, key, seed=version)
    preinstall(tmp_path / "data", release, previous=build_release("churn", version + 10, key))
    agent = Agent(agent_config(tmp_path, session_broker, topic_prefix, key, http="127.0.0.1:0")).start()
    try:
        one = predict(agent, {"record": ROW})
        assert one["model"] == f"churn@{version}"
        assert set(one["prediction"]) == {"id", "label", "probabilities"}  # the old fields, unchanged
        many = predict(agent, {"records": [ROW, ROW]})
        assert many["model"] == f"churn@{version}" and len(many["predictions"]) == 2
    finally:
        agent.stop()

"""The local HTTP endpoint: answers, clear 4xx errors naming the field, limits, and it keeps serving."""

import http.client
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from releases import Release, agent_config, build_release, new_key, preinstall

from edge_agent.agent import Agent

pytestmark = pytest.mark.integration

ROW = {"age in years": 52.0, "income": 4.5, "plan": "pro"}


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return new_key()


@pytest.fixture(scope="module")
def v1(key: Ed25519PrivateKey) -> Release:
    return build_release("churn", 1, key)


def start(tmp_path: Path, url: str, prefix: str, key: Ed25519PrivateKey) -> Agent:
    return Agent(agent_config(tmp_path, url, prefix, key, http="127.0.0.1:0")).start()


@pytest.fixture
def agent(tmp_path: Path, session_broker: str, topic_prefix: str, key: Ed25519PrivateKey,
          v1: Release) -> Iterator[Agent]:
    preinstall(tmp_path / "data", v1)
    agent = start(tmp_path, session_broker, topic_prefix, key)
    yield agent
    agent.stop()


def call(agent: Agent, method: str, path: str, body: Any = None, raw: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    host, port = agent.http_address  # type: ignore[misc]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    conn.request(method, path, body=data, headers=headers or {})
    response = conn.getresponse()
    payload = json.loads(response.read())
    conn.close()
    return response.status, payload


def test_predict_one_and_many(agent: Agent) -> None:
    status, body = call(agent, "POST", "/v1/predict", {"record": ROW})
    assert status == 200
    assert body["prediction"]["label"] in (0, 1) and set(body["prediction"]["probabilities"]) == {"0", "1"}
    status, body = call(agent, "POST", "/v1/predict", {"records": [ROW, {**ROW, "plan": None}]})
    assert status == 200 and len(body["predictions"]) == 2


def test_health_and_model(agent: Agent) -> None:
    status, health = call(agent, "GET", "/v1/health")
    assert status == 200 and (health["status"], health["model"], health["version"]) == ("ok", "churn", 1)
    status, model = call(agent, "GET", "/v1/model")
    assert status == 200 and model["name"] == "churn" and model["classes"] == [0, 1]
    assert [i["column"] for i in model["inputs"]] == ["age in years", "income", "plan"]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"record": {"income": 1.0, "plan": "pro"}}, 422, "age in years: is missing"),
        ({"record": {**ROW, "income": "lots"}}, 422, "income: expected a number, got a string"),
        ({"record": {**ROW, "income": None}}, 422, "income: is null"),
        ({"records": [ROW, {**ROW, "plan": 7}]}, 422, "records[1].plan: expected a string"),
        ({"record": [1, 2]}, 400, "record: must be an object"),
        ({"records": {"a": 1}}, 400, "records: must be a list"),
        ({"record": ROW, "records": [ROW]}, 400, "exactly one of 'record' or 'records'"),
        ({}, 400, "exactly one of 'record' or 'records'"),
    ],
)
def test_user_errors_are_4xx_naming_the_field(agent: Agent, body: dict, status: int, message: str) -> None:
    got_status, got = call(agent, "POST", "/v1/predict", body)
    assert got_status == status and message in got["error"]


@pytest.mark.parametrize(
    ("raw", "status", "message"),
    [
        (b"{not json", 400, "malformed JSON"),
        (b"[1, 2]", 400, "must be a JSON object"),
        (b'{"record": {"income": NaN}}', 400, "NaN is not allowed"),
        (b"\xff\xfe", 400, "not UTF-8"),
    ],
)
def test_malformed_bodies_are_400(agent: Agent, raw: bytes, status: int, message: str) -> None:
    got_status, got = call(agent, "POST", "/v1/predict", raw=raw)
    assert got_status == status and message in got["error"]


def oversized_post(agent: Agent, length: int) -> tuple[int, dict[str, Any]]:
    """Declare a body over the limit and send only its first bytes: the server must answer 413 from the header
    alone (http.client would keep writing the whole body and race the server's close: a broken pipe)."""
    host, port = agent.http_address  # type: ignore[misc]
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {length}\r\n\r\n{{".encode())
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, json.loads(response.read())


def test_limits_unknown_paths_and_methods(agent: Agent) -> None:
    status, body = oversized_post(agent, (1 << 20) + 2)
    assert status == 413 and "exceeds the limit" in body["error"]
    assert call(agent, "GET", "/v2/nothing")[0] == 404
    assert call(agent, "GET", "/v1/predict")[0] == 405
    status, body = call(agent, "POST", "/v1/predict", raw=b"", headers={"Content-Length": "abc"})
    assert status == 411
    assert call(agent, "POST", "/v1/predict", {"record": ROW})[0] == 200  # still serving after all that


def test_feedback_for_a_prediction(agent: Agent) -> None:
    _, body = call(agent, "POST", "/v1/predict", {"record": ROW})
    pid = body["prediction"]["id"]
    assert call(agent, "POST", "/v1/feedback", {"prediction_id": pid, "label": 1}) == (200, {"ok": True})
    status, err = call(agent, "POST", "/v1/feedback", {"prediction_id": "nope", "label": 1})
    assert status == 422 and "prediction_id: unknown or expired" in err["error"]
    status, err = call(agent, "POST", "/v1/feedback", {"prediction_id": pid})
    assert status == 400 and "'label' or 'value'" in err["error"]
    status, err = call(agent, "POST", "/v1/feedback", {"label": 1})
    assert status == 400 and "prediction_id" in err["error"]


def test_no_model_yet_is_503(tmp_path: Path, session_broker: str, topic_prefix: str, key: Ed25519PrivateKey) -> None:
    agent = start(tmp_path, session_broker, topic_prefix, key)
    try:
        status, body = call(agent, "POST", "/v1/predict", {"record": ROW})
        assert status == 503 and body["error"] == "no model is installed yet"
        assert call(agent, "GET", "/v1/health")[1]["status"] == "no_model"
        assert call(agent, "GET", "/v1/model")[0] == 503
    finally:
        agent.stop()


def test_a_busy_port_is_a_one_line_agent_error(agent: Agent, tmp_path: Path, session_broker: str,
                                               topic_prefix: str, key: Ed25519PrivateKey) -> None:
    from edge_agent.errors import AgentError

    host, port = agent.http_address  # type: ignore[misc]
    other = Agent(agent_config(tmp_path / "other", session_broker, topic_prefix, key, http=f"{host}:{port}"))
    try:
        with pytest.raises(AgentError, match=f"http: cannot listen on 127.0.0.1:{port}"):
            other.start()
    finally:
        other.stop()

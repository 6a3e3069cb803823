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
from services import free_port

from edge_agent.agent import Agent
from edge_agent.http_api import HttpApi
from edge_agent.lifecycle import AgentState
from edge_agent.store import ModelRef, ModelStore

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


def post_raw(address: tuple[str, int], body: bytes, headers: bytes = b"") -> tuple[int, dict[str, Any]]:
    """POST /v1/predict byte for byte (http.client would refuse or re-encode the odd headers)."""
    with socket.create_connection(address, timeout=10) as sock:
        if b"Content-Length" not in headers:
            headers += b"Content-Length: %d\r\n" % len(body)
        sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n" + body)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, json.loads(response.read())


@pytest.fixture
def on_probation(tmp_path: Path, key: Ed25519PrivateKey, v1: Release) -> Iterator[tuple[Agent, tuple[str, int]]]:
    """churn v2 on probation over v1, strict enough that one model error rolls it back; served over a real
    HTTP server. No owner thread: the test judges the probation itself with ``tick``."""
    v2 = build_release("churn", 2, key, seed=1)
    preinstall(tmp_path / "data", v2, previous=v1)
    ModelStore(tmp_path / "data").write_state(
        AgentState("probation", current=ModelRef("churn", 2), previous=ModelRef("churn", 1)).to_json())
    config = agent_config(tmp_path, f"mqtt://127.0.0.1:{free_port()}", "p", key, probation_s=600.0,
                          probation_min_predictions=1, probation_max_error_rate=0.0)
    agent = Agent(config).load()
    api = HttpApi(agent, "127.0.0.1", 0)
    api.start()
    try:
        yield agent, api.address
    finally:
        api.stop()
        agent.stop()


BIG = b"9" * 400
GOOD = b'"age in years": 52.0, "income": 4.5, "plan": "pro"'


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [
        (b'{"record": {"age in years": 52.0, "income": 4.5, "plan": "\\ud800"}}', b"", 422,
         "plan: is not valid Unicode"),
        (b'{"record": {"age in years": 52.0, "income": ' + BIG + b', "plan": "pro"}}', b"", 422,
         "income: must be a finite number"),
        (b'{"record": {' + GOOD + b'}}', b"Content-Length: \xb2\r\n", 400, "Content-Length: must be"),
        # their cousins
        (b'{"records": [{' + GOOD + b'}, {"age in years": 1.0, "income": 4.5, "plan": "a\\udfffb"}]}', b"", 422,
         "records[1].plan: is not valid Unicode"),
        (b'{"records": [{' + GOOD + b'}, {"age in years": -' + BIG + b', "income": 4.5, "plan": "pro"}]}', b"", 422,
         "records[1].age in years: must be a finite number"),
        (b'{"record": {"age in years": 1e400, "income": 4.5, "plan": "pro"}}', b"", 422,
         "age in years: must be a finite number"),
        (b'{"record": {"age in years": 52.0, "income": ' + b"9" * 5000 + b', "plan": "pro"}}', b"", 422,
         "income: must be a finite number"),
        (b'{"record": {"age in years": {"a": 1}, "income": 4.5, "plan": "pro"}}', b"", 422,
         "age in years: expected a number, got dict"),
        (b'{"record": {"age in years": 52.0, "income": 4.5, "plan": {"\\ud800": 1}}}', b"", 422,
         "plan: expected a string, got dict"),
        (b'{"record": {' + GOOD + b'}}', b"Content-Length: \xd9\xa3\r\n", 400, "Content-Length: must be"),
        (b'{"record": {' + GOOD + b'}}', b"Content-Length: -1\r\n", 400, "Content-Length: must be"),
        (b'{"record": {' + GOOD + b'}}', b"Content-Length: \r\n", 400, "Content-Length: must be"),
        (b'{"record": {' + GOOD + b'}}', b"Content-Length: 9" + b"9" * 5000 + b"\r\n", 413,
         "body: a Content-Length of 5001 digits exceeds the limit"),
        (b'{"record": {' + GOOD + b'}}', b"Content-Length: 2\r\nContent-Length: 3\r\n", 400,
         "Content-Length: must be one"),
        (b'{"record": {"plan": "\xed\xa0\x80"}}', b"", 400, "body: not UTF-8"),
    ],
)
def test_caller_mistakes_are_4xx_naming_the_field_and_never_count_against_the_model(
        on_probation: tuple[Agent, tuple[str, int]], body: bytes, headers: bytes, status: int,
        message: str) -> None:
    agent, address = on_probation
    answers = [post_raw(address, body, headers) for _ in range(2)]  # two used to roll a good release back
    assert post_raw(address, b'{"record": {' + GOOD + b'}}')[0] == 200  # still serving
    assert agent.probation is not None and agent.probation.errors == 0
    agent.tick()  # judges the probation: nothing to hold against the model
    assert agent.state.phase == "probation" and agent.current == ("churn", 2)
    window = agent.pump.recorder.close_window(0)  # type: ignore[union-attr]
    assert window is not None and "model" not in window.errors, window.errors
    for got_status, got in answers:
        assert (got_status, message) == (status, got["error"][:len(message)]), got


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


def test_limits_in_bytes_and_records(agent: Agent) -> None:
    status, body = oversized_post(agent, (1 << 20) + 2)
    assert status == 413 and body["error"] == "body: 1048578 bytes exceeds the limit of 1048576"
    status, body = call(agent, "POST", "/v1/predict", {"records": [ROW] * 10_001})  # 0.6 MB: within the bytes
    assert status == 413 and body["error"] == "records: 10001 exceeds the limit of 10000 records per request"
    status, body = call(agent, "POST", "/v1/predict", raw=b"", headers={"Content-Length": "abc"})
    assert status == 400 and body["error"].startswith("Content-Length: must be one decimal number")
    assert call(agent, "POST", "/v1/predict", {"record": ROW})[0] == 200  # still serving after all that


def test_the_docs_state_the_limits_the_server_enforces() -> None:
    from edge_agent.http_api import MAX_BATCH, MAX_BODY_BYTES

    text = (Path(__file__).parents[2] / "docs" / "agent.md").read_text()
    assert f"{MAX_BATCH:,} records".replace(",", " ") in text
    assert f"1 MiB ({MAX_BODY_BYTES:,} bytes)".replace(",", " ") in text


def raw_request(agent: Agent, method: str, path: str, body: bytes = b"") -> http.client.HTTPResponse:
    host, port = agent.http_address  # type: ignore[misc]
    sock = socket.create_connection((host, port), timeout=10)
    sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    response = http.client.HTTPResponse(sock, method=method)
    response.begin()
    return response


@pytest.mark.parametrize(
    ("method", "path", "status", "allow"),
    [
        ("PUT", "/v1/predict", 405, "POST"),
        ("DELETE", "/v1/feedback", 405, "POST"),
        ("FOO", "/v1/model", 405, "GET, HEAD"),
        ("POST", "/v1/health", 405, "GET, HEAD"),
        ("GET", "/v1/predict", 405, "POST"),
        ("FOO", "/nowhere", 404, None),
        ("GET", "/v2/nothing", 404, None),
        ("POST", "/v1/predict?verbose=1", 200, None),
    ],
)
def test_every_method_and_path_gets_a_json_answer(agent: Agent, method: str, path: str, status: int,
                                                  allow: str | None) -> None:
    response = raw_request(agent, method, path, json.dumps({"record": ROW}).encode())
    body = json.loads(response.read())
    assert (response.status, response.getheader("Allow")) == (status, allow)
    assert response.getheader("Content-Type") == "application/json"
    assert ("error" in body) == (status != 200)


def test_head_is_a_get_without_a_body_and_stdlib_refusals_are_json(agent: Agent) -> None:
    response = raw_request(agent, "HEAD", "/v1/health")
    assert response.status == 200 and int(response.getheader("Content-Length")) > 0 and response.read() == b""
    host, port = agent.http_address  # type: ignore[misc]
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(b"GET /v1/health HTTP/7.0\r\n\r\n")
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert response.status == 505 and "error" in json.loads(response.read())


def test_a_kept_alive_connection_serves_many_requests_even_after_an_error(agent: Agent) -> None:
    host, port = agent.http_address  # type: ignore[misc]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.connect()
    sock = conn.sock
    for body in ({"record": ROW}, {"record": {**ROW, "income": "x"}}, {"record": ROW}):
        conn.request("POST", "/v1/predict", json.dumps(body).encode())
        response = conn.getresponse()
        response.read()
        assert response.status in (200, 422) and conn.sock is sock  # the same connection every time
    conn.close()


def test_feedback_for_a_prediction(agent: Agent) -> None:
    _, body = call(agent, "POST", "/v1/predict", {"record": ROW})
    pid = body["prediction"]["id"]
    assert pid.startswith("churn@1:") and pid.endswith(":0")   # release, window, row
    assert call(agent, "POST", "/v1/feedback", {"prediction_id": pid, "label": 1}) == (200, {"ok": True})
    _, body = call(agent, "POST", "/v1/predict", {"records": [ROW, ROW]})
    batch_ids = [p["id"] for p in body["predictions"]]
    assert batch_ids == [pid[:-1] + "1", pid[:-1] + "2"]   # the same window's next rows
    assert call(agent, "POST", "/v1/feedback", {"prediction_id": batch_ids[1], "label": 0}) == (200, {"ok": True})
    status, err = call(agent, "POST", "/v1/feedback", {"prediction_id": pid[:-1] + "3", "label": 1})
    assert status == 422 and "prediction_id: unknown or expired" in err["error"]
    status, err = call(agent, "POST", "/v1/feedback", {"prediction_id": "nope", "label": 1})
    assert status == 422 and "prediction_id: 'nope' is not a prediction id" in err["error"]
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

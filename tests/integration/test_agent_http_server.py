"""The local HTTP server under load and against slow clients: a real backlog, a deadline per request, an idle
timeout per kept-alive connection. Real agent, real sockets, real ONNX model."""

import http.client
import json
import select
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from releases import agent_config, build_release, new_key, preinstall

from edge_agent.agent import Agent

pytestmark = pytest.mark.integration

BODY = json.dumps({"record": {"age in years": 52.0, "income": 4.5, "plan": "pro"}}).encode()
REQUEST_TIMEOUT_S = 1.0
IDLE_TIMEOUT_S = 1.0


@pytest.fixture
def agent(tmp_path: Path, session_broker: str, topic_prefix: str) -> Iterator[Agent]:
    key: Ed25519PrivateKey = new_key()
    preinstall(tmp_path / "data", build_release("churn", 1, key))
    config = agent_config(tmp_path, session_broker, topic_prefix, key, http="127.0.0.1:0",
                          http_request_timeout_s=REQUEST_TIMEOUT_S, http_idle_timeout_s=IDLE_TIMEOUT_S)
    agent = Agent(config).start()
    yield agent
    agent.stop()


def predict(address: tuple[str, int]) -> int:
    conn = http.client.HTTPConnection(*address, timeout=30)
    try:
        conn.request("POST", "/v1/predict", BODY, {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_200_concurrent_clients_are_all_served(agent: Agent) -> None:
    """Each of 200 clients opens a new connection per request, all at once: the stdlib's listen(5) reset about
    half of these 1,000 requests."""
    address = agent.http_address
    assert address is not None
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    start = threading.Barrier(200)

    def client() -> None:
        start.wait()
        for _ in range(5):
            try:
                outcome = str(predict(address))
            except OSError as exc:
                outcome = type(exc).__name__
            with lock:
                outcomes[outcome] += 1

    threads = [threading.Thread(target=client, daemon=True) for _ in range(200)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 120
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads), f"clients still waiting: {outcomes}"
    assert outcomes == Counter({"200": 1000})


def wait_closed(sock: socket.socket, until: float, trickle: bytes = b"") -> tuple[float | None, bytes]:
    """Send ``trickle`` one byte per 0.2 s (none: just wait) until the server closes the connection; returns
    when it closed (None if not by ``until``) and everything the server sent."""
    received, pending = b"", iter(trickle)
    while time.monotonic() < until:
        readable, _, _ = select.select([sock], [], [], 0.2)
        try:
            if readable:
                chunk = sock.recv(65536)
                received += chunk
                if not chunk:
                    return time.monotonic(), received
            elif (byte := next(pending, None)) is not None:
                sock.send(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic(), received
    return None, received


def test_a_client_trickling_its_headers_is_closed_at_the_request_deadline(agent: Agent) -> None:
    """One header byte every 0.2 s restarted the stdlib's per-read timeout for ever; the deadline covers the
    whole request, however its bytes are spread. Meanwhile other clients are served."""
    address = agent.http_address
    assert address is not None
    result: dict[str, object] = {}
    with socket.create_connection(address, timeout=10) as slow:
        began = time.monotonic()
        slow.sendall(b"POST /v1/predict HTTP/1.1\r\n")

        def trickle() -> None:
            result["closed"], result["received"] = wait_closed(slow, began + 15, b"X-Slow: " + b"a" * 1000)

        trickler = threading.Thread(target=trickle, daemon=True)
        trickler.start()
        served = [predict(address) for _ in range(3)]  # other connections meanwhile
        served_by = time.monotonic()
        trickler.join(30)
    assert served == [200, 200, 200] and served_by - began < REQUEST_TIMEOUT_S + 5
    closed = result["closed"]
    assert isinstance(closed, float), "the trickling client was never closed"
    assert REQUEST_TIMEOUT_S <= closed - began < REQUEST_TIMEOUT_S + 5
    assert result["received"].startswith(b"HTTP/1.1 408 ")  # type: ignore[union-attr]
    assert b'{"error": "request: not received within 1 s"}' in result["received"]  # type: ignore[operator]


def test_a_body_that_never_completes_is_answered_408_at_the_deadline(agent: Agent) -> None:
    address = agent.http_address
    assert address is not None
    with socket.create_connection(address, timeout=10) as slow:
        began = time.monotonic()
        slow.sendall(b"POST /v1/predict HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
        closed, received = wait_closed(slow, began + 15, b" " * 1000)
    assert closed is not None and REQUEST_TIMEOUT_S <= closed - began < REQUEST_TIMEOUT_S + 5
    assert received.startswith(b"HTTP/1.1 408 ") and b'"error": "body: not received' in received


def test_an_idle_kept_alive_connection_is_closed_after_the_idle_timeout(agent: Agent) -> None:
    address = agent.http_address
    assert address is not None
    with socket.create_connection(address, timeout=10) as sock:
        for _ in range(2):  # kept alive between requests
            idle_from = time.monotonic()  # the server's idle wait starts once it has answered, after this
            sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY)
            response = http.client.HTTPResponse(sock)
            response.begin()
            assert response.status == 200 and not response.will_close
            response.read()
        closed, received = wait_closed(sock, idle_from + 15)
    assert closed is not None and received == b""
    assert IDLE_TIMEOUT_S <= closed - idle_from < IDLE_TIMEOUT_S + 5

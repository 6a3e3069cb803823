"""The local HTTP JSON endpoint (stdlib ``http.server``), bound to 127.0.0.1 unless configured otherwise.

    POST /v1/predict   {"record": {...}} or {"records": [{...}, ...]}
    POST /v1/feedback  {"prediction_id": "...", "label": ...} or {"prediction_id": "...", "value": ...}
    GET  /v1/health    {"status": "ok"|"no_model", "state": ..., "model": ..., "version": ...}
    GET  /v1/model     the serving model's name, version, task, inputs and classes

Every user mistake is a 4xx with ``{"error": "<one line naming the field>"}``; an unexpected failure is logged
and answered 500 without details, and the server keeps serving either way.
"""

import json
import logging
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from .errors import AgentError, FeedbackError, InputError, ModelError, NoModelError
from .protocol import ProtocolError, parse_json

if TYPE_CHECKING:
    from .agent import Agent

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20
MAX_BATCH = 10_000


class _ApiError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        self.status = status
        super().__init__(message)


class _Handler(BaseHTTPRequestHandler):
    server_version = "edgeops-agent"
    protocol_version = "HTTP/1.1"
    timeout = 30  # a client that sends less than its Content-Length must not hold a thread forever
    agent: "Agent"  # set on the subclass made per server

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in two writes; with Nagle on, a kept-alive client's delayed ACK then stalls
        # every response by ~40 ms. Small JSON answers should go out at once.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http: " + format, *args)

    def do_GET(self) -> None:
        self._dispatch({"/v1/health": self._health, "/v1/model": self._model})

    def do_POST(self) -> None:
        self._dispatch({"/v1/predict": self._predict, "/v1/feedback": self._feedback})

    def _dispatch(self, routes: dict[str, Any]) -> None:
        path = self.path.split("?", 1)[0]
        try:
            route = routes.get(path)
            if route is None:
                known = path in ("/v1/health", "/v1/model", "/v1/predict", "/v1/feedback")
                raise _ApiError(HTTPStatus.METHOD_NOT_ALLOWED if known else HTTPStatus.NOT_FOUND,
                                f"{self.command} {path} is not an endpoint")
            status, body = route()
        except _ApiError as exc:
            status, body = exc.status, {"error": str(exc)}
        except (InputError, FeedbackError) as exc:
            status, body = HTTPStatus.UNPROCESSABLE_ENTITY, {"error": str(exc)}
        except NoModelError as exc:
            status, body = HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(exc)}
        except ModelError as exc:
            status, body = HTTPStatus.INTERNAL_SERVER_ERROR, {"error": str(exc)}
        except Exception:
            log.exception("http: unexpected error on %s %s", self.command, path)
            status, body = HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error (see the agent log)"}
        self._send(status, body)

    def _send(self, status: HTTPStatus, body: dict[str, Any]) -> None:
        try:
            data = json.dumps(body, allow_nan=False, default=str).encode()
        except ValueError:  # a NaN/Infinity output is not JSON: say so rather than send invalid JSON
            status, data = HTTPStatus.INTERNAL_SERVER_ERROR, b'{"error": "the model produced a non-finite number"}'

        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        length_text = self.headers.get("Content-Length")
        if length_text is None or not length_text.isdigit():
            self.close_connection = True
            raise _ApiError(HTTPStatus.LENGTH_REQUIRED, "Content-Length: a JSON body with a length is required")
        length = int(length_text)
        if length > MAX_BODY_BYTES:
            self.close_connection = True  # do not read (or leave unread) a huge body on a kept-alive socket
            raise _ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                            f"body: {length} bytes exceeds the limit of {MAX_BODY_BYTES}")
        try:
            body = self.rfile.read(length)
        except OSError as exc:  # includes the socket timeout
            self.close_connection = True
            raise _ApiError(HTTPStatus.REQUEST_TIMEOUT, f"body: not received ({exc})") from exc
        try:
            return parse_json(body, limit=MAX_BODY_BYTES)
        except ProtocolError as exc:
            raise _ApiError(HTTPStatus.BAD_REQUEST, f"body: {exc}") from exc

    # endpoints ------------------------------------------------------------------------------------
    def _predict(self) -> tuple[HTTPStatus, dict[str, Any]]:
        body = self._body()
        if ("record" in body) == ("records" in body):
            raise _ApiError(HTTPStatus.BAD_REQUEST, "body: give exactly one of 'record' or 'records'")
        if "record" in body:
            if not isinstance(body["record"], dict):
                raise _ApiError(HTTPStatus.BAD_REQUEST, "record: must be an object of column values")
            return HTTPStatus.OK, {"prediction": self.agent.predict(body["record"]).to_json()}
        records = body["records"]
        if not isinstance(records, list):
            raise _ApiError(HTTPStatus.BAD_REQUEST, "records: must be a list of objects")
        if len(records) > MAX_BATCH:
            raise _ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"records: at most {MAX_BATCH} per request")
        return HTTPStatus.OK, {"predictions": [p.to_json() for p in self.agent.predict_many(records)]}

    def _feedback(self) -> tuple[HTTPStatus, dict[str, Any]]:
        body = self._body()
        prediction_id = body.get("prediction_id")
        if not isinstance(prediction_id, str):
            raise _ApiError(HTTPStatus.BAD_REQUEST, "prediction_id: a string is required")
        if ("label" in body) == ("value" in body):
            raise _ApiError(HTTPStatus.BAD_REQUEST, "body: give exactly one of 'label' or 'value'")
        self.agent.feedback(prediction_id, body["label"] if "label" in body else body["value"])
        return HTTPStatus.OK, {"ok": True}

    def _health(self) -> tuple[HTTPStatus, dict[str, Any]]:
        agent = self.agent
        current = agent.current
        state = agent.state
        return HTTPStatus.OK, {"status": "ok" if current else "no_model", "state": state.phase,
                               "model": current and current[0], "version": current and current[1],
                               "last_error": state.last_error, "connected": agent.link.connected}

    def _model(self) -> tuple[HTTPStatus, dict[str, Any]]:
        manifest = self.agent.manifest
        if manifest is None:
            raise NoModelError("no model is installed yet")
        return HTTPStatus.OK, {
            "name": manifest.name, "version": manifest.version, "task": manifest.outputs.task,
            "created": manifest.created, "sha256": manifest.artifact.sha256,
            "inputs": [spec.to_json() for spec in manifest.inputs],
            "classes": None if manifest.outputs.classes is None else list(manifest.outputs.classes),
            "metrics": manifest.metrics,
        }


class HttpApi:
    """A ThreadingHTTPServer in a daemon thread; ``address`` is the bound (host, port) (port 0 = any)."""

    def __init__(self, agent: "Agent", host: str = "127.0.0.1", port: int = 8765) -> None:
        handler = type("AgentHandler", (_Handler,), {"agent": agent})
        try:
            self.server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise AgentError(f"http: cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, name="agent-http", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

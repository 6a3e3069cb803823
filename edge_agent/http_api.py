"""The local HTTP JSON endpoint, bound to 127.0.0.1 unless configured otherwise.

    POST /v1/predict   {"record": {...}} or {"records": [{...}, ...]}; the answer names the model that gave it,
                       {"prediction": {...}, "model": "churn@3"} (or "predictions": [...])
    POST /v1/feedback  {"prediction_id": "...", "label": ...} or {"prediction_id": "...", "value": ...}
    GET  /v1/health    {"status": "ok"|"no_model", "state": ..., "model": ..., "version": ...}
    GET  /v1/model     the serving model's name, version, task, inputs and classes

Every caller mistake is a 4xx with ``{"error": "<one line naming the field>"}`` and counts as an ``input``
error, never against the model; only a failure of the model itself is a 500 that counts as ``model``. An
unexpected failure is logged and answered 500 without details. The server keeps serving either way.
Deadlines, backlog and JSON for the stdlib's own refusals live in http_server.py.
"""

import json
import logging
import sys
import threading
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from .errors import AgentError, FeedbackError, InputError, ModelError, NoModelError
from .http_server import JsonHandler, JsonServer
from .inference import PredictionBatch
from .ports import ServingPort

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20
"""Largest request body (1 MiB); a batch must also fit in it."""
MAX_BATCH = 10_000
"""Most records in one batch. Both limits apply: a full batch fits in MAX_BODY_BYTES only while its records
average under ~104 bytes of JSON; wider records reach the byte limit first."""
_MAX_LENGTH_DIGITS = 16  # a Content-Length with more significant digits is over any limit


class _ApiError(Exception):
    def __init__(self, status: HTTPStatus, message: str, *, close: bool = False) -> None:
        self.status = status
        self.close = close
        super().__init__(message)


def _not_json(name: str) -> None:
    raise ValueError(f"{name} is not allowed")


def _integer(text: str) -> int | float:
    """An integer beyond int()'s digit limit becomes a float (infinity) instead of failing the whole body, so
    the field that holds it is named by its own check ("income: must be a finite number ...")."""
    return int(text) if len(text) <= sys.get_int_max_str_digits() else float(text)


# A number too large for a float (1e400) is valid JSON: it decodes to infinity and the field's check refuses
# it by name. NaN and Infinity literals are not JSON at all: refused here. Decoders are shared (no state). The
# first parses integers in C; only a body it refuses is parsed again by the second, whose Python hook turns an
# integer beyond int()'s digit limit into a float.
_FAST_DECODER = json.JSONDecoder(parse_constant=_not_json)
_DECODER = json.JSONDecoder(parse_constant=_not_json, parse_float=float, parse_int=_integer)


def parse_body(data: bytes) -> dict[str, Any]:
    """A request body as a JSON object; every problem is a 400 ``_ApiError`` naming ``body``."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _ApiError(HTTPStatus.BAD_REQUEST, f"body: not UTF-8 (byte {exc.start})") from exc
    try:
        obj = _FAST_DECODER.decode(text)
    except (ValueError, RecursionError):
        try:
            obj = _DECODER.decode(text)
        except (ValueError, RecursionError) as exc:
            raise _ApiError(HTTPStatus.BAD_REQUEST, f"body: malformed JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise _ApiError(HTTPStatus.BAD_REQUEST, "body: must be a JSON object")
    return obj


class _Handler(JsonHandler):
    server_version = "edgeops-agent"
    agent: ServingPort  # set on the subclass made per server
    routes: dict[str, dict[str, Callable[["_Handler"], tuple[HTTPStatus, dict[str, Any] | bytes]]]]  # set below

    def route(self) -> None:
        path = self.path.split("?", 1)[0]
        headers: dict[str, str] = {}
        try:
            methods = self.routes.get(path)
            if methods is None:
                raise _ApiError(HTTPStatus.NOT_FOUND, f"{path[:200]} is not an endpoint")
            endpoint = methods.get("GET" if self.command == "HEAD" else self.command)
            if endpoint is None:
                allowed = sorted(methods) + (["HEAD"] if "GET" in methods else [])
                headers["Allow"] = ", ".join(allowed)
                raise _ApiError(HTTPStatus.METHOD_NOT_ALLOWED,
                                f"{self.command[:20]} {path}: not allowed; use {' or '.join(allowed)}")
            status, body = endpoint(self)
        except _ApiError as exc:
            if exc.close:
                self.close_connection = True
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
        self.send_json(status, body, headers)

    def _body(self) -> dict[str, Any]:
        """Read and parse the body: its Content-Length must be one plain decimal number of bytes within the
        limit (RFC 9112 §6.3: anything else makes the framing unknowable, so the connection closes)."""
        if "Transfer-Encoding" in self.headers:
            raise _ApiError(HTTPStatus.LENGTH_REQUIRED, "Transfer-Encoding: not supported; send a Content-Length",
                            close=True)
        values = self.headers.get_all("Content-Length") or []
        if not values:
            raise _ApiError(HTTPStatus.LENGTH_REQUIRED, "Content-Length: a JSON body with a length is required",
                            close=True)
        text = values[0].strip()
        if not (text.isascii() and text.isdigit()) or any(v.strip() != text for v in values):
            raise _ApiError(HTTPStatus.BAD_REQUEST, "Content-Length: must be one decimal number of bytes, got "
                            + ascii(", ".join(values))[1:-1][:60], close=True)
        digits = text.lstrip("0") or "0"
        if len(digits) > _MAX_LENGTH_DIGITS:  # int() would refuse thousands of digits; no need to try
            raise _ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body: a Content-Length of {len(digits)} digits "
                            f"exceeds the limit of {MAX_BODY_BYTES} bytes", close=True)
        length = int(digits)
        if length > MAX_BODY_BYTES:  # do not read (or leave unread) a huge body on a kept-alive socket
            raise _ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                            f"body: {length} bytes exceeds the limit of {MAX_BODY_BYTES}", close=True)
        try:
            body = self.rfile.read(length)
        except OSError as exc:  # includes the request deadline
            raise _ApiError(HTTPStatus.REQUEST_TIMEOUT, f"body: not received ({exc})", close=True) from exc
        if len(body) < length:
            raise _ApiError(HTTPStatus.BAD_REQUEST, f"body: {len(body)} of {length} bytes before the connection "
                            "closed", close=True)
        self.body_read = True
        return parse_body(body)

    # endpoints ------------------------------------------------------------------------------------
    def _predict(self) -> tuple[HTTPStatus, dict[str, Any] | bytes]:
        body = self._body()
        if ("record" in body) == ("records" in body):
            raise _ApiError(HTTPStatus.BAD_REQUEST, "body: give exactly one of 'record' or 'records'")
        if "record" in body:
            if not isinstance(body["record"], dict):
                raise _ApiError(HTTPStatus.BAD_REQUEST, "record: must be an object of column values")
            serving = self.agent.current
            return HTTPStatus.OK, {"prediction": self.agent.predict(body["record"]).to_json(),
                                   "model": _answered_by(serving, self.agent.current)}
        records = body["records"]
        if not isinstance(records, list):
            raise _ApiError(HTTPStatus.BAD_REQUEST, "records: must be a list of objects")
        if len(records) > MAX_BATCH:
            raise _ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                            f"records: {len(records)} exceeds the limit of {MAX_BATCH} records per request")
        serving = self.agent.current
        predictions = self.agent.predict_many(records)
        model = _answered_by(serving, self.agent.current)
        text = predictions.json_text() if isinstance(predictions, PredictionBatch) else None
        if text is not None:  # the batch's answer from one template (predictions.py), as json.dumps writes it
            return HTTPStatus.OK, f'{{"predictions": {text}, "model": {json.dumps(model)}}}'.encode()
        return HTTPStatus.OK, {"predictions": [p.to_json() for p in predictions], "model": model}

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
                               "last_error": state.last_error, "connected": agent.connected}

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


def _answered_by(before: tuple[str, int] | None, after: tuple[str, int] | None) -> str | None:
    """``model@version`` that answered: the model serving just before ``predict`` took it. A swap landing in
    those few bytecodes would be misnamed; one during the inference (far likelier) is not. ``after`` only
    stands in when no model served before (then ``predict`` refused, unless one arrived in between)."""
    serving = before or after
    return None if serving is None else f"{serving[0]}@{serving[1]}"


_Handler.routes = {
    "/v1/predict": {"POST": _Handler._predict}, "/v1/feedback": {"POST": _Handler._feedback},
    "/v1/health": {"GET": _Handler._health}, "/v1/model": {"GET": _Handler._model},
}


class HttpApi:
    """The server in a daemon thread; ``address`` is the bound (host, port) (port 0 = any). Backlog and
    timeouts come from the agent's config (``http_backlog``, ``http_request_timeout_s``,
    ``http_idle_timeout_s``)."""

    def __init__(self, agent: ServingPort, host: str = "127.0.0.1", port: int = 8765) -> None:
        handler = type("AgentHandler", (_Handler,), {"agent": agent})
        config = agent.config
        try:
            self.server = JsonServer((host, port), handler, backlog=config.http_backlog,
                                     request_timeout_s=config.http_request_timeout_s,
                                     idle_timeout_s=config.http_idle_timeout_s)
        except OSError as exc:
            raise AgentError(f"http: cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
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

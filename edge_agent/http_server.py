"""The transport under the local HTTP API: stdlib ``http.server`` with the limits a long-running device needs.

The stdlib defaults do not hold up on a device that runs for months next to other local programs:

* ``listen(5)``: a burst of clients overflows the accept queue and the kernel resets connections (half of
  1,000 requests from 200 concurrent clients, measured). ``JsonServer`` listens with a real backlog.
* a socket timeout restarts at every received byte, so a client that trickles one header byte per second
  holds a thread for ever. ``DeadlineReader`` bounds every receive by what is left of one deadline per
  request, from its first byte to the end of its body; an idle kept-alive connection is closed after its
  own timeout.
* refusals the stdlib makes itself (an unknown method, a malformed request line, headers too long) are HTML;
  ``JsonHandler.send_error`` answers them as JSON like every other error.

``JsonHandler`` reads one request under those deadlines and calls ``route`` (the API subclass's); the
subclass answers with ``send_json``.
"""

import contextlib
import email.utils
import io
import json
import logging
import socket
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 30.0
"""Default time from a request's first byte to the end of its body (and to write its answer)."""
IDLE_TIMEOUT_S = 60.0
"""Default time a connection may wait, idle, for its next request before the server closes it."""
BACKLOG = 1024
"""Default listen backlog: connections the kernel queues until the server accepts them (capped by the
kernel at net.core.somaxconn)."""
MAX_REQUEST_LINE = 65536  # the stdlib's own limit, kept


_ENCODER = json.JSONEncoder(allow_nan=False, default=str)  # json.dumps with options makes one per call
_date: tuple[int, str] = (0, "")


def _http_date() -> str:
    """The Date header's text, formatted once a second (``formatdate`` costs microseconds per answer)."""
    global _date
    now = int(time.time())
    cached = _date
    if cached[0] != now:  # threads racing here both format the same second: harmless
        cached = _date = (now, email.utils.formatdate(now, usegmt=True))
    return cached[1]


class DeadlineReader(io.RawIOBase):
    """The raw side of a handler's ``rfile``: every receive waits at most until ``deadline`` (a
    ``time.monotonic`` value). A buffered reader may call this many times for one ``readline``; each call is
    bounded by what is left, so no splitting of the bytes can stretch a request past its deadline.

    Setting a socket's timeout is a system call, so the timeout is only ever lowered to what is left (never
    raised ahead of time): a receive that times out before the deadline simply waits again. A kept-alive client
    sending whole requests then costs no call beyond the receive and the send, which ``set_timeout`` spares too
    when the timeout is already the one wanted."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock
        self.deadline = time.monotonic()
        self.timeout: float | None = sock.gettimeout()  # the socket's, as last set through this reader

    def readable(self) -> bool:
        return True

    def set_timeout(self, seconds: float) -> None:
        if seconds != self.timeout:
            self._sock.settimeout(seconds)
            self.timeout = seconds

    def readinto(self, buffer: Any) -> int:
        waited = False
        while True:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("deadline passed")
            if waited or self.timeout is None or self.timeout > remaining:
                self.set_timeout(remaining)
            try:
                return self._sock.recv_into(buffer)
            except TimeoutError:
                waited = True  # the timeout was shorter than what is left: wait for the rest


class JsonServer(ThreadingHTTPServer):
    """A thread per connection, a real listen backlog, and the handler's timeouts in one place."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type["JsonHandler"], *, backlog: int = BACKLOG,
                 request_timeout_s: float = REQUEST_TIMEOUT_S, idle_timeout_s: float = IDLE_TIMEOUT_S) -> None:
        self.request_queue_size = backlog  # read by server_activate (listen) inside the base __init__
        self.request_timeout_s = request_timeout_s
        self.idle_timeout_s = idle_timeout_s
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """The stdlib prints a traceback to stderr; the agent logs it (a handler bug, never a client's)."""
        log.exception("http: unexpected error serving %s", client_address)


class JsonHandler(BaseHTTPRequestHandler):
    """Reads requests under the server's deadlines and answers in JSON; subclasses implement ``route``."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # an answer leaves in one write, but a large one spans segments: without it
    # a kept-alive client's delayed ACK could stall its last segment by ~40 ms
    server: JsonServer
    rfile: io.BufferedReader  # setup() puts a buffered reader under deadlines in the stdlib's place

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # the stdlib's reader, replaced by one under deadlines
        self._reader = DeadlineReader(self.connection)
        self.rfile = io.BufferedReader(self._reader)
        self.body_read = False

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http: " + format, *args)

    def route(self) -> None:
        """Answer the parsed request (``self.command``, ``self.path``, ``self.headers``) with ``send_json``."""
        raise NotImplementedError

    # one request ------------------------------------------------------------------------------------
    def handle_one_request(self) -> None:
        """The stdlib's loop body, with deadlines: wait (idle) for the request's first byte, then read the
        request line, headers and (in ``route``) body before ``request_timeout_s`` after that byte."""
        self.requestline, self.request_version, self.command = "", "HTTP/1.1", ""
        self.headers = None  # type: ignore[assignment]  # not the previous request's
        self.close_connection = True  # until a request line says otherwise
        self.body_read = False
        try:
            self._reader.deadline = time.monotonic() + self.server.idle_timeout_s
            if not self.rfile.peek(1):
                return  # the client closed the connection
        except OSError:  # idle too long (TimeoutError), or the client went away
            return
        self._reader.deadline = time.monotonic() + self.server.request_timeout_s
        try:
            self.raw_requestline = self.rfile.readline(MAX_REQUEST_LINE + 1)
            if len(self.raw_requestline) > MAX_REQUEST_LINE:
                self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG, "request line: too long")
                return
            if not self.parse_request():  # it has answered already
                return
        except TimeoutError:
            self.send_error(HTTPStatus.REQUEST_TIMEOUT,
                            f"request: not received within {self.server.request_timeout_s:g} s")
            return
        except OSError:
            self.close_connection = True
            return
        try:
            self.route()
            self.wfile.flush()
        except OSError:  # the client went away, or did not read its answer in time
            self.close_connection = True

    # answers ------------------------------------------------------------------------------------------
    def send_json(self, status: HTTPStatus, body: dict[str, Any] | bytes,
                  headers: dict[str, str] | None = None) -> None:
        """Answer with ``body`` (a dict, or JSON text already encoded); status line, headers and body leave in
        one write (one system call, one segment for a small answer)."""
        if isinstance(body, bytes):
            data = body
        else:
            try:
                data = _ENCODER.encode(body).encode()
            except ValueError:  # a NaN/Infinity output is not JSON: say so rather than send invalid JSON
                status = HTTPStatus.INTERNAL_SERVER_ERROR
                data = b'{"error": "the model produced a non-finite number"}'
        if not self.body_read and self._declares_body():
            self.close_connection = True  # its unread body would be taken for the next request
        # The reads may have left the socket timeout at what remained of the request's deadline; the answer gets
        # its own.
        self._reader.set_timeout(self.server.request_timeout_s)
        if log.isEnabledFor(logging.DEBUG):
            self.log_request(status.value, len(data))
        head = [f"{self.protocol_version} {status.value} {status.phrase}\r\nServer: {self.version_string()}\r\n"
                f"Date: {_http_date()}\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"]
        for name, value in (headers or {}).items():
            head.append(f"{name}: {value}\r\n")
        if self.close_connection:
            head.append("Connection: close\r\n")
        head.append("\r\n")
        message = "".join(head).encode("latin-1", "strict")
        self.wfile.write(message if self.command == "HEAD" else message + data)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The stdlib's own refusals (malformed request line, headers too long ...) in JSON, then close."""
        status = HTTPStatus(code)
        self.log_error("code %d, message %s", code, message)
        self.close_connection = True
        if self.request_version == "HTTP/0.9":  # the stdlib's value before a version is parsed: it would send
            self.request_version = "HTTP/1.1"  # the body without a status line
        with contextlib.suppress(OSError):  # the client may be gone already
            self.send_json(status, {"error": message or status.phrase})

    def _declares_body(self) -> bool:
        headers = self.headers
        if headers is None:  # before the request line parses, although typeshed says it is always set
            return False  # type: ignore[unreachable]
        return headers.get("Content-Length", "0").strip() != "0" or "Transfer-Encoding" in headers

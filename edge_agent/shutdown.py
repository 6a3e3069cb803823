"""Wait for SIGTERM/SIGINT with no lock anywhere on the signal's path.

Why not ``threading.Event`` with ``signal.signal(sig, lambda *_: event.set())`` (what ``edgeops-agent run``
did): Python runs a signal handler on the main thread between two bytecodes, wherever that thread is. Each
pass of ``event.wait(1.0)`` holds the Event's internal lock (a plain, non-reentrant ``Lock``) for a few
bytecodes; a handler that runs there calls ``event.set()``, which waits for that lock, held by its own
thread: the process hangs for good. A faulthandler dump of a hung agent showed exactly that (main thread:
``Event.wait`` → ``Condition.wait`` → handler → ``Event.set`` → ``Condition.__enter__``). It was rare (a window of
microseconds per second) but real: about 1 in 60 agents thawed from SIGSTOP and then sent SIGTERM hung, and
the e2e tests saw it as agents that did not exit within their 15 s.

Here the interpreter's C-level handler writes the signal number to a pipe (``signal.set_wakeup_fd``), the
Python-level handler does nothing, and the main thread blocks in ``os.read`` on the pipe. A signal that
arrives before ``wait`` (while the agent starts) waits in the pipe, and one the kernel hands to another thread
still wakes the main thread at once (a timed lock wait wakes only for a signal delivered to the main thread,
which cost up to a second).
"""

import os
import select
import signal
import time
from types import FrameType, TracebackType
from typing import overload

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _nothing(_signum: int, _frame: FrameType | None) -> None:
    """The Python-level handler: the wakeup pipe already carries the signal, so there is nothing to do here
    (and nothing that could block the main thread wherever it was interrupted)."""


class StopSignals:
    """Catch ``signals`` from construction until ``close``; ``wait`` returns the first one received.

    Must be created on the main thread (a Python rule for signal handlers). While it is open a repeated
    signal is ignored, so a second Ctrl-C or SIGTERM cannot cut the clean shutdown short.
    """

    def __init__(self, signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> None:
        self.signals = frozenset(int(s) for s in signals)
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)  # the C handler must never block; a full pipe drops bytes
        self._old_handlers: dict[signal.Signals, object] = {}
        try:
            self._old_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
            for signum in signals:
                self._old_handlers[signum] = signal.signal(signum, _nothing)
        except BaseException:
            self.close()
            raise

    @overload
    def wait(self, timeout: None = None) -> int: ...

    @overload
    def wait(self, timeout: float) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until one of ``signals`` arrives (or has arrived since construction) and return its number, or
        return None after ``timeout`` seconds (for a caller with periodic work). Other signals with a Python
        handler also write to the pipe; they are skipped."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self._read], [], [], left)[0]:
                    return None
            for signum in os.read(self._read, 64):
                if signum in self.signals:
                    return signum

    def close(self) -> None:
        """Restore the previous handlers and wakeup fd."""
        for signum, handler in self._old_handlers.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._old_handlers.clear()
        if hasattr(self, "_old_fd"):
            signal.set_wakeup_fd(self._old_fd)
            del self._old_fd
        for fd in (self._read, self._write):
            if fd >= 0:
                os.close(fd)
        self._read = self._write = -1

    def __enter__(self) -> "StopSignals":
        return self

    def __exit__(self, _type: type[BaseException] | None, _exc: BaseException | None,
                 _tb: TracebackType | None) -> None:
        self.close()

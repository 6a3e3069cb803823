"""No other thread of the test process may draw from the global ``random`` while Hypothesis draws: it checks
that the global state is unchanged around each draw and warns otherwise (see tests/conftest.py)."""

import asyncio
import threading
import time
import warnings
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

pytestmark = pytest.mark.integration


@pytest.fixture
def pinging_websocket() -> Iterator[None]:
    """A websockets client that pings every millisecond from a background thread, as Prefect's events
    client does every 20 s."""
    stop, up = threading.Event(), threading.Event()

    async def main() -> None:
        async def drain(ws: ServerConnection) -> None:
            async for _ in ws:
                pass

        async with serve(drain, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            async with connect(f"ws://127.0.0.1:{port}", ping_interval=0.001, ping_timeout=None):
                up.set()
                while not stop.is_set():
                    await asyncio.sleep(0.01)

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert up.wait(10)
    yield
    stop.set()
    thread.join(10)


def slow(value: int) -> int:
    """Holds the GIL for 10 ms, longer than the interpreter's switch interval, so the pinging thread runs
    while the strategy is still drawing (as it does during a large example)."""
    end = time.perf_counter() + 0.01
    while time.perf_counter() < end:
        pass
    return value


def test_a_pinging_websocket_does_not_disturb_hypothesis(pinging_websocket: None) -> None:
    @settings(max_examples=100, deadline=None)
    @given(st.integers().map(slow))
    def draws(_value: int) -> None:
        pass

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the HypothesisDeprecationWarning becomes a failure
        draws()

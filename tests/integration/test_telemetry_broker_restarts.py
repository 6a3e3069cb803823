"""Telemetry across clean broker restarts: the real agent, the real ingest, a Mosquitto with persistence on.

Mosquitto 2.0 does not restore ``$share`` subscriptions from its persistence file, so after each restart there
is a moment when the ingest's shared subscription is missing: the agent is back (it reconnects within ~0.1 s)
before the ingest has subscribed again (paho waits 1 s before it reconnects). A window published then gets
PUBACK reason 0x10 "no matching subscribers". The agent must keep it and send it again, or it is gone without a
trace (its ``dropped`` stays 0). The harness is tests/broker_restarts.py (benchmarks/broker_restarts.py prints
the same figures, for SIGKILL too).
"""

from pathlib import Path

import pytest
from broker_restarts import run_restarts

pytestmark = pytest.mark.integration
RESTARTS = 20


def test_twenty_clean_broker_restarts_lose_no_window_and_count_none_twice(tmp_path: Path) -> None:
    figures = run_restarts(tmp_path, RESTARTS)
    print(f"\n{figures}")
    assert figures.restarts == RESTARTS
    assert figures.windows_sent > 5 * RESTARTS, figures  # traffic went on throughout
    assert figures.lost == 0 and figures.duplicates == 0 and figures.dropped == 0, figures
    assert figures.counted == figures.predictions, figures  # none lost, none counted twice

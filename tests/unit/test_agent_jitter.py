"""The agent's retry and reconnect jitter must not touch the global ``random``: an agent embedded in an
application (the Python API) shares its process, and a seeded simulation there would silently change."""

import random

import pytest

from edge_agent.installer import backoff
from edge_agent.link import next_delay

pytestmark = pytest.mark.unit


def test_jitter_leaves_the_global_random_state_alone() -> None:
    random.seed(1234)
    state = random.getstate()
    delays = [next_delay(i, 0.1, 30.0) for i in range(10)] + [backoff(i) for i in range(10)]
    assert random.getstate() == state
    assert len(set(delays)) > 10  # still jittered: not the same fixed delays
    assert all(0.08 <= d <= 30.0 for d in delays[:10])

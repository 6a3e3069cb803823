"""The agent's memory of recent answers, for ground truth that arrives later."""

import pytest

from edge_agent.errors import FeedbackError
from edge_agent.feedback import FeedbackMemory

pytestmark = pytest.mark.unit


def test_single_and_batch_answers_are_found_by_their_ids() -> None:
    memory = FeedbackMemory(100)
    memory.remember("ab-1f", False, "yes")
    memory.remember_batch("ab-x3", True, [1.5, 2.5, 3.5] * 10)
    assert memory.lookup("ab-1f") == (False, "yes")
    assert memory.lookup("ab-x3.0") == (True, 1.5)
    assert memory.lookup("ab-x3.1d") == (True, 3.5)  # row 29, in hex as the ids are
    for unknown in ("ab-x3.1e", "ab-x3.-1", "ab-x3.zz", "ab-x3", "ab-x4.0", "", None, 7, "ab-x3.٣"):
        with pytest.raises(FeedbackError, match="unknown or expired"):
            memory.lookup(unknown)


def test_the_oldest_entries_go_first_once_more_predictions_than_the_capacity_are_kept() -> None:
    memory = FeedbackMemory(10)
    memory.remember_batch("k-x1", False, [0] * 6)
    memory.remember("k-1", False, 1)
    memory.remember_batch("k-x2", False, [1] * 4)
    memory.trim()  # 11 predictions: the first batch (the oldest) goes
    with pytest.raises(FeedbackError):
        memory.lookup("k-x1.0")
    assert memory.lookup("k-1") == (False, 1) and memory.lookup("k-x2.3") == (False, 1)
    memory.remember_batch("k-x3", False, [2] * 50)  # one batch bigger than the capacity is kept until the next
    memory.trim()
    assert memory.lookup("k-x3.31") == (False, 2)
    with pytest.raises(FeedbackError):
        memory.lookup("k-1")

"""What recent predictions answered, so that ground truth arriving later can be scored against it.

Single predictions are remembered one entry each; a batch is one entry (its answers as a list, found by the
row index in its ids, ``{batch key}.{i:x}``), so a batch costs one dict insert whatever its size. Entries are
added from any thread (a dict insert and a deque append are atomic); only the owner thread trims, oldest
first, once more than ``capacity`` predictions are remembered.
"""

from collections import deque
from typing import Any

from .errors import FeedbackError


class FeedbackMemory:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._singles: dict[str, tuple[bool, Any]] = {}  # prediction id → (regression?, answer)
        self._batches: dict[str, tuple[bool, list[Any]]] = {}  # batch key → (regression?, answers)
        self._added: deque[tuple[str, int]] = deque()  # (id or key, predictions) as added, not yet counted
        self._kept: deque[tuple[str, int]] = deque()  # counted, oldest first
        self._count = 0  # predictions in ``_kept``

    def remember(self, prediction_id: str, regression: bool, answer: Any) -> None:
        self._singles[prediction_id] = (regression, answer)
        self._added.append((prediction_id, 0))  # 0: a single prediction (counted as one)

    def remember_batch(self, key: str, regression: bool, answers: list[Any]) -> None:
        if not answers:
            return
        self._batches[key] = (regression, answers)
        self._added.append((key, len(answers)))

    def lookup(self, prediction_id: Any) -> tuple[bool, Any]:
        """(regression?, what the model answered) for a remembered prediction id."""
        if isinstance(prediction_id, str):
            single = self._singles.get(prediction_id)
            if single is not None:
                return single
            key, dot, index = prediction_id.rpartition(".")
            batch = self._batches.get(key) if dot else None
            if batch is not None and index.isascii() and index.isalnum():
                try:
                    return batch[0], batch[1][int(index, 16)]
                except (ValueError, IndexError):
                    pass
        raise FeedbackError(f"prediction_id: unknown or expired prediction {prediction_id!r}")

    def trim(self) -> None:
        """Owner thread: forget the oldest entries beyond ``capacity`` predictions."""
        while self._added:
            entry = self._added.popleft()
            self._kept.append(entry)
            self._count += entry[1] or 1
        while self._count > self.capacity and len(self._kept) > 1:
            key, n = self._kept.popleft()
            if n:
                self._batches.pop(key, None)
            else:
                self._singles.pop(key, None)
            self._count -= n or 1

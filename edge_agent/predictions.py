"""What the model answered, as the caller receives it: ``Prediction`` (one row) and ``PredictionBatch`` (many).

An id names the release, the telemetry window and the row (protocol/feedback.py); it is made of a head shared by
the window and the row's number, and its text is formatted only when someone reads it. A batch keeps the arrays
onnxruntime returned and makes a ``Prediction`` only for the rows someone reads; its JSON answer is written from
one template per batch (``json_text``), the same text ``json.dumps`` gives for ``to_json()``.
"""

import json
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np


class Prediction:
    """One answer. Classifiers set ``label`` and ``probabilities`` (class → p in manifest order); regressors set
    ``value``. ``id`` names the prediction for later feedback: the agent names the release and telemetry window
    (protocol/feedback.py); a bare ``ModelRunner`` gives a local one. The id is stored as its two parts
    (``id_head``, ``id_row``) and formatted on first read, so an answer nobody labels never pays for the text."""

    __slots__ = ("_id", "id_head", "id_row", "label", "probabilities", "scores", "value")

    def __init__(self, id: str | None = None, label: Any = None, probabilities: dict[Any, float] | None = None,
                 value: float | None = None, id_head: str = "", id_row: int = 0,
                 scores: list[float] | None = None) -> None:
        self._id = id
        self.scores = scores  # the probabilities as the model gave them, in class order (telemetry counts them)
        self.id_head = id_head
        self.id_row = id_row
        self.label = label
        self.probabilities = probabilities
        self.value = value

    @property
    def id(self) -> str:
        if self._id is None:
            self._id = f"{self.id_head}{self.id_row:x}"
        return self._id

    @id.setter
    def id(self, text: str) -> None:
        self._id = text

    def name(self, head: str, row: int) -> None:
        """Give the prediction the id ``{head}{row:x}`` (formatted when read)."""
        self.id_head, self.id_row, self._id = head, row, None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Prediction):
            return NotImplemented
        return (self.id, self.label, self.probabilities, self.value) == \
            (other.id, other.label, other.probabilities, other.value)

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it replaces

    def __repr__(self) -> str:
        return (f"Prediction(id={self.id!r}, label={self.label!r}, probabilities={self.probabilities!r}, "
                f"value={self.value!r})")

    def to_json(self) -> dict[str, Any]:
        if self.value is not None:
            return {"id": self.id, "value": self.value}
        return {"id": self.id, "label": self.label,
                "probabilities": {str(k): v for k, v in (self.probabilities or {}).items()}}


class PredictionBatch(Sequence[Prediction]):
    """A batch's answers as onnxruntime gave them: ids, ``Prediction`` objects and probability dicts are made
    only for the rows someone reads (one bookkeeping step per batch, not per row).

    Ids are ``{key}{base + i:x}``: the agent sets ``key`` and ``base`` to its telemetry window's id head and the
    batch's first row in it (protocol/feedback.py), so every row has an id without an entry per row.
    What telemetry counts: ``numeric``, the numeric inputs as the model was fed them (one float64 matrix, rows ×
    columns, NaN for missing, with the columns' names), and ``columns``, every other input column's values as
    given (all of them when a batch took the per-value path)."""

    __slots__ = ("_classes", "_json_classes", "_probabilities", "answers", "base", "columns", "key", "matrix",
                 "numeric", "regression", "values")

    def __init__(self, key: str, answers: list[Any], probabilities: list[list[float]] | None,
                 classes: tuple[Any, ...], json_classes: tuple[str, ...], matrix: np.ndarray | None = None,
                 values: np.ndarray | None = None) -> None:
        self.key = key
        self.base = 0
        self.answers = answers  # labels (classifier) or values (regressor), one per row
        self.columns: dict[str, Any] = {}
        self.numeric: tuple[np.ndarray, tuple[str, ...]] | None = None
        self._probabilities = probabilities
        self.matrix = matrix  # the probabilities as onnxruntime gave them (rows × classes), for telemetry
        self.values = values  # a regressor's values as float64 (their finiteness is checked once, for JSON)
        self.regression = probabilities is None and matrix is None
        self._classes = classes
        self._json_classes = json_classes

    def __len__(self) -> int:
        return len(self.answers)

    @property
    def probabilities(self) -> list[list[float]] | None:
        """Each row's probabilities (a classifier's), as Python floats: made from ``matrix`` when first read."""
        if self._probabilities is None and self.matrix is not None:
            self._probabilities = self.matrix.tolist()
        return self._probabilities

    def id(self, index: int) -> str:
        return f"{self.key}{self.base + index:x}"

    def _at(self, i: int) -> Prediction:
        if self.regression:
            return Prediction(self.id(i), value=self.answers[i])
        rows = self.probabilities
        assert rows is not None  # a classifier's batch
        return Prediction(self.id(i), label=self.answers[i],
                          probabilities=dict(zip(self._classes, rows[i], strict=False)))

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self._at(i) for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("prediction index out of range")
        return self._at(index)

    def __iter__(self) -> Iterator[Prediction]:
        return (self._at(i) for i in range(len(self)))

    def to_json(self) -> list[dict[str, Any]]:
        """What ``[p.to_json() for p in batch]`` gives, without the objects in between."""
        key = self.key
        if self.regression:
            return [{"id": f"{key}{i:x}", "value": v} for i, v in enumerate(self.answers, self.base)]
        names = self._json_classes
        return [{"id": f"{key}{i:x}", "label": label, "probabilities": dict(zip(names, row, strict=False))}
                for i, (label, row) in enumerate(zip(self.answers, self.probabilities or (), strict=True), self.base)]

    def json_text(self) -> str | None:
        """``json.dumps(self.to_json())``, written from one template per batch: each row is one ``%`` format (a
        float's text is its ``repr``, as json's). None when a number is not finite: JSON has no text for it, and
        the caller's ``json.dumps`` refuses it."""
        if not len(self):
            return "[]"
        head = json.dumps(self.key)[:-1].replace("%", "%%")   # the opening quote and the escaped key
        if self.regression:
            if self.values is None or not np.isfinite(self.values).all():
                return None
            template = '{"id": ' + head + '%x", "value": %r}'
            return "[" + ", ".join([template % row for row in enumerate(self.answers, self.base)]) + "]"
        if self.matrix is None or not np.isfinite(self.matrix).all():
            return None
        cells = ", ".join(json.dumps(name).replace("%", "%%") + ": %r" for name in self._json_classes)
        template = '{"id": ' + head + '%x", "label": %s, "probabilities": {' + cells + "}}"
        try:
            labels = {label: json.dumps(label, allow_nan=False) for label in set(self.answers)}
        except (TypeError, ValueError):
            return None
        rows = zip(self.answers, self.probabilities or (), strict=True)
        return "[" + ", ".join([template % (i, labels[label], *row)
                                for i, (label, row) in enumerate(rows, self.base)]) + "]"

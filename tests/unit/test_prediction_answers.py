"""What a caller receives: a batch's JSON answer written from one template is the text json.dumps gives, and an
id is the same whether it is formatted at once or when first read."""

import json
import math

import numpy as np
import pytest

from edge_agent.predictions import Prediction, PredictionBatch

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("classes", [(0, 1), ("no", 'ye"s %r'), (False, True), (0, 1, 2)])
def test_a_classifier_batch_answers_the_text_json_dumps_gives(classes: tuple) -> None:  # type: ignore[type-arg]
    rng = np.random.default_rng(1)
    matrix = rng.random((57, len(classes))).astype(np.float32)
    matrix[3] = [1e-45] + [0.0] * (len(classes) - 1)   # a subnormal float32, and exact zeros
    answers = [classes[i % len(classes)] for i in range(57)]
    batch = PredictionBatch("churn@3:19a4c2f01b3:", answers, None, classes, tuple(str(c) for c in classes), matrix)
    batch.base = 250
    assert batch.json_text() == json.dumps(batch.to_json(), allow_nan=False)
    assert json.loads(batch.json_text())[1]["id"] == "churn@3:19a4c2f01b3:fb"  # type: ignore[arg-type]


def test_a_regressor_batch_answers_the_text_json_dumps_gives() -> None:
    values = np.array([0.1, -2.5e-300, 1e16, 3.0, 123456.789], dtype=np.float64)
    batch = PredictionBatch("load@1:1:", values.tolist(), None, (), (), values=values)
    assert batch.json_text() == json.dumps(batch.to_json(), allow_nan=False)


def test_a_non_finite_answer_has_no_template_text() -> None:
    values = np.array([1.0, math.inf])
    assert PredictionBatch("load@1:1:", values.tolist(), None, (), (), values=values).json_text() is None
    matrix = np.array([[0.5, math.nan]])
    assert PredictionBatch("c@1:1:", [0], None, (0, 1), ("0", "1"), matrix).json_text() is None
    assert PredictionBatch("c@1:1:", [], None, (0, 1), ("0", "1"), matrix[:0]).json_text() == "[]"


def test_an_id_is_formatted_when_read_and_can_be_renamed() -> None:
    p = Prediction(None, 1, {0: 0.2, 1: 0.8}, None, "ab-", 31)
    assert p.id == "ab-1f"
    p.name("churn@3:19a4c2f01b3:", 10)
    assert p.id == "churn@3:19a4c2f01b3:a" and p.to_json()["id"] == p.id
    assert p == Prediction("churn@3:19a4c2f01b3:a", 1, {0: 0.2, 1: 0.8})
    p.id = "x"
    assert p.id == "x" and "id='x'" in repr(p)

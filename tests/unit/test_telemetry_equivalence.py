"""The batch path and the single-row path count the same telemetry, bit for bit, on the same inputs: a real ONNX
classifier (ModelRunner) answers, the recorder counts; tricky values included (missing, NaN, out of range,
unseen categories, integers of any size, values that are no number at all)."""

import math
from typing import Any

import numpy as np
import pytest
from releases import build_release, new_key
from tricky_rows import tricky_rows

from edge_agent.feedback import FeedbackMemory
from edge_agent.inference import ModelRunner
from edge_agent.protocol import CategoricalBins, CountAccumulator, NumericBins, TelemetryWindow
from edge_agent.telemetry import TelemetryRecorder, add_values

pytestmark = pytest.mark.unit

T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def key():  # type: ignore[no-untyped-def]
    return new_key()


@pytest.fixture(scope="module")
def release(key):  # type: ignore[no-untyped-def]
    return build_release("churn", 2, key, calibrated=True)


def windows(release: Any, rows: list[dict[str, Any]], sizes: list[int]) -> tuple[TelemetryWindow, TelemetryWindow,
                                                                                 list[str], list[str]]:
    """The same rows through ``Agent.predict``'s path (one by one) and ``predict_many``'s (batches of
    ``sizes``, a compaction between two of them), each into a recorder with a feedback memory."""
    runner = ModelRunner(release.manifest, release.data)
    clock = Clock()
    single = TelemetryRecorder(release.manifest, "d1", 60, 100_000, clock, FeedbackMemory(100_000))
    batched = TelemetryRecorder(release.manifest, "d1", 60, 100_000, clock, FeedbackMemory(100_000))
    single_ids = []
    for row in rows:
        prediction = runner.predict(row)
        single.record_prediction(row, prediction, 1.0)
        single_ids.append(prediction.id)
    batch_ids, start = [], 0
    for i, size in enumerate(sizes):
        chunk = rows[start:start + size]
        batch = runner.predict_many(chunk)
        key, base = batched.record_many(chunk, batch.answers, 1.0, batch.columns, batch.matrix,  # type: ignore
                                        batch.numeric)  # type: ignore[union-attr]  # as Agent.predict_many passes them
        batch.key, batch.base = key, base  # type: ignore[union-attr]
        batch_ids.extend(p.id for p in batch)
        start += size
        if i == 1:
            batched.compact()
    a, b = single.close_window(0), batched.close_window(0)
    assert a is not None and b is not None
    return a, b, single_ids, batch_ids


def test_a_batch_counts_what_its_rows_count_one_by_one_bit_for_bit(release) -> None:  # type: ignore[no-untyped-def]
    rows = tricky_rows(release.manifest, 700, seed=3)
    a, b, single_ids, batch_ids = windows(release, rows, [1, 99, 100, 250, 250])
    assert a.count == b.count == 700 and a.errors == b.errors == {}
    assert a.features == b.features and a.predictions == b.predictions and a.scores == b.scores
    assert a.to_json()["features"] == b.to_json()["features"]
    assert a.to_json()["predictions"] == b.to_json()["predictions"]
    assert a.to_json()["scores"] == b.to_json()["scores"]
    age = a.features["age in years"]
    assert age.missing and age.underflow and age.overflow and a.features["plan"].unseen  # the inputs were tricky
    assert single_ids == batch_ids  # the same window, the same rows: the same ids


def test_missing_values_keep_the_batch_on_its_fast_path(release) -> None:  # type: ignore[no-untyped-def]
    runner = ModelRunner(release.manifest, release.data)
    rows = [{"age in years": None, "income": 1.5, "plan": "pro"}, {"age in years": math.nan, "income": 2, "plan": None}]
    assert runner._numeric_matrix(rows) is not None
    batch = runner.predict_many(rows)
    assert batch.numeric is not None and np.isnan(batch.numeric[0][:, 0]).all()  # type: ignore[union-attr]
    assert [p.label for p in batch] == [runner.predict(r).label for r in rows]


@pytest.mark.parametrize("value", [10**400, -(10**400), 10**30, True, "2.5", "x", math.inf, -math.inf, math.nan],
                         ids=["huge", "-huge", "1e30", "True", "'2.5'", "'x'", "inf", "-inf", "nan"])
def test_odd_values_given_to_the_recorder_count_alike_one_by_one_and_in_a_batch(release, value) -> None:  # type: ignore[no-untyped-def]
    """The recorder's public API takes any value: one the model would refuse (an integer beyond float64 included)
    counts as the protocol's rule says, the same way on both paths, and never breaks the window."""
    rows = [{"age in years": value, "income": value, "plan": value}, {"age in years": 40.0, "income": 1.0,
                                                                      "plan": "pro"}]
    single = TelemetryRecorder(release.manifest, "d1", 60, 1000, Clock())
    batched = TelemetryRecorder(release.manifest, "d1", 60, 1000, Clock())
    for row in rows:
        single.record(row, 1, 1.0)
    batched.record_many(rows, [1, 1], 1.0)
    single.compact()
    a, b = single.close_window(0), batched.close_window(0)
    assert a is not None and b is not None
    assert a.features == b.features and a.predictions == b.predictions
    age = a.features["age in years"]
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 1e300:
        assert (age.overflow if value > 0 else age.underflow) == 1


@pytest.mark.parametrize("value", [10**400, -(10**400), 10**308 * 10], ids=["huge", "-huge", "1e309"])
def test_an_integer_beyond_float64_is_beyond_every_edge(value: int) -> None:
    bins = NumericBins((0.0, 1.0, 2.0))
    one, many = CountAccumulator(bins), CountAccumulator(bins)
    one.add(value)
    add_values(many, [value, None])
    assert (one.freeze().overflow, one.freeze().underflow) == ((1, 0) if value > 0 else (0, 1))
    assert many.freeze().overflow == one.freeze().overflow and many.freeze().missing == 1
    texts = CountAccumulator(CategoricalBins(("1", "True")))
    add_values(texts, [1, 1.0, True, "1"])  # equal as keys, not as text
    assert texts.freeze().counts == (2, 1) and texts.freeze().unseen == 1



def test_a_release_without_feature_references_still_counts_its_predictions(release) -> None:  # type: ignore[no-untyped-def]
    import dataclasses

    manifest = dataclasses.replace(release.manifest, reference={})
    runner = ModelRunner(release.manifest, release.data)
    rows = tricky_rows(release.manifest, 20, seed=9)
    recorder = TelemetryRecorder(manifest, "d1", 60, 1000, Clock())
    recorder.record_prediction(rows[0], runner.predict(rows[0]), 1.0)
    recorder.record(rows[1], 1, 1.0)
    batch = runner.predict_many(rows[2:])
    recorder.record_many(rows[2:], batch.answers, 1.0, batch.columns, batch.matrix, batch.numeric)  # type: ignore
    window = recorder.close_window(0)
    assert window is not None and window.count == 20 and window.features == {}
    assert window.predictions is not None and window.predictions.total == 20

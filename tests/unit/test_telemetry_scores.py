"""Score counts on the device: a real ONNX classifier served by ModelRunner, its probabilities counted by the
recorder, one by one and in batches, against the protocol's rule applied value by value."""

import math
import random

import numpy as np
import pytest
from releases import COLUMNS, ONNX_NAMES, build_release, new_key, training_frame

from edge_agent.inference import ModelRunner
from edge_agent.protocol import ScoreCounts, score_bin
from edge_agent.scoring import score_cells
from edge_agent.telemetry import TelemetryRecorder

pytestmark = pytest.mark.unit


def records(seed: int, n: int) -> list[dict[str, object]]:
    frame, _, _ = training_frame(seed, n)
    out = []
    for row in frame.itertuples(index=False):
        values = {col: getattr(row, ONNX_NAMES[col]) for col in COLUMNS}
        out.append({k: (None if isinstance(v, float) and math.isnan(v) else v if isinstance(v, str) else float(v))
                    for k, v in values.items()})
    out[0]["income"] = 1e4   # far outside training: a confident corner of the probability range
    return out


def expected(probabilities: np.ndarray, bins: int) -> ScoreCounts:
    """The protocol's rule, one value at a time."""
    k = probabilities.shape[1]
    predicted = [[0] * bins for _ in range(k)]
    other = [[0] * bins for _ in range(k)]
    for row in probabilities:
        top = int(np.argmax(row))
        for c, p in enumerate(row):
            (predicted if c == top else other)[c][score_bin(float(p), bins)] += 1
    return ScoreCounts(tuple(map(tuple, predicted)), tuple(map(tuple, other)), bins)


class Clock:
    now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_served_classifier_s_window_counts_its_probabilities_as_numpy_does() -> None:
    release = build_release("churn", 2, new_key(), calibrated=True)
    runner = ModelRunner(release.manifest, release.data)
    rows = records(11, 700)
    single = TelemetryRecorder(release.manifest, "d1", interval_s=60, max_predictions=10_000, clock=Clock())
    batched = TelemetryRecorder(release.manifest, "d1", interval_s=60, max_predictions=10_000, clock=Clock())
    seen = []
    for record in rows[:300]:
        prediction = runner.predict(record)
        single.record(record, prediction, 1.0)
        seen.append(list(prediction.probabilities.values()))   # type: ignore[union-attr]
    for start in range(300, 700, 100):
        batch = runner.predict_many(rows[start:start + 100])
        batched.record_many(rows[start:start + 100], batch.answers, 1.0, batch.columns, batch.matrix)  # type: ignore[union-attr]
        seen.extend(batch.probabilities)   # type: ignore[union-attr]
        if start == 400:
            batched.compact()
    a, b = single.close_window(0), batched.close_window(0)
    assert a is not None and b is not None and a.scores is not None and b.scores is not None
    probabilities = np.asarray(seen)
    bins = release.manifest.calibration.bins   # type: ignore[union-attr]
    want_a, want_b = expected(probabilities[:300], bins), expected(probabilities[300:], bins)
    assert a.scores == want_a and b.scores == want_b
    assert a.scores.rows == 300 and b.scores.rows == 400
    assert sum(map(sum, a.scores.other)) == 300   # two classes: every row is the other class's once


def test_no_score_counts_without_a_score_calibration() -> None:
    release = build_release("churn", 2, new_key())   # a manifest like 1.0's: no calibration
    runner = ModelRunner(release.manifest, release.data)
    recorder = TelemetryRecorder(release.manifest, "d1", interval_s=60, max_predictions=10_000, clock=Clock())
    rows = records(3, 20)
    recorder.record(rows[0], runner.predict(rows[0]), 1.0)
    batch = runner.predict_many(rows)
    recorder.record_many(rows, batch.answers, 1.0, None, batch.matrix)  # type: ignore[union-attr]
    window = recorder.close_window(0)
    assert window is not None and window.scores is None and "scores" not in window.to_json()


def test_score_cells_follow_the_rule_for_many_classes_ties_and_non_finite_rows() -> None:
    rng = random.Random(5)
    rows = [[rng.random() for _ in range(4)] for _ in range(300)]
    rows += [[0.25, 0.25, 0.25, 0.25], [0.0, 1.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0], [1.0000001, -1e-9, 0.0, 0.0],
             [0.05, 0.15, 0.35, 0.45], [-0.3, 0.9, 0.2, 0.2],
             [5e17, 0.0, 0.0, 0.0], [1e300, -1e300, 0.0, 0.0]]   # far outside [0, 1]: the nearest bin, never bin 0
    probabilities = np.asarray(rows)
    for bins in (1, 10, 20):
        odd = [[math.nan, 0.5, 0.2, 0.3], [0.1, math.inf, 0.0, 0.0]]   # no cell for these rows
        cells = score_cells(np.vstack([probabilities, odd]), bins)
        want = expected(probabilities, bins)
        assert cells.reshape(4, 2, bins)[:, 0].tolist() == [list(r) for r in want.predicted]
        assert cells.reshape(4, 2, bins)[:, 1].tolist() == [list(r) for r in want.other]

"""TelemetryRecorder: windows close on time or count, hold only counts, and agree with the reference bins."""

import math
import threading
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from releases import build_release, new_key

from edge_agent.protocol import CategoricalBins, CountAccumulator, NumericBins, TelemetryWindow
from edge_agent.telemetry import TelemetryRecorder, add_values

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def binary_manifest():  # type: ignore[no-untyped-def]
    return build_release("churn", 3, new_key()).manifest


@pytest.fixture(scope="module")
def regression_manifest():  # type: ignore[no-untyped-def]
    return build_release("load", 1, new_key(), task="regression").manifest


def row(age: float | None, income: object, plan: str | None) -> dict[str, object]:
    return {"age in years": age, "income": income, "plan": plan, "not a model input": "ignored"}


def test_a_window_closes_on_time_or_on_count(binary_manifest) -> None:  # type: ignore[no-untyped-def]
    clock = Clock()
    rec = TelemetryRecorder(binary_manifest, "d1", interval_s=60, max_predictions=3, clock=clock)
    assert not rec.due()
    clock.now += 60
    assert rec.due()
    assert rec.close_window(0) is None  # nothing happened: no window, no seq used
    assert not rec.due()
    for _ in range(3):
        rec.record(row(40, 5, "pro"), SimpleNamespace(label=1), 2.0)
    assert rec.due()


def test_window_counts_match_the_reference_bins(binary_manifest) -> None:  # type: ignore[no-untyped-def]
    clock = Clock()
    rec = TelemetryRecorder(binary_manifest, "d1", interval_s=60, max_predictions=100, clock=clock)
    age_edges = binary_manifest.reference["age in years"].bins.edges
    rec.record(row(age_edges[0], 5.0, "pro"), SimpleNamespace(label=1), 1.0)
    rec.record(row(age_edges[0] - 1, 5.0, "gold"), SimpleNamespace(label=0), 2.0)  # underflow, unseen
    rec.record(row(None, "five", None), SimpleNamespace(label=0), 3.0)  # missing everywhere (bad type too)
    rec.record(row(age_edges[-1] + 1, math.nan, "max"), None, 4.0, error="input")
    rec.record(None, None, 100.0, error="model")
    rec.record_feedback(correct=True)
    rec.record_feedback(correct=False)
    clock.now += 5
    window = rec.close_window(7, dropped=2)
    assert window is not None
    assert (window.seq, window.model, window.version, window.count, window.dropped) == (7, "churn", 3, 5, 2)
    assert window.errors == {"input": 1, "model": 1}
    age = window.features["age in years"]
    assert (age.counts[0], age.underflow, age.overflow, age.missing, age.total) == (1, 1, 1, 1, 4)
    plan = window.features["plan"]
    assert (plan.counts, plan.unseen, plan.missing) == ((0, 1, 1), 1, 1)  # "max" is a plan: index 2
    assert window.features["income"].missing == 2
    assert "not a model input" not in window.features  # only reference columns, never raw rows
    assert window.predictions is not None and window.predictions.counts == (2, 1)
    assert window.latency_ms["max"] == 100.0 and window.latency_ms["p50"] == 3.0
    assert window.latency_ms["p50"] <= window.latency_ms["p95"] <= window.latency_ms["p99"] <= 100.0
    assert window.feedback == {"labelled": 2.0, "accuracy": 0.5}
    assert TelemetryWindow.parse(window.to_bytes()) == window
    assert window.end > window.start


def test_regression_feedback_is_mae(regression_manifest) -> None:  # type: ignore[no-untyped-def]
    rec = TelemetryRecorder(regression_manifest, "d1", interval_s=60, max_predictions=100)
    rec.record(row(40, 5, "pro"), SimpleNamespace(value=13.0), 1.5)
    rec.record_feedback(abs_error=1.0)
    rec.record_feedback(abs_error=-3.0)
    window = rec.close_window(0)
    assert window is not None and window.feedback == {"labelled": 2.0, "mae": 2.0}
    assert window.predictions is not None and window.predictions.total == 1


def test_latency_buffer_is_bounded_and_max_stays_exact(binary_manifest) -> None:  # type: ignore[no-untyped-def]
    rec = TelemetryRecorder(binary_manifest, "d1", interval_s=60, max_predictions=50)
    for i in range(1000):
        rec.record(None, None, float(i % 100))
    rec.record(None, None, 5000.0)
    window = rec.close_window(0)
    assert window is not None and window.count == 1001
    assert window.latency_ms["max"] == 5000.0
    assert 20 <= window.latency_ms["p50"] <= 80  # a sample of 50 from uniform 0..99


def test_record_is_thread_safe(binary_manifest) -> None:  # type: ignore[no-untyped-def]
    rec = TelemetryRecorder(binary_manifest, "d1", interval_s=60, max_predictions=10**9)
    seqs = iter(range(10**6))
    windows: list[TelemetryWindow] = []
    stop = threading.Event()

    def closer() -> None:
        while not stop.is_set():
            w = rec.close_window(next(seqs))
            if w is not None:
                windows.append(w)

    def worker() -> None:
        for _ in range(2000):
            rec.record(row(40, 5, "pro"), SimpleNamespace(label=1), 1.0)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    closing = threading.Thread(target=closer)
    closing.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    closing.join()
    last = rec.close_window(next(seqs))
    windows += [last] if last else []
    assert sum(w.count for w in windows) == 8000
    assert sum(w.features["plan"].total for w in windows) == 8000


numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10), st.none(),
                    st.sampled_from(["x", "2.5", True]), st.sampled_from([0.0, 1.0, 2.5, 4.0]))


@given(edges=st.lists(st.floats(-5, 5, allow_nan=False), min_size=1, max_size=6, unique=True),
       values=st.lists(numbers, max_size=40))
def test_bulk_numeric_binning_follows_the_protocol_rule(edges: list[float], values: list[object]) -> None:
    bins = NumericBins(tuple(sorted(edges)))
    one_by_one, bulk = CountAccumulator(bins), CountAccumulator(bins)
    for value in values:
        try:
            one_by_one.add(value)
        except (TypeError, ValueError):
            one_by_one.add(None)  # what the recorder does with a value that is not a number
    add_values(bulk, values)
    assert bulk.freeze() == one_by_one.freeze()


@given(values=st.lists(st.one_of(st.none(), st.sampled_from(["basic", "pro", "gold", 1, 1.5])), max_size=40))
def test_bulk_categorical_binning_follows_the_protocol_rule(values: list[object]) -> None:
    bins = CategoricalBins(("basic", "pro", "1"))
    one_by_one, bulk = CountAccumulator(bins), CountAccumulator(bins)
    for value in values:
        one_by_one.add(value)
    add_values(bulk, values)
    assert bulk.freeze() == one_by_one.freeze()


def test_the_caller_may_reuse_its_record_dict(binary_manifest) -> None:  # type: ignore[no-untyped-def]
    rec = TelemetryRecorder(binary_manifest, "d1", interval_s=60, max_predictions=100)
    record = row(None, 5.0, "basic")
    for plan in ("basic", "pro", "max"):
        record["plan"] = plan
        rec.record(record, SimpleNamespace(label=1), 1.0)
    window = rec.close_window(0)
    assert window is not None and window.features["plan"].counts == (1, 1, 1)


@pytest.mark.parametrize("manifest_name", ["binary_manifest", "regression_manifest"])
def test_a_batch_counts_exactly_what_its_rows_one_by_one_count(manifest_name: str,
                                                               request: pytest.FixtureRequest) -> None:
    """The batch path (one lock, columns at once) against the per-row path on the same inputs: every count of
    the window is the same, bit for bit; only latency differs by design (one sample per request)."""
    import random

    manifest = request.getfixturevalue(manifest_name)
    rng = random.Random(7)
    edges = manifest.reference["age in years"].bins.edges

    def value(kind: int) -> object:
        return [None, math.nan, edges[0] - 1, edges[-1] + 1, edges[0], rng.uniform(edges[0], edges[-1]),
                "text", 3][kind]

    records = [row(value(rng.randrange(8)), rng.choice([None, 0.5, 7, 1e9, "x"]),
                   rng.choice([None, "pro", "basic", "gold", "", "ünïcode"])) for _ in range(500)]
    regression = manifest.outputs.task == "regression"
    if regression:
        predictions = [SimpleNamespace(value=rng.choice([rng.uniform(-5, 50), 1e12, -1e12])) for _ in records]
    else:
        predictions = [SimpleNamespace(label=rng.choice([0, 1, 1.0, 0.0])) for _ in records]
    one_by_one = TelemetryRecorder(manifest, "d1", interval_s=60, max_predictions=10_000, clock=Clock())
    batched = TelemetryRecorder(manifest, "d1", interval_s=60, max_predictions=10_000, clock=Clock())
    for record, prediction in zip(records, predictions, strict=True):
        one_by_one.record(record, prediction, 1.0)
    for start in range(0, len(records), 64):  # several batches, and a compaction between two of them
        answers = [getattr(p, "value", None) if regression else p.label for p in predictions[start:start + 64]]
        chunk = records[start:start + 64]
        given = {"income": [r["income"] for r in chunk]} if start % 128 == 0 else None  # as predict_many passes
        batched.record_many(chunk, answers, 1.0, given)
        if start == 128:
            batched.compact()
    a, b = one_by_one.close_window(0), batched.close_window(0)
    assert a is not None and b is not None
    assert (a.count, a.errors, a.features, a.predictions) == (b.count, b.errors, b.features, b.predictions)
    assert a.to_json()["features"] == b.to_json()["features"]


@pytest.mark.parametrize("start", [1_800_000_000.0009996, 1_800_000_000.123])
def test_a_window_reports_the_start_its_prediction_ids_name(binary_manifest, start: float) -> None:  # type: ignore[no-untyped-def]
    """A label is credited to the window its prediction's id names (iso_ms of the id's millisecond); the window
    must report that very start, also when the clock is a hair before a millisecond (a start rounded one way and
    an id truncated the other never joined) and when a second window opens in the same millisecond."""
    from edge_agent.feedback import FeedbackMemory
    from edge_agent.protocol import iso_ms, parse_prediction_id

    clock = Clock()
    clock.now = start
    memory = FeedbackMemory(1000)
    rec = TelemetryRecorder(binary_manifest, "d1", interval_s=60, max_predictions=100, clock=clock, memory=memory)
    starts, named = [], []
    for _ in range(2):   # the second window opens in the same millisecond: its ids name the next one
        first = rec.record(row(40, 5, "pro"), SimpleNamespace(label=1), 1.0)
        assert first is not None
        window = rec.close_window(0)
        assert window is not None
        starts.append(window.start)
        named.append(iso_ms(parse_prediction_id(first).window_ms / 1000))
    assert starts == named and starts[0] != starts[1]
    assert window.end >= window.start

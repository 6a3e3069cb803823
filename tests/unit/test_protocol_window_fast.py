"""TelemetryWindow.from_json's fast path must give exactly the verdicts of the checked path.

The ingest validates every window, so a well-formed window is accepted with cheap exact-type tests
(``TelemetryWindow._plain``) and anything else goes to the checked path, which decides and names the error. These
tests mutate valid windows in many ways and compare: the same window, or the same exception with the same message.
"""

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.protocol import Counts, ProtocolError, ScoreCounts, TelemetryWindow

pytestmark = pytest.mark.unit


class Flag(int):
    """An int subclass: the checked path accepts it (isinstance), the fast path must defer."""


def checked(obj: Any) -> TelemetryWindow:
    """The checked path alone (the fast path switched off for this call)."""
    original = TelemetryWindow.__dict__["_plain"]
    TelemetryWindow._plain = classmethod(lambda cls, o: None)  # type: ignore[method-assign,assignment]
    try:
        return TelemetryWindow.from_json(obj)
    finally:
        TelemetryWindow._plain = original  # type: ignore[method-assign]


def outcome(fn: Any, obj: Any) -> tuple[str, Any]:
    try:
        result = fn(obj)
    except Exception as exc:   # compare any failure by type and message
        return type(exc).__name__, str(exc)
    return "ok", (type(result).__name__, result, result.to_json())


counts = st.builds(Counts, st.lists(st.integers(0, 50), min_size=1, max_size=4).map(tuple),
                   *[st.integers(0, 3)] * 4)
scores = st.integers(1, 3).flatmap(lambda k: st.integers(1, 4).flatmap(lambda b: st.builds(
    ScoreCounts, *[st.lists(st.lists(st.integers(0, 9), min_size=b, max_size=b).map(tuple), min_size=k,
                            max_size=k).map(tuple)] * 2, st.just(b))))
floats = st.floats(allow_nan=False, allow_infinity=False)
windows = st.builds(
    TelemetryWindow, device=st.sampled_from(["dev-1", "press.17"]), seq=st.integers(0, 2**40),
    model=st.sampled_from(["churn", "m_2"]), version=st.integers(1, 2**31 - 1), start=st.just("2026-01-01T00:00:00Z"),
    end=st.text(max_size=3), count=st.integers(-2, 10**6),
    errors=st.dictionaries(st.text(max_size=3), st.integers(-1, 9), max_size=2),
    latency_ms=st.dictionaries(st.sampled_from(["p50", "p95"]), floats, max_size=2),
    features=st.dictionaries(st.text(max_size=3), counts, max_size=3),
    predictions=st.none() | counts, feedback=st.dictionaries(st.sampled_from(["labelled", "correct"]), floats),
    dropped=st.integers(0, 5), epoch=st.sampled_from(["", "0", "9f3a", "ab" * 16]), scores=st.none() | scores,
    ts=st.text(max_size=3))

BOUNDARY: list[Any] = [None, True, False, -1, 0, 1, 2**31 - 1, 2**31, 10**400, -(10**400), 1.0, -0.5,
                        float("inf"), float("-inf"), "", "x", "dev..1", "1.0", "1.7", "2.0", "edgeops.telemetry",
                        Flag(1), [], [1, 2], {}, {"a": 1}, {"a": True}, {"a": 1.5}, {"a": None}, {"a": 10**400},
                        {"counts": [1, 2]}, {"counts": [1, 2], "missing": -1}, {"counts": [1, True]},
                        {"counts": []}, {"counts": [1, -1]}, {"counts": [1], "unseen": 1.0},
                        {"name": "edgeops.telemetry", "version": "1.3"}, {"name": "edgeops.status", "version": "1.0"},
                        "ab12", "AB12", "a" * 33, "0" * 32, "<delete>", 100, 101, [[1, 2], [0, 1]], [[1, 2]],
                        [[1, True], [0, 1]], [[1, -1], [0, 1]], [[1, 2, 3], [0, 1, 2]], [[1, 2], 3], [[]],
                        {"bins": 2, "predicted": [[1, 2]], "other": [[0, 1]]}]
TOP = ["schema", "device", "ts", "seq", "model", "version", "start", "end", "count", "errors", "latency_ms",
       "features", "predictions", "feedback", "dropped", "epoch", "scores"]
PATHS: list[tuple[str, ...]] = [(k,) for k in TOP] + [
    ("schema", "name"), ("schema", "version"), ("errors", "input"), ("errors", "new"), ("latency_ms", "p95"),
    ("latency_ms", "new"), ("feedback", "labelled"), ("feedback", "new"), ("features", "f0"), ("features", "new"),
    ("scores", "bins"), ("scores", "predicted"), ("scores", "other"),
    *[(part, key) for part in ("predictions", "features.f0") for key in ("counts", "underflow", "missing")]]
edits = st.lists(st.tuples(st.sampled_from(PATHS), st.sampled_from(BOUNDARY) | st.floats() | st.integers()),
                 max_size=3)


def sample_window() -> TelemetryWindow:
    return TelemetryWindow(device="dev-1", seq=3, model="churn", version=2, start="2026-01-01T00:00:00Z",
                           end="2026-01-01T00:01:00Z", count=10, errors={"input": 1}, latency_ms={"p95": 2.5},
                           features={"f0": Counts((1, 2), missing=1)}, predictions=Counts((4, 6)),
                           feedback={"labelled": 3.0}, epoch="5eed",
                           scores=ScoreCounts(((1, 2), (0, 3)), ((3, 0), (2, 1)), bins=2))


def mutate(obj: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    if path[0] == "features.f0":
        path = ("features", "f0", *path[1:])
    for key in path[:-1]:
        obj = obj.get(key)  # type: ignore[assignment]
        if not isinstance(obj, dict):
            return
    if value == "<delete>":
        obj.pop(path[-1], None)
    else:
        obj[path[-1]] = value


def agree(obj: dict[str, Any]) -> None:
    fast = TelemetryWindow._plain(obj)   # never raises
    expected = outcome(checked, obj)
    assert outcome(TelemetryWindow.from_json, obj) == expected
    if fast is not None:
        assert expected == outcome(lambda _o: fast, obj)


def test_every_boundary_value_in_every_field() -> None:
    fast_accepted = 0
    for path in PATHS:
        for value in BOUNDARY:
            obj = sample_window().to_json()
            mutate(obj, path, value)
            agree(obj)
            fast_accepted += TelemetryWindow._plain(obj) is not None
    assert 0 < fast_accepted < len(PATHS) * len(BOUNDARY)   # both paths were exercised


@settings(max_examples=800, deadline=None)
@given(windows, edits)
def test_fast_and_checked_paths_agree(window: TelemetryWindow, changes: list[tuple[tuple[str, ...], Any]]) -> None:
    obj = window.to_json()
    for path, value in changes:
        mutate(obj, path, value)
    agree(obj)


@settings(max_examples=200, deadline=None)
@given(windows)
def test_valid_windows_take_the_fast_path_and_round_trip(window: TelemetryWindow) -> None:
    obj = window.to_json()
    assert TelemetryWindow._plain(obj) == window == checked(obj)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("latency_ms", {"p95": 10**400}, "latency_ms[0]: must be a number"),   # was an OverflowError
    ("feedback", {"labelled": -(10**400)}, "feedback.labelled: must be a number"),
    ("seq", True, "seq: must be an integer"),
    ("dropped", 1.0, "dropped: must be an integer"),
    ("epoch", "A1", "epoch: must be up to 32 lowercase hex digits"),
    ("epoch", 7, "epoch: must be a string"),
    ("errors", {"input": Flag(1)}, None),   # accepted by the checked path (an int); the fast path defers
])
def test_edge_values(key: str, value: Any, message: str | None) -> None:
    obj = TelemetryWindow(device="d", seq=1, model="m", version=1, start="s", end="e", count=1).to_json()
    obj[key] = value
    assert TelemetryWindow._plain(obj) is None
    if message is None:
        assert TelemetryWindow.from_json(obj) == checked(obj)
    else:
        with pytest.raises(ProtocolError) as err:
            TelemetryWindow.from_json(obj)
        assert str(err.value) == message


def test_accepted_windows_do_not_alias_the_input() -> None:
    obj = TelemetryWindow(device="d", seq=1, model="m", version=1, start="s", end="e", count=1,
                          errors={"input": 1}, feedback={"labelled": 2}).to_json()
    window = TelemetryWindow.from_json(obj)
    obj["errors"]["input"] = 5
    obj["feedback"]["labelled"] = 7
    assert (window.errors, window.feedback) == ({"input": 1}, {"labelled": 2.0})

"""The agent's memory of what it answered (feedback.py) and its log on disk (feedback_log.py): ids name the
release and window, answers survive a restart within a bounded horizon, a damaged log never stops the agent."""

import logging
from pathlib import Path

import pytest

from edge_agent.errors import FeedbackError
from edge_agent.feedback import MAX_WINDOWS, FeedbackMemory, FeedbackTally
from edge_agent.feedback_log import SEGMENTS, FeedbackLog
from edge_agent.protocol import FeedbackCredit, ProtocolError, parse_prediction_id

pytestmark = pytest.mark.unit

T0 = 1_800_000_000.0   # 2027-01-15T08:00:00Z


def memory(tmp_path: Path, capacity: int = 100) -> FeedbackMemory:
    mem = FeedbackMemory(capacity, FeedbackLog(tmp_path / "feedback", capacity // 2))
    mem.load()
    return mem


def answer(mem: FeedbackMemory, window, value) -> str:  # type: ignore[no-untyped-def]
    """What the recorder does for one prediction: append, and the id is the window's head and the row."""
    window.answers.append(value)
    return f"{window.head}{len(window.answers) - 1:x}"


def test_a_prediction_id_names_the_release_the_window_and_the_row() -> None:
    ref = parse_prediction_id("churn.eu-2@17:1a3185c5000:2f")
    assert (ref.model, ref.version, ref.window_ms, ref.row) == ("churn.eu-2", 17, 0x1A3185C5000, 47)
    assert ref.window_start.isoformat() == "2027-01-15T08:00:00+00:00" and ref.id == "churn.eu-2@17:1a3185c5000:2f"
    for bad in ("5f3a9c1e-1a", "5f3a9c1e-x3.1d", "churn@0:1:1", "churn@01:1:1", "churn@3:1", "churn@3:1:1:1",
                "churn@3:1A:1", "..x@3:1:1", "churn@3:1:1\n", "churn@9999999999:1:1", "c@1:1:" + "f" * 13, "", 7,
                None, "churn@3:١:1"):
        with pytest.raises(ProtocolError, match=r"prediction_id: .* is not a prediction id"):
            parse_prediction_id(bad)


def test_answers_are_found_by_their_ids_and_unknown_ids_are_refused_with_the_reason(tmp_path: Path) -> None:
    mem = memory(tmp_path)
    window = mem.open_window("churn", 3, T0, regression=False)
    first = answer(mem, window, 1)
    window.answers.extend([0, 1, 1])   # a batch: one extend, rows 1..3
    assert first == "churn@3:1a3185c5000:0"
    assert mem.lookup(first) == (window, 1) and mem.lookup("churn@3:1a3185c5000:3")[1] == 1
    with pytest.raises(FeedbackError, match="unknown or expired prediction 'churn@3:1a3185c5000:4'"):
        mem.lookup("churn@3:1a3185c5000:4")
    with pytest.raises(FeedbackError, match="unknown or expired"):
        mem.lookup("churn@4:1a3185c5000:0")   # another version's window
    with pytest.raises(FeedbackError, match="prediction_id: 'ab-1f' is not a prediction id"):
        mem.lookup("ab-1f")


def test_two_windows_opened_in_the_same_millisecond_get_distinct_ids(tmp_path: Path) -> None:
    mem = memory(tmp_path)
    a, b = mem.open_window("churn", 3, T0, False), mem.open_window("churn", 3, T0, False)
    other = mem.open_window("churn", 4, T0, False)
    assert (a.window_ms, b.window_ms, other.window_ms) == (int(T0 * 1000), int(T0 * 1000) + 1, int(T0 * 1000))
    ids = {answer(mem, a, 0), answer(mem, b, 1), answer(mem, other, 1)}
    assert len(ids) == 3


def test_answers_survive_a_restart_and_new_windows_never_reuse_old_ids(tmp_path: Path) -> None:
    mem = memory(tmp_path)
    window = mem.open_window("churn", 3, T0, regression=False)
    ids = [answer(mem, window, label) for label in ("yes", "no", "yes")]
    mem.flush()
    ids.append(answer(mem, window, "no"))   # after a flush: the next flush writes only the new answer
    window.closed = True
    values = mem.open_window("load", 1, T0, regression=True)
    value_id = answer(mem, values, 2.5)
    mem.close()

    again = memory(tmp_path)   # a restart: the log is read back
    assert [again.lookup(i)[1] for i in ids] == ["yes", "no", "yes", "no"]
    restored, value = again.lookup(value_id)
    assert (restored.regression, value, restored.closed) == (True, 2.5, True)
    reopened = again.open_window("churn", 3, T0, regression=False)   # the clock says the same instant again
    assert reopened.window_ms != window.window_ms and again.lookup(ids[0])[1] == "yes"


def test_the_log_is_bounded_and_the_oldest_answers_expire(tmp_path: Path) -> None:
    mem = memory(tmp_path, capacity=40)   # segments of 20 answers: the log holds the last 20 to 40
    ids = []
    for i in range(30):   # 30 windows of 5 answers, each written before the next opens
        window = mem.open_window("churn", 3, T0 + i, regression=False)
        ids += [answer(mem, window, i % 2) for _ in range(5)]
        window.closed = True
        mem.flush()
    assert mem.held <= 40
    mem.lookup(ids[-1])
    with pytest.raises(FeedbackError, match="its last 40 predictions"):
        mem.lookup(ids[0])
    mem.close()
    sizes = [(tmp_path / "feedback" / name).stat().st_size for name in SEGMENTS]
    again = memory(tmp_path, capacity=40)
    assert 20 <= again.held <= 40 and max(sizes) < 1000
    again.lookup(ids[-1])
    with pytest.raises(FeedbackError):
        again.lookup(ids[0])


def test_windows_that_answered_nothing_are_not_kept_and_the_window_count_is_bounded(tmp_path: Path) -> None:
    mem = memory(tmp_path, capacity=10**9)
    for i in range(MAX_WINDOWS + 200):
        window = mem.open_window("churn", 3, T0 + i, regression=False)
        if i % 100:
            answer(mem, window, 1)
        window.closed = True
        mem.flush()
    assert len(mem._windows) == MAX_WINDOWS   # the empty ones went at once, then the oldest


def test_a_torn_or_corrupt_log_is_reported_and_the_rest_is_used(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    mem = memory(tmp_path)
    window = mem.open_window("churn", 3, T0, regression=False)
    ids = [answer(mem, window, i % 2) for i in range(4)]
    mem.flush()
    mem.close()
    path = tmp_path / "feedback" / SEGMENTS[0]
    with path.open("ab") as handle:   # garbage records, then a power cut in the middle of a line
        handle.write(b'{"m":"churn","v":3,"s":1,"r":false,"o":0,"a":[{"x":1}]}\nnot json\n{"m":"churn","v":3,"s')
    with caplog.at_level(logging.WARNING, logger="edge_agent.feedback_log"):
        again = memory(tmp_path)
    assert [again.lookup(i)[1] for i in ids] == [0, 1, 0, 1]
    text = caplog.text
    assert "a torn last line (21 bytes" in text and "2 unreadable record(s) skipped (first: line 3" in text
    assert path.read_bytes().endswith(b"\n")   # the torn tail is cut off before anything is appended
    later = again.open_window("churn", 3, T0 + 60, regression=False)
    late_id = answer(again, later, 1)
    again.close()
    assert memory(tmp_path).lookup(late_id)[1] == 1

    (tmp_path / "feedback" / SEGMENTS[1]).write_bytes(b"\x00\xffnot a log at all\n")
    path.write_bytes(b"")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edge_agent.feedback_log"):
        fresh = memory(tmp_path)   # nothing usable: starts empty, and works
    assert "no valid header, not a feedback log of this agent: ignored" in caplog.text
    assert fresh.held == 0
    fresh_id = answer(fresh, fresh.open_window("churn", 3, T0, regression=False), 0)
    fresh.close()
    assert memory(tmp_path).lookup(fresh_id)[1] == 0


def test_an_unwritable_log_is_reported_once_and_answers_are_still_kept_in_memory(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "feedback").write_text("a file where the directory should be")
    with caplog.at_level(logging.ERROR, logger="edge_agent.feedback_log"):
        mem = memory(tmp_path)
        window = mem.open_window("churn", 3, T0, regression=False)
        pid = answer(mem, window, 1)
        mem.flush()
    assert "feedback log: cannot create" in caplog.text and mem.lookup(pid)[1] == 1


def test_a_tally_credits_each_label_to_the_window_of_its_prediction(tmp_path: Path) -> None:
    mem = memory(tmp_path)
    old = mem.open_window("churn", 3, T0, regression=False)
    new = mem.open_window("churn", 4, T0 + 60, regression=False)
    values = mem.open_window("load", 1, T0 + 30, regression=True)
    tally = FeedbackTally()
    tally.add(new, True, None)
    tally.add(old, True, None)
    tally.add(old, False, None)
    tally.add(values, None, 1.5)
    tally.add(values, None, -0.5)
    tally.add(None, True, None)            # no window known: counted as arrived only
    tally.add(values, None, float("nan"))  # not a number: not counted at all
    assert tally.feedback(regression=False) == {"labelled": 6.0, "accuracy": 3 / 6}
    assert tally.feedback_for() == (
        FeedbackCredit("churn", 3, "2027-01-15T08:00:00.000Z", 2, correct=1),
        FeedbackCredit("load", 1, "2027-01-15T08:00:30.000Z", 2, abs_error_sum=2.0, abs_error_sq_sum=2.5),
        FeedbackCredit("churn", 4, "2027-01-15T08:01:00.000Z", 1, correct=1))


def test_a_window_with_credits_round_trips_and_bad_credits_are_refused_by_field() -> None:
    from edge_agent.protocol import TelemetryWindow

    credits = (FeedbackCredit("churn", 2, "2027-01-15T08:00:00.000Z", 3, correct=2),
               FeedbackCredit("load", 1, "2027-01-15T08:01:00.000Z", 2, abs_error_sum=1.5, abs_error_sq_sum=1.25))
    window = TelemetryWindow(device="d", seq=1, model="churn", version=3, start="2027-01-15T08:02:00.000Z",
                             end="2027-01-15T08:03:00.000Z", count=0, feedback={"labelled": 5.0}, feedback_for=credits)
    assert TelemetryWindow.parse(window.to_bytes()) == window
    assert "feedback_for" not in TelemetryWindow(**{**window.__dict__, "feedback_for": ()}).to_json()
    good = credits[0].to_json()
    for change, field in (({"labelled": 0}, "feedback_for[0].labelled"), ({"correct": 4}, "feedback_for[0].correct"),
                          ({"start": "2027-01-15T08:00:00"}, "feedback_for[0].start"),
                          ({"start": "x" * 41}, "feedback_for[0].start"),
                          ({"model": "../x"}, "feedback_for[0].model"), ({"version": 0}, "feedback_for[0].version"),
                          ({"correct": None}, "feedback_for[0]"),
                          ({"correct": None, "abs_error_sum": -1.0, "abs_error_sq_sum": 1.0}, "feedback_for[0]")):
        obj = window.to_json()
        obj["feedback_for"] = [{**good, **change}]
        with pytest.raises(ProtocolError) as info:
            TelemetryWindow.from_json(obj)
        assert info.value.field == field, change

"""The feedback log: what the agent answered, on disk, so that a label arriving after a restart still finds it.

Two segment files under ``data_dir/feedback/`` take turns: records are appended to the current one until it
holds ``segment_predictions`` answers, then the other is truncated and becomes current. So the log keeps the
last ``segment_predictions`` to ``2 × segment_predictions`` answers, and never grows beyond that.

Each file is JSON lines: a header ``{"edgeops.feedback": 1, "segment": n}`` (the higher ``n`` is the newer
file), then one record per window and write: ``{"m": model, "v": version, "s": window start (ms), "r":
regression?, "o": index of the first answer, "a": [answers]}``. The owner thread appends what was answered
since its last pass in one ``write`` (no fsync: a power cut loses the last fraction of a second of answers,
which only means those labels cannot be joined; a clean stop syncs). Reading back on start skips whatever it
cannot use — a torn last line, a foreign or corrupt file — logs it once, and cuts a torn tail off the file it
will append to, so the agent starts either way.
"""

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .protocol.names import is_name, is_version

log = logging.getLogger(__name__)

FORMAT = 1
SEGMENTS = ("feedback-0.jsonl", "feedback-1.jsonl")
MAX_FILE_BYTES = 1 << 30   # a segment larger than this is not one we wrote: ignored rather than read into memory
MAX_ROW = 16**12   # a row index has at most 12 hex digits in an id
_SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True, slots=True)
class AnswerRecord:
    """A run of answers of one window: ``answers[i]`` is the answer of row ``first + i``."""

    model: str
    version: int
    window_ms: int
    regression: bool
    first: int
    answers: Sequence[Any]


class FeedbackLog:
    """The two segments in ``directory`` (created when missing). Owner thread only."""

    def __init__(self, directory: Path, segment_predictions: int) -> None:
        self.directory = Path(directory)
        self.segment_predictions = max(1, segment_predictions)
        self._fd: int | None = None
        self._current = 0          # index into SEGMENTS of the file appended to
        self._segment = 0          # its header's number
        self._count = 0            # answers in it
        self._failing = False      # a write failed and was logged; logged again only after a success

    # reading ---------------------------------------------------------------------------------------
    def read(self) -> list[AnswerRecord]:
        """Every usable record, oldest segment first, and get ready to append. Problems are logged, not raised."""
        found: list[tuple[int, int, list[AnswerRecord], int]] = []   # (segment, file index, records, good bytes)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.error("feedback log: cannot create %s (%s): answers will not survive a restart", self.directory,
                      exc.strerror or exc)
            return []
        for index, name in enumerate(SEGMENTS):
            segment = self._read_segment(self.directory / name)
            if segment is not None:
                found.append((segment[0], index, segment[1], segment[2]))
        found.sort()
        if found:
            number, index, records, good = found[-1]
            self._open(index, number, truncate_to=good)
            self._count = sum(len(r.answers) for r in records)
        else:
            self._open(0, 0, truncate_to=0)
        return [record for _, _, records, _ in found for record in records]

    def _read_segment(self, path: Path) -> tuple[int, list[AnswerRecord], int] | None:
        """(header number, records, bytes up to the last complete line) of one file; None when it is absent or
        unusable (logged)."""
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                log.error("feedback log %s: larger than %d bytes, not written by this agent: ignored", path,
                          MAX_FILE_BYTES)
                return None
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.error("feedback log %s: cannot be read (%s): ignored", path, exc.strerror or exc)
            return None
        good = data.rfind(b"\n") + 1
        lines = data[:good].split(b"\n")[:-1]
        if good < len(data):
            log.warning("feedback log %s: a torn last line (%d bytes, the agent stopped mid-write) is dropped",
                        path, len(data) - good)
        number = _header(lines[0]) if lines else None
        if number is None:
            if data:
                log.error("feedback log %s: no valid header, not a feedback log of this agent: ignored", path)
            return None
        records, bad, first_bad = [], 0, ""
        for line_no, line in enumerate(lines[1:], start=2):
            try:
                records.append(_record(line))
            except (ValueError, TypeError, KeyError) as exc:
                bad += 1
                first_bad = first_bad or f"line {line_no}: {exc}"
        if bad:
            log.warning("feedback log %s: %d unreadable record(s) skipped (first: %s)", path, bad, first_bad[:200])
        return number, records, good

    # writing ---------------------------------------------------------------------------------------
    def append(self, records: Sequence[AnswerRecord]) -> None:
        """Append ``records`` in one write, switching segments first when the current one is full."""
        if not records:
            return
        if self._count >= self.segment_predictions:
            self._open(1 - self._current, self._segment + 1, truncate_to=0)
        lines = [json.dumps({"m": r.model, "v": r.version, "s": r.window_ms, "r": r.regression, "o": r.first,
                             "a": list(r.answers)}, separators=(",", ":")) for r in records]
        self._write(("\n".join(lines) + "\n").encode())
        self._count += sum(len(r.answers) for r in records)

    def sync(self) -> None:
        if self._fd is not None:
            try:
                os.fsync(self._fd)
            except OSError as exc:
                log.error("feedback log: fsync failed (%s)", exc.strerror or exc)

    def close(self) -> None:
        if self._fd is not None:
            self.sync()
            os.close(self._fd)
            self._fd = None

    def _open(self, index: int, number: int, truncate_to: int) -> None:
        """Make SEGMENTS[index] the file appended to: cut it to ``truncate_to`` bytes (0: start it afresh with a
        header numbered ``number``)."""
        if self._fd is not None:
            self.sync()   # the segment being left is complete: make it last
            os.close(self._fd)
            self._fd = None
        path = self.directory / SEGMENTS[index]
        self._current, self._segment, self._count = index, number, 0
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.ftruncate(self._fd, truncate_to)
        except OSError as exc:
            self._fail(exc)
            return
        if truncate_to == 0:
            self._write(json.dumps({"edgeops.feedback": FORMAT, "segment": number}).encode() + b"\n")

    def _write(self, data: bytes) -> None:
        if self._fd is None:
            return
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            self._fail(exc)
            return
        self._failing = False

    def _fail(self, exc: OSError) -> None:
        if not self._failing:
            log.error("feedback log in %s: cannot write (%s): the answers of now on will not survive a restart "
                      "until it can", self.directory, exc.strerror or exc)
        self._failing = True


def _header(line: bytes) -> int | None:
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    if not isinstance(obj, dict) or obj.get("edgeops.feedback") != FORMAT:
        return None
    number = obj.get("segment")
    return number if type(number) is int and number >= 0 else None


def _record(line: bytes) -> AnswerRecord:
    """One record, checked as untrusted input (a corrupt file must not put odd objects in memory)."""
    obj = json.loads(line)
    if not isinstance(obj, dict):
        raise ValueError("not an object")
    model, version, start, regression, first, answers = (obj[k] for k in ("m", "v", "s", "r", "o", "a"))
    if not is_name(model) or not is_version(version):
        raise ValueError("bad model or version")
    if type(start) is not int or start < 0 or type(regression) is not bool or type(first) is not int \
            or not 0 <= first < MAX_ROW or type(answers) is not list \
            or not all(isinstance(a, _SCALARS) for a in answers):
        raise ValueError("bad window, offset or answers")
    return AnswerRecord(model, version, start, regression, first, answers)


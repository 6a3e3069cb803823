"""Labels from a warehouse: a CSV file or a SQL table keyed by prediction id, credited to the release and the
window the id names (credits.py), for realized accuracy / MAE (realized.py).

The common case: ground truth arrives days later in a warehouse, long after a device forgot its answers. A row
holds ``prediction_id`` (as the agent answered it, e.g. ``churn@3:19a4c2f01b3:2f``), ``label`` (the truth: a
class, or a number for a regressor) and ``prediction`` (what the application received from the agent). The
control plane holds no raw predictions — devices send aggregates only, so inputs and answers never leave them —
so the row brings the prediction along; the id says which release made it and when, that release's manifest
says its task and classes.

Each row is checked on its own: a bad one is reported with its number (the CSV line, or the row's place in the
SQL result ordered by prediction id) and the reason, and the good ones are stored. Every label is one row of the
store keyed by its prediction id, so importing the same file again counts nothing twice (the first label stored
for a prediction wins).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.protocol import ProtocolError, ReleaseManifest, parse_prediction_id
from edgeops.errors import EdgeopsError, one_line
from edgeops.telemetry.store import TelemetryStore, utcnow

if TYPE_CHECKING:   # SQLAlchemy is imported only by sql_rows
    from sqlalchemy import Select

BATCH = 5000
References = Callable[[str, int], ReleaseManifest | None]


class LabelImportError(EdgeopsError):
    """The source cannot be read as a label table (missing file or columns, not CSV, no such SQL table)."""


@dataclass(frozen=True)
class LabelColumns:
    prediction_id: str = "prediction_id"
    label: str = "label"
    prediction: str = "prediction"

    @property
    def names(self) -> tuple[str, str, str]:
        return self.prediction_id, self.label, self.prediction


@dataclass(frozen=True)
class BadRow:
    row: int
    reason: str


@dataclass
class ImportReport:
    rows: int = 0              # rows read
    stored: int = 0            # labels new to the store
    duplicates: int = 0        # labels of predictions that already had one (this or an earlier import)
    bad: list[BadRow] = field(default_factory=list)
    releases: dict[str, int] = field(default_factory=dict)   # "model@version" → labels stored

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "stored": self.stored, "duplicates": self.duplicates,
                "bad": [{"row": b.row, "reason": b.reason} for b in self.bad], "releases": dict(self.releases)}


class _Bad(Exception):
    pass


def csv_rows(path: Path, columns: LabelColumns = LabelColumns()) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """(line number, row) of a CSV file with a header naming the columns (UTF-8, a BOM is fine)."""
    try:
        with Path(path).open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            try:
                _check_columns(reader.fieldnames or [], columns, str(path))
                for row in reader:
                    yield reader.line_num, row
            except (csv.Error, UnicodeDecodeError) as exc:
                raise LabelImportError(f"{path}: not readable as CSV at line {reader.line_num + 1} "
                                       f"({one_line(exc)}); the rows before it were imported") from exc
    except OSError as exc:
        raise LabelImportError(f"{path}: cannot be read ({exc.strerror or exc})") from exc


def sql_rows(url: str, table: str, columns: LabelColumns = LabelColumns()) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """(row number, row) of a SQL table (``schema.table`` works), ordered by prediction id so that row numbers
    stay the same from one run to the next; read in a stream."""
    from sqlalchemy import column, create_engine, inspect, select
    from sqlalchemy import table as table_clause
    from sqlalchemy.exc import SQLAlchemyError

    schema, _, name = table.rpartition(".")
    try:
        engine = create_engine(url)
    except (SQLAlchemyError, ValueError) as exc:
        raise LabelImportError(f"--sql: {one_line(exc)}") from exc
    try:
        with engine.connect() as conn:
            found = [c["name"] for c in inspect(conn).get_columns(name, schema=schema or None)]
            _check_columns(found, columns, table)
            query: Select[*tuple[Any, ...]] = select(*(column(c) for c in columns.names)).select_from(
                table_clause(name, schema=schema or None)).order_by(column(columns.prediction_id))
            result = conn.execution_options(stream_results=True, yield_per=BATCH).execute(query)
            for number, values in enumerate(result, start=1):
                yield number, dict(zip(columns.names, values, strict=True))
    except SQLAlchemyError as exc:
        raise LabelImportError(f"{table}: {one_line(str(exc).splitlines()[0])}") from exc
    finally:
        engine.dispose()


def _check_columns(found: Iterable[str], columns: LabelColumns, where: str) -> None:
    missing = [c for c in columns.names if c not in set(found)]
    if missing:
        raise LabelImportError(f"{where}: no column {', '.join(map(repr, missing))} (columns: "
                               f"{', '.join(map(repr, found)) or 'none'}; choose others with --id-column, "
                               "--label-column, --prediction-column)")


def import_labels(store: TelemetryStore, rows: Iterable[tuple[int, Mapping[str, Any]]], references: References,
                  columns: LabelColumns = LabelColumns()) -> ImportReport:
    """Check every row, store the good ones as label credits in batches; the report says what happened to each."""
    report = ImportReport()
    pending: list[dict[str, Any]] = []
    now = utcnow()
    for number, row in rows:
        report.rows += 1
        try:
            pending.append(credit_row(row, references, columns, now))
        except _Bad as exc:
            report.bad.append(BadRow(number, str(exc)))
        if len(pending) >= BATCH:
            _store(store, pending, report)
    _store(store, pending, report)
    return report


def _store(store: TelemetryStore, pending: list[dict[str, Any]], report: ImportReport) -> None:
    if not pending:
        return
    new = set(store.add_labels(pending))
    report.stored += len(new)
    report.duplicates += len(pending) - len(new)
    for row in pending:
        if row["key"] in new:
            new.discard(row["key"])   # a prediction id twice in one batch: its first row was stored
            release = f"{row['model']}@{row['version']}"
            report.releases[release] = report.releases.get(release, 0) + 1
    pending.clear()


def credit_row(row: Mapping[str, Any], references: References, columns: LabelColumns, now: Any) -> dict[str, Any]:
    """One row as a label credit of its prediction's release and window; ``_Bad`` names what is wrong."""
    raw_id = _text(row.get(columns.prediction_id))
    try:
        ref = parse_prediction_id(raw_id, columns.prediction_id)
    except ProtocolError as exc:
        raise _Bad(str(exc)) from None
    manifest = references(ref.model, ref.version)
    if manifest is None:
        raise _Bad(f"{columns.prediction_id}: {ref.model}@{ref.version} is not a known release (not in the registry; "
                   "pass its manifest with --manifest)")
    label, prediction = _text(row.get(columns.label)), _text(row.get(columns.prediction))
    for name, value in ((columns.label, label), (columns.prediction, prediction)):
        if not value:
            raise _Bad(f"{name}: empty")
    credit: dict[str, Any] = {"key": f"p/{ref.id}", "source": "import", "model": ref.model, "version": ref.version,
                              "device": None, "window_start": ref.window_start.replace(tzinfo=None), "labelled": 1,
                              "correct": None, "abs_error_sum": None, "abs_error_sq_sum": None, "received_at": now}
    release = f"{ref.model}@{ref.version}"
    if manifest.outputs.task == "regression":
        truth, answer = (_number(v, n, release) for v, n in ((label, columns.label),
                                                             (prediction, columns.prediction)))
        error = abs(answer - truth)
        credit.update(abs_error_sum=error, abs_error_sq_sum=error * error)
    else:
        classes = {class_text(c) for c in manifest.outputs.classes or ()}
        if class_text(prediction) not in classes:
            raise _Bad(f"{columns.prediction}: {prediction[:40]!r} is not a class of {release} "
                       f"({', '.join(sorted(classes))})")
        credit["correct"] = int(class_text(label) == class_text(prediction))
    return credit


def class_text(value: Any) -> str:
    """A class label as comparable text: numbers by value (``1``, ``1.0`` and ``"1"`` are the same class), text
    as given without surrounding spaces. A warehouse and a CSV file seldom keep a label's JSON type."""
    text = _text(value)
    try:
        number = float(text)
    except ValueError:
        return text
    if not math.isfinite(number):
        return text
    return str(int(number)) if number.is_integer() else repr(number)


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _number(text: str, name: str, release: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise _Bad(f"{name}: {text[:40]!r} is not a finite number ({release} is a regressor)")
    return value

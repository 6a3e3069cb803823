"""``edgeops labels ingest``: labels from a CSV file or a SQL table, keyed by prediction id, credited to the
release and window each id names, in a real SQLite telemetry store; bad rows reported, re-imports idempotent."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from releases import write_manifests
from typer.testing import CliRunner

from edge_agent.protocol import prediction_id_head
from edgeops.cli import build_app
from edgeops.telemetry.label_import import LabelImportError, csv_rows, import_labels, sql_rows
from edgeops.telemetry.monitor import manifest_references, run_monitor
from edgeops.telemetry.store import TelemetryStore

pytestmark = pytest.mark.integration
app = build_app()

NOW = datetime.now(UTC).replace(microsecond=0)
WINDOW_MS = int((NOW - timedelta(days=3)).timestamp() * 1000)   # the predictions were made three days ago
HEAD = prediction_id_head("churn", 3, WINDOW_MS)
VALUE_HEAD = prediction_id_head("load", 1, WINDOW_MS)


@pytest.fixture(scope="module")
def manifests(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """churn@3 (binary, classes 0 and 1, tested at 0.8) and load@1 (a regressor)."""
    return write_manifests(tmp_path_factory.mktemp("manifests"), [("churn", 3, "binary"), ("load", 1, "regression")])


GOOD = [f"{HEAD}{i:x},{1 if i < 45 else 0},1" for i in range(60)]   # 60 labels, 45 right
BAD = [
    ("5f3a9c1e-1a,1,1", "prediction_id: '5f3a9c1e-1a' is not a prediction id"),
    (f"{prediction_id_head('churn', 9, WINDOW_MS)}0,1,1", "churn@9 is not a known release"),
    (f"{HEAD}100,,1", "label: empty"),
    (f"{HEAD}101,1,yes", "prediction: 'yes' is not a class of churn@3 (0, 1)"),
    (f"{VALUE_HEAD}0,2.5,lots", "prediction: 'lots' is not a finite number (load@1 is a regressor)"),
]


def write_csv(path: Path, lines: list[str]) -> Path:
    path.write_text("prediction_id,label,prediction\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_csv_file_is_credited_to_its_releases_and_windows_bad_rows_reported_and_again_is_idempotent(
        tmp_path: Path, store: TelemetryStore, manifests: list[Path]) -> None:
    values = [f"{VALUE_HEAD}{i:x},{2.0 + i % 3},{2.0}" for i in range(4)]   # errors 0, 1, 2, 0
    lines = [*GOOD[:30], *(bad for bad, _ in BAD), *GOOD[30:], GOOD[0], *values]   # GOOD[0] twice
    source = write_csv(tmp_path / "labels.csv", lines)
    references = manifest_references(manifests)
    report = import_labels(store, csv_rows(source), references)
    assert (report.rows, report.stored, report.duplicates) == (70, 64, 1)
    assert report.releases == {"churn@3": 60, "load@1": 4}
    assert [b.row for b in report.bad] == [32, 33, 34, 35, 36]   # CSV lines: the header is line 1
    assert all(reason in bad.reason for bad, (_, reason) in zip(report.bad, BAD, strict=True))

    totals = store.label_totals(since=NOW - timedelta(days=4))
    assert (totals["churn", 3, None].labelled, totals["churn", 3, None].correct) == (60, 45)
    assert ("churn", 3, "dev-1") not in totals   # a prediction id does not name its device: fleet only
    load = totals["load", 1, None]
    assert (load.labelled, load.abs_error_sum, load.abs_error_sq_sum) == (4, 3.0, 5.0)

    again = import_labels(store, csv_rows(source), references)
    assert (again.stored, again.duplicates, len(again.bad)) == (0, 65, 5)
    assert store.label_totals(since=NOW - timedelta(days=4))["churn", 3, None].labelled == 60

    report = run_monitor(store, references, now=NOW, label_window=timedelta(days=7))
    churn = next(s for s in report.scopes if (s.model, s.device) == ("churn", None))
    assert (churn.health.labelled, churn.health.accuracy, churn.windows) == (60, 0.75, 0)
    assert churn.health.realized is not None and churn.health.realized.verdict == "ok"


def test_a_sql_table_is_read_in_the_same_way(tmp_path: Path, store: TelemetryStore, manifests: list[Path]) -> None:
    from sqlalchemy import create_engine, text

    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    warehouse = create_engine(url)
    with warehouse.begin() as conn:
        conn.execute(text("CREATE TABLE outcomes (pid TEXT, truth INTEGER, answered INTEGER, noted TEXT)"))
        conn.execute(text("INSERT INTO outcomes VALUES (:p, :t, :a, 'x')"),
                     [{"p": f"{HEAD}{i:x}", "t": 1, "a": 1 if i % 4 else 0} for i in range(20)]
                     + [{"p": "not-an-id", "t": 1, "a": 1}])
    warehouse.dispose()
    from edgeops.telemetry.label_import import LabelColumns

    columns = LabelColumns("pid", "truth", "answered")
    report = import_labels(store, sql_rows(url, "main.outcomes", columns), manifest_references(manifests), columns)
    assert (report.stored, [b.row for b in report.bad]) == (20, [21])   # ordered by id: "not-an-id" sorts last
    assert store.label_totals()["churn", 3, None].correct == 15
    with pytest.raises(LabelImportError, match=r"outcomes: no column 'prediction_id'.*columns: 'pid', 'truth'"):
        list(sql_rows(url, "outcomes"))


def test_unreadable_sources_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(LabelImportError, match=r"missing.csv: cannot be read \(No such file"):
        list(csv_rows(tmp_path / "missing.csv"))
    (tmp_path / "other.csv").write_text("id,truth\n1,2\n")
    with pytest.raises(LabelImportError, match="no column 'prediction_id', 'label', 'prediction'"):
        list(csv_rows(tmp_path / "other.csv"))
    (tmp_path / "binary.csv").write_bytes(b"prediction_id,label,prediction\n\xff\xfe,1,1\n")
    with pytest.raises(LabelImportError, match="not readable as CSV at line"):
        list(csv_rows(tmp_path / "binary.csv"))


def test_the_command_reports_bad_rows_keeps_the_good_ones_and_says_so_in_its_exit_status(
        tmp_path: Path, store: TelemetryStore, manifests: list[Path]) -> None:
    source = write_csv(tmp_path / "labels.csv", [*GOOD[:10], BAD[0][0]])
    args = ["labels", "ingest", "--csv", str(source), "--db", store.url, "--manifest", str(manifests[0])]
    runner = CliRunner()
    first = runner.invoke(app, args)
    assert first.exit_code == 1
    assert "11 rows: 10 labels stored (churn@3: 10), 0 already stored, 1 bad" in first.output
    assert "row 12: prediction_id: '5f3a9c1e-1a' is not a prediction id" in first.output
    again = runner.invoke(app, [*args, "--json"])
    assert json.loads(again.stdout) == {"rows": 11, "stored": 0, "duplicates": 10, "releases": {},
                                        "bad": [{"row": 12, "reason": first.output.split("row 12: ")[1].strip()}]}
    clean = write_csv(tmp_path / "clean.csv", GOOD[10:20])
    assert runner.invoke(app, ["labels", "ingest", "--csv", str(clean), "--db", store.url, "--manifest",
                               str(manifests[0])]).exit_code == 0
    neither = runner.invoke(app, ["labels", "ingest", "--db", store.url])
    assert neither.exit_code == 1 and "give exactly one of --csv or --sql" in neither.output

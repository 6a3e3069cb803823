"""``edgeops labels ingest``: ground truth from a warehouse (CSV file or SQL table keyed by prediction id),
credited to the release and window of each prediction in the telemetry store."""

from pathlib import Path
from typing import Annotated

import typer

from edgeops.cli.common import ConfigOption, DbOption, JsonOption, fail, load_project_config, print_json, user_errors
from edgeops.telemetry.label_import import LabelColumns, csv_rows, import_labels, sql_rows
from edgeops.telemetry.monitor import manifest_references, registry_references
from edgeops.telemetry.store import TelemetryStore

app = typer.Typer(help="Labels (ground truth) for realized accuracy / MAE.", no_args_is_help=True)

SHOWN_BAD_ROWS = 20


@app.callback()
def labels() -> None:
    """Labels (ground truth) for realized accuracy / MAE (a group, so ``labels ingest`` keeps its name)."""


@app.command("ingest")
def ingest(
    csv_path: Annotated[Path | None, typer.Option("--csv", help="A CSV file with a header row.")] = None,
    sql: Annotated[str | None, typer.Option(help="A SQLAlchemy URL of the warehouse (with --table).")] = None,
    table: Annotated[str | None, typer.Option(help="The table (or schema.table) to read with --sql.")] = None,
    db: DbOption = None,
    manifest: Annotated[list[Path] | None, typer.Option(
        help="Release manifest file(s) instead of the registry (repeatable).")] = None,
    id_column: Annotated[str, typer.Option(help="Column of the prediction ids.")] = "prediction_id",
    label_column: Annotated[str, typer.Option(help="Column of the true labels (or values).")] = "label",
    prediction_column: Annotated[str, typer.Option(
        help="Column of the prediction as the application received it.")] = "prediction",
    json_out: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Credit each label to the release and window its prediction id names (realized accuracy / MAE in
    ``edgeops monitor run``). Importing the same rows again counts nothing twice; bad rows are listed with their
    number and reason, the others are stored, and the exit status is 1 when any row was bad."""
    if (csv_path is None) == (sql is None):
        fail("give exactly one of --csv or --sql")
    if sql is not None and not table:
        fail("--sql needs --table")
    cfg = load_project_config(config)
    columns = LabelColumns(id_column, label_column, prediction_column)
    with user_errors():
        references = manifest_references(manifest) if manifest else registry_references(cfg.registry)
        rows = csv_rows(csv_path, columns) if csv_path is not None else sql_rows(sql or "", table or "", columns)
        store = TelemetryStore(db or cfg.telemetry.url)
        try:
            report = import_labels(store, rows, references, columns)
        finally:
            store.close()
    if json_out:
        print_json(report.to_dict())
    else:
        per_release = ", ".join(f"{release}: {n}" for release, n in sorted(report.releases.items()))
        typer.echo(f"{report.rows} rows: {report.stored} labels stored" + (f" ({per_release})" if per_release else "")
                   + f", {report.duplicates} already stored, {len(report.bad)} bad")
        for bad in report.bad[:SHOWN_BAD_ROWS]:
            typer.echo(f"row {bad.row}: {bad.reason}", err=True)
        if len(report.bad) > SHOWN_BAD_ROWS:
            typer.echo(f"... and {len(report.bad) - SHOWN_BAD_ROWS} more bad rows (--json lists them all)", err=True)
    if report.bad:
        raise typer.Exit(1)

"""``edgeops pipeline run``: the Prefect pipeline flow, in this process.

Cheap mistakes (config, missing signing key, a data file that is missing, empty, unreadable or without the
target column) are caught before Prefect is imported: without ``PREFECT_API_URL`` Prefect starts a temporary
server per process, which costs seconds. Only pandas is imported for that (tests/unit/test_cli_fast.py).

``--data`` takes what the flow's ``data`` takes (a file, a folder or glob, an ``s3://`` object, prefix or glob):
it is resolved to one local file once, here, so the checks read what the flow trains on and an S3 object is
downloaded once; a folder, glob or S3 spec is recorded as the release's source, which its retrains read again.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from edgeops.cli.common import (
    EXIT_REJECTED,
    ConfigOption,
    JsonOption,
    activity,
    fail,
    print_json,
    print_table,
    user_errors,
)
from edgeops.errors import EdgeopsError

if TYPE_CHECKING:  # edgeops.train.pipeline imports scikit-learn and skl2onnx: only when a command needs them
    from edgeops.config import S3Config
    from edgeops.train.pipeline import PipelineResult
    from edgeops.train.pipeline_request import PipelineRequest

app = typer.Typer(no_args_is_help=True)  # its help: SUBCOMMANDS in cli/__init__.py


def parse_sets(pairs: list[str]) -> dict[str, str]:
    """``--set model.params.max_depth=4`` → {"model.params.max_depth": "4"} (the config parses the value)."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"--set {pair!r} must look like key=value")
        overrides[key.strip()] = value
    return overrides


@contextmanager
def training_file(spec: str, s3: "S3Config") -> Iterator[Path]:
    """``--data`` as one local file for the run: a file as it is (a missing one is ``check_data``'s to report),
    the newest file of a folder or glob, or the newest object of an ``s3://`` prefix or glob, downloaded into a
    temporary folder removed when the run is over (with ``s3``, the registry's settings, as the flow would)."""
    from edgeops.config import ModelSource
    from edgeops.train.datasource import is_glob, materialized

    remote = spec.startswith("s3://")
    if not remote and not is_glob(spec) and not Path(spec).is_dir():
        yield Path(spec)
        return
    with materialized(ModelSource(data=spec), s3=s3 if remote else None) as path:
        yield path


def run_flow(request: "PipelineRequest", config: Path | None, overrides: dict[str, Any],
             verbose: bool = False, source: str | None = None) -> "PipelineResult":
    """Check what is cheap to check, then run the flow (Prefect imported only now, quietly unless verbose)."""
    from edgeops.train.pipeline_request import check_data, load_signing_key

    load_signing_key(request.config)
    check_data(request)
    # Prefect's run logs (and its tracebacks for errors we already report in one line) stay out of the
    # user's terminal unless asked for; an explicit PREFECT_LOGGING_LEVEL is respected.
    if verbose:
        os.environ["PREFECT_LOGGING_LEVEL"] = "INFO"
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no phoning home from a CLI run
    # The temporary server migrates a fresh database on first use; Prefect's default wait is too short for
    # that on a busy laptop.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    from edgeops.cli.heap import long_lived_imports

    with long_lived_imports():  # Prefect and the flow's libraries: kept until the process ends
        from prefect.client.orchestration import get_client  # noqa: F401  (the run needs it; loaded with the rest)
        from prefect.settings import PREFECT_API_URL

        from edgeops.flows.pipeline import pipeline_flow

    if not PREFECT_API_URL.value():
        typer.echo("starting a temporary Prefect server for this run (`edgeops up` or PREFECT_API_URL avoid it)",
                   err=True)
    else:
        check_prefect_api(PREFECT_API_URL.value())

    with activity(f"validating, training, exporting and registering {request.model} on {request.data.name}"):
        return pipeline_flow(data=str(request.data), model=request.model, target=request.target,
                             config_path=None if config is None else str(config), overrides=overrides,
                             source=None if source is None else {"data": source})


def check_prefect_api(url: str) -> None:
    """A configured but unreachable Prefect server is a one-line error, not a retry loop and a traceback."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        problem = client.api_healthcheck()
    if problem is not None:
        raise EdgeopsError(f"the Prefect API at {url} is not reachable ({problem}); start it with "
                           "`prefect server start` or unset PREFECT_API_URL")


def report(result: "PipelineResult", json_out: bool) -> None:
    """Print the outcome; a rejected release exits with EXIT_REJECTED and its reasons on stderr."""
    from edgeops.train.pipeline import metrics_table, parity_line

    if json_out:
        print_json(result.to_dict())
    else:
        typer.echo(f"validation: {result.validation.summary()}")
        print_table(["METRIC", "VALUE", "GATE", "DETAIL"],
                    ([row["metric"], f"{row['value']:.4g}",
                      "-" if row["gates"] == "-" else "ok" if row["passed"] else "FAILED", row["gates"]]
                     for row in metrics_table(result.metrics, result.gate)), styles={"ok": "green", "FAILED": "red"})
        typer.echo(f"onnx parity: {parity_line(result.export.parity)}")
        if result.passed:
            typer.echo(result.headline())
            typer.echo(f"  onnx: {result.record.onnx_location}")
    if not result.passed:
        fail(result.headline(), code=EXIT_REJECTED)


@app.command("run")
def run(data: Annotated[str, typer.Option(
            "--data", metavar="DATA", help="Training data: a .csv or .parquet file; a folder or glob (its newest such "
                                           "file); or an s3:// object, prefix or glob (its newest object).")],
        target: Annotated[str | None, typer.Option("--target", help="Target column (data.target).")] = None,
        model: Annotated[str | None, typer.Option("--model", help="Registry name of the model (name).")] = None,
        config: ConfigOption = None,
        task: Annotated[str | None, typer.Option("--task", help="binary, multiclass or regression.")] = None,
        estimator: Annotated[str | None, typer.Option(
            "--estimator", help="scikit-learn class path, e.g. sklearn.ensemble.RandomForestClassifier.")] = None,
        seed: Annotated[int | None, typer.Option("--seed", help="Random seed (split and estimator).")] = None,
        sets: Annotated[list[str] | None, typer.Option("--set", help="Config override key=value.")] = None,
        verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's logs.")] = False,
        json_out: JsonOption = False) -> None:
    """Run the pipeline flow on DATA and register a signed release (or a rejected one, exit code 3)."""
    overrides: dict[str, Any] = parse_sets(sets or [])
    for key, value in (("model.task", task), ("model.estimator", estimator), ("seed", seed)):
        if value is not None:
            overrides[key] = value
    from edgeops.train.pipeline_request import make_request

    with user_errors():
        request = make_request(Path(data), model, target, config, overrides)  # its data replaced just below
        with training_file(data, request.config.registry.s3) as path:
            source = None if path == Path(data) else data
            if source is not None:
                typer.echo(f"data: {path.name}, the newest of {data}", err=True)
            result = run_flow(replace(request, data=path), config, overrides, verbose, source=source)
    report(result, json_out)

"""``edgeops quickstart``: from nothing to a signed release in one command."""

from typing import Annotated

import typer

from edgeops.cli.common import ConfigOption, JsonOption, load_project_config, user_errors
from edgeops.cli.pipeline import report, run_flow
from edgeops.config import local_state_dir

MODEL = "churn"


def quickstart(rows: Annotated[int, typer.Option("--rows", min=100, help="Rows of sample data.")] = 2000,
               seed: Annotated[int, typer.Option("--seed", help="Seed of the sample data.")] = 0,
               config: ConfigOption = None, json_out: JsonOption = False) -> None:
    """Create a signing key if missing, write a sample churn CSV, and run the pipeline on it."""
    from edgeops.release.signing import generate_keys, key_paths
    from edgeops.train.pipeline_request import make_request
    from edgeops.train.samples import TARGETS, write_sample

    cfg = load_project_config(config)
    with user_errors():
        if not key_paths(cfg.registry.keys_dir)[0].exists():
            private, _ = generate_keys(cfg.registry.keys_dir)
            typer.echo(f"created signing key {private}", err=json_out)
        data = write_sample(local_state_dir(cfg) / "sample" / "churn.csv", "binary", rows, seed)
        typer.echo(f"wrote {rows} rows of sample churn data to {data}", err=json_out)
        request = make_request(data, MODEL, TARGETS["binary"], config)
        result = run_flow(request, config, {})
    report(result, json_out)
    if not json_out:
        typer.echo(f"next: edgeops models list; edgeops models show {result.record.ref} --json")

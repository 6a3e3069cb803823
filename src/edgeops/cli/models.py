"""``edgeops models``: what the registry holds, and promotion."""

from typing import Annotated

import typer

from ..registry import CHAMPION, Registry, ReleaseRecord, is_version_ref, parse_ref
from .common import ConfigOption, JsonOption, fail, load_project_config, print_json, user_errors

app = typer.Typer(help="Registered model versions and their aliases.", no_args_is_help=True)


def open_registry(config: ConfigOption) -> Registry:
    return Registry.from_config(load_project_config(config).registry)


def _line(record: ReleaseRecord) -> str:
    metrics = " ".join(f"{k}={v:.4g}" for k, v in sorted(record.manifest.metrics.items()))
    aliases = ",".join(record.aliases) or "-"
    return f"{record.ref:<20} {record.status:<10} {aliases:<20} {record.created:<25} {metrics}"


@app.command("list")
def list_models(model: Annotated[str | None, typer.Argument(help="Only this model.")] = None,
                config: ConfigOption = None, json_out: JsonOption = False) -> None:
    """List every version of every model (or of one model)."""
    registry = open_registry(config)
    with user_errors():
        names = [model] if model else registry.models()
        records = [record for name in names for record in registry.versions(name)]
        if model and not records:
            registry.get(model)  # raises "no model named ..."
    if json_out:
        print_json([record.summary() for record in records])
        return
    if not records:
        typer.echo(f"the registry at {registry.root} is empty: run `edgeops pipeline run` or `edgeops quickstart`")
        return
    typer.echo(f"{'MODEL@VERSION':<20} {'STATUS':<10} {'ALIASES':<20} {'CREATED':<25} METRICS")
    for record in records:
        typer.echo(_line(record))


@app.command("show")
def show(ref: Annotated[str, typer.Argument(help="churn@3, churn@champion, or churn.")],
         config: ConfigOption = None, json_out: JsonOption = False) -> None:
    """Show one version: status, metrics, lineage, signature, and the report of the run that made it."""
    registry = open_registry(config)
    with user_errors():
        record = registry.resolve(ref)
    if json_out:
        print_json({**record.summary(), "report": record.report, "manifest": record.manifest.to_json()})
        return
    summary = record.summary()
    for key in ("ref", "status", "aliases", "created", "task", "metrics", "sha256", "size", "key_id", "lineage",
                "reasons", "onnx_path"):
        typer.echo(f"{key:<10} {summary[key]}")


@app.command("promote")
def promote(ref: Annotated[str, typer.Argument(help="MODEL@VERSION to promote, e.g. churn@3.")],
            alias: Annotated[str, typer.Option("--alias", help="Alias to point at it.")] = CHAMPION,
            config: ConfigOption = None, json_out: JsonOption = False) -> None:
    """Point an alias (champion by default) at a registered version. Rejected versions are refused."""
    registry = open_registry(config)
    with user_errors():
        model, version = parse_ref(ref)
        if version is None or not is_version_ref(version):
            fail(f"promote needs an explicit version, e.g. {model}@3")
        previous = registry.aliases(model).get(alias)
        record = registry.promote(model, int(version), alias)
    if json_out:
        print_json({**record.summary(), "alias": alias, "previous": previous})
    else:
        typer.echo(f"{model}@{alias} -> {record.version}" + (f" (was {previous})" if previous else ""))

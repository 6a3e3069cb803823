"""``edgeops models``: what the registry holds, and promotion."""

from typing import Annotated, Any

import typer

from edgeops.cli.common import (
    ConfigOption,
    JsonOption,
    fail,
    has_config_file,
    load_project_config,
    print_json,
    print_table,
    user_errors,
)
from edgeops.release.registry import CHAMPION, DEFAULT_ROOT, Registry, ReleaseRecord, is_version_ref, parse_ref

app = typer.Typer(no_args_is_help=True)  # its help: SUBCOMMANDS in cli/__init__.py


def open_registry(config: ConfigOption) -> Registry:
    """The project's registry: without a config file, the default folder (``has_config_file``)."""
    if not has_config_file(config):
        return Registry(DEFAULT_ROOT)
    return Registry.from_config(load_project_config(config).registry)


def _metrics(record: ReleaseRecord) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in sorted(record.manifest.metrics.items())) or "-"


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
    print_table(["MODEL@VERSION", "STATUS", "ALIASES", "CREATED", "METRICS"],
                ([r.ref, r.status, ",".join(r.aliases) or "-", r.created, _metrics(r)] for r in records),
                styles={"registered": "green", "rejected": "red"})


def describe(record: ReleaseRecord) -> list[tuple[str, str]]:
    """``models show`` as (label, text) lines: words and numbers, never a Python repr."""
    manifest, lineage = record.manifest, record.manifest.lineage
    parent = "-" if lineage.parent_version is None else f"{record.model}@{lineage.parent_version}"
    signed = "no (rejected releases are not signed)" if manifest.signature is None \
        else f"yes, key {manifest.signature.key_id}"
    lines = [("status", record.status), ("aliases", ", ".join(record.aliases) or "-"),
             ("created", record.created), ("task", manifest.outputs.task),
             ("inputs", ", ".join(spec.column for spec in manifest.inputs) or "-"), ("signed", signed),
             ("artifact", f"{manifest.artifact.size:,} bytes, sha256 {manifest.artifact.sha256}"),
             ("onnx", str(record.onnx_path)), ("data", f"sha256 {lineage.data_sha256}"),
             ("config", f"sha256 {lineage.config_sha256}"), ("code", lineage.code_revision or "-"),
             ("parent", parent)]
    lines += [("reason", reason) for reason in record.report.get("reasons", [])]
    return lines


def metric_rows(record: ReleaseRecord) -> list[list[str]]:
    """One row per metric with the verdict and messages of the gates that judged it (from the run's report)."""
    gates: dict[str, list[dict[str, Any]]] = {}
    for check in record.report.get("gates", []):
        gates.setdefault(str(check.get("metric")), []).append(check)
    rows = []
    for name, value in sorted(record.manifest.metrics.items()):
        checks = gates.get(name, [])
        verdict = "-" if not checks else "ok" if all(c.get("passed") for c in checks) else "FAILED"
        rows.append([name, f"{value:.4g}", verdict, "; ".join(str(c.get("message")) for c in checks) or "-"])
    return rows


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
    typer.echo(record.ref)
    for label, text in describe(record):
        typer.echo(f"  {label:<9} {text}")
    typer.echo("")
    rows = metric_rows(record)
    if rows:
        print_table(["METRIC", "VALUE", "GATE", "DETAIL"], rows, styles={"ok": "green", "FAILED": "red"})
    else:
        typer.echo("no metrics recorded")


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

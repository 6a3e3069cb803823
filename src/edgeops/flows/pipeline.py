"""The training pipeline as a Prefect flow: thin tasks around edgeops.train.pipeline, plus artifacts for the UI.

Run it with ``edgeops pipeline run`` (in-process), or as the ``pipeline`` deployment of
deployments/prefect.yaml on the ``edgeops-process`` work pool. Each run leaves a markdown artifact
(``<model>-pipeline``), a table artifact (``<model>-metrics``) and an ``edgeops.release.registered`` or
``edgeops.release.rejected`` event about the resource ``edgeops.model.<model>``. Parameters are plain JSON values so the
deployment form in the Prefect UI can fill them in.

Tasks use ``NO_CACHE``: their inputs are DataFrames and fitted models, and hashing those for a cache key
would cost more than the step itself (and a retrain must never be skipped because the inputs look alike).
"""

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from edgeops.config import ModelSource, load_config
from edgeops.errors import ValidationFailed
from edgeops.event_names import model_resource, release_event
from edgeops.release.registry import Registry, ReleaseRecord
from edgeops.train import pipeline as steps
from edgeops.train.datasource import materialized
from edgeops.train.export import ExportResult
from edgeops.train.gates import GateResult
from edgeops.train.training import TrainedModel
from edgeops.train.validation import ValidationReport


@task(name="load", cache_policy=NO_CACHE)
def load_task(path: Path) -> tuple[pd.DataFrame, str]:
    return steps.load_step(path)


@task(name="validate", cache_policy=NO_CACHE)
def validate_task(df: pd.DataFrame, target: str, cfg: Any, champion: steps.Champion) -> ValidationReport:
    return steps.validate_step(df, target, cfg, champion)


@task(name="train", cache_policy=NO_CACHE)
def train_task(df: pd.DataFrame, target: str, cfg: Any) -> TrainedModel:
    return steps.train_step(df, target, cfg)


@task(name="gate", cache_policy=NO_CACHE)
def gate_task(trained: TrainedModel, cfg: Any, champion: steps.Champion) -> GateResult:
    return steps.gate_step(trained, cfg, champion)


@task(name="export", cache_policy=NO_CACHE)
def export_task(trained: TrainedModel, cfg: Any) -> ExportResult:
    return steps.export_step(trained, cfg)


@task(name="register", cache_policy=NO_CACHE)
def register_task(registry: Registry, request: steps.PipelineRequest, key: Any, candidate: steps.Candidate,
                  champion: steps.Champion) -> ReleaseRecord:
    return steps.register_step(registry, request, key, candidate, champion)


def artifact_key(model: str, what: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", f"{model}-{what}".lower()).strip("-")


@flow(name="edgeops-pipeline", description="Validate, train, gate, export to ONNX and register a signed release.")
def pipeline_flow(data: str, model: str | None = None, target: str | None = None, config_path: str | None = None,
                  overrides: dict[str, Any] | None = None, source: dict[str, str] | None = None
                  ) -> steps.PipelineResult:
    """Run the pipeline; a failed gate still returns (the release is registered as rejected). The release
    records its recipe (target, task, estimator, data source), which the model's retrains repeat.

    Args:
        data: Training data on the worker: a .csv/.parquet file, a folder (its newest such file), or a glob
            (its newest match, e.g. data/churn-*.csv); or the newest object of an S3 prefix or glob
            (s3://bucket/exports/churn-*.csv), for workers that share no disk.
        model: Model name in the registry (default: name in edgeops.yaml).
        target: Target column (default: data.target in edgeops.yaml).
        config_path: edgeops.yaml to read (default: $EDGEOPS_CONFIG, else ./edgeops.yaml on the worker).
        overrides: Config keys by dotted name, e.g. {"model.estimator": "sklearn.ensemble.RandomForestClassifier"}.
        source: Where the data came from, recorded for retrains, e.g. {"sql": "...", "database_url_secret":
            "..."} (default: data itself).
    """
    logger = get_run_logger()
    cfg_path = None if config_path is None else Path(config_path)
    s3 = load_config(cfg_path, overrides).registry.s3 if data.startswith("s3://") else None
    with materialized(ModelSource(data=data), s3=s3) as path:  # an s3:// object is downloaded for this block
        request = steps.make_request(path, model, target, cfg_path, overrides)
        df, data_sha256 = load_task(request.data)
    request = replace(request, source=ModelSource.from_json(source) or ModelSource(data=data))
    key = steps.load_signing_key(request.config)
    registry = Registry.from_config(request.config.registry)
    champion = steps.load_champion(registry, request.model)
    validation = validate_task(df, request.target, request.config, champion)
    logger.info("validation: %s", validation.summary())
    if not validation.ok:
        create_markdown_artifact(markdown=steps.validation_markdown(request.model, validation),
                                 key=artifact_key(request.model, "validation"),
                                 description=f"{request.model}: validation failed")
        raise ValidationFailed(validation)
    trained = train_task(df, request.target, request.config)
    gate = gate_task(trained, request.config, champion)
    export = export_task(trained, request.config)
    candidate = steps.Candidate(df, data_sha256, validation, trained, gate, export)
    record = register_task(registry, request, key, candidate, champion)
    result = steps.PipelineResult(record=record, validation=validation, gate=gate, export=export,
                                  metrics=trained.metrics)
    create_markdown_artifact(markdown=steps.summary_markdown(result), key=artifact_key(request.model, "pipeline"),
                             description=result.headline())
    create_table_artifact(table=steps.metrics_table(trained.metrics, gate), key=artifact_key(request.model, "metrics"),
                          description=f"{record.ref} metrics vs gates")
    emit_release_event(record)
    logger.info(result.headline())
    return result


def emit_release_event(record: ReleaseRecord) -> None:
    """``edgeops.release.registered|rejected`` about ``edgeops.model.<name>``, for automations (e.g. a
    deployment trigger that rolls out every registered release to a test fleet)."""
    summary = record.summary()
    emit_event(event=release_event(record.status), resource=model_resource(record.model),
               payload={key: summary[key] for key in ("ref", "version", "status", "aliases", "sha256", "metrics",
                                                      "reasons", "task", "key_id")})

"""The pipeline as plain functions: load → validate → train → gate → export → sign + register.

flows/pipeline.py wraps each step in a Prefect task; the benchmark and tests call them directly. Everything
that can fail on user input fails *before* the registry is touched (the signing key is loaded first), and
the only registry write is the final atomic ``Registry.register``.

Promotion policy: a release that passes its gates becomes the ``candidate``; it also becomes the
``champion`` when the model has none yet (the first good release), otherwise promotion is a deliberate
``edgeops models promote``. A release that fails a gate is registered as ``rejected`` with the reasons.
"""

import io
import json
import subprocess
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.protocol import Lineage, ReleaseManifest
from edgeops.config import ModelSource, ProjectConfig, config_sha256
from edgeops.errors import DataError, RegistryError, ValidationFailed
from edgeops.release.registry import CANDIDATE, CHAMPION, SAMPLE_FILE, Registry, ReleaseRecord
from edgeops.release.signing import sign_manifest
from edgeops.train.data import file_sha256, load_table
from edgeops.train.export import ExportResult, ParityReport, build_manifest, export_model
from edgeops.train.gates import GateResult, evaluate_gates
from edgeops.train.pipeline_request import (
    PipelineRequest as PipelineRequest,  # re-exported: callers import them from here
)
from edgeops.train.pipeline_request import load_signing_key as load_signing_key
from edgeops.train.pipeline_request import make_request as make_request
from edgeops.train.training import DEFAULT_ESTIMATORS, TrainedModel, train_model
from edgeops.train.validation import ValidationReport, validate_data

SAMPLE_ROWS = 2000
"""Training rows kept with each release: enough for a KS drift test against the next run's data."""


@dataclass(frozen=True)
class Champion:
    """The model's current champion, if any, with the training sample stored beside it."""

    record: ReleaseRecord | None = None
    sample: pd.DataFrame | None = None

    @property
    def manifest(self) -> ReleaseManifest | None:
        return None if self.record is None else self.record.manifest

    def metrics_for(self, task: str) -> dict[str, float] | None:
        """Champion metrics to gate against: only comparable when the champion solved the same task."""
        manifest = self.manifest
        if manifest is None or manifest.outputs.task != task:
            return None
        return dict(manifest.metrics)


@dataclass(frozen=True)
class Candidate:
    """What one run made, all of which the registry keeps with the release: the data (its hash and a sample),
    the validation report, the trained model, the gates' verdict and the export."""

    df: pd.DataFrame
    data_sha256: str
    validation: ValidationReport
    trained: TrainedModel
    gate: GateResult
    export: ExportResult


@dataclass(frozen=True)
class PipelineResult:
    record: ReleaseRecord
    validation: ValidationReport
    gate: GateResult
    export: ExportResult
    metrics: dict[str, float]

    @property
    def passed(self) -> bool:
        return self.record.status == "registered"

    def headline(self) -> str:
        if self.passed:
            aliases = f" ({', '.join(self.record.aliases)})" if self.record.aliases else ""
            return f"registered {self.record.ref}{aliases}, signed, sha256 {self.record.manifest.artifact.sha256[:12]}"
        return f"{self.record.ref} rejected by gates: {'; '.join(self.gate.reasons)}"

    def to_dict(self) -> dict[str, Any]:
        return {**self.record.summary(), "passed": self.passed, "report": self.record.report}


def code_revision(cwd: Path | None = None) -> str | None:
    """``git rev-parse HEAD`` of the working directory, or None outside a repository / without git."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10,
                             check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    revision = out.stdout.strip()
    return revision if out.returncode == 0 and revision else None


def load_champion(registry: Registry, model: str) -> Champion:
    record = registry.champion(model)
    if record is None:
        return Champion()
    try:
        data = record.read_file(SAMPLE_FILE)
        sample = None if data is None else pd.read_parquet(io.BytesIO(data))
    except (OSError, ValueError, RegistryError):
        sample = None  # drift against the champion is a bonus; a damaged sample must not block training
    return Champion(record=record, sample=sample)


def load_step(path: Path) -> tuple[pd.DataFrame, str]:
    """The table and the sha256 of its file (for lineage)."""
    return load_table(path), file_sha256(path)


def validate_step(df: pd.DataFrame, target: str, cfg: ProjectConfig, champion: Champion) -> ValidationReport:
    """Run the data checks (drift against the champion's sample too). Does not raise: the caller decides."""
    if target not in df.columns:
        raise DataError(f"target column {target!r} is not in the data (columns: {', '.join(map(str, df.columns))})",
                        column=target)
    return validate_data(df, target, cfg.data, champion=champion.manifest, champion_sample=champion.sample)


def require_valid(report: ValidationReport) -> None:
    if not report.ok:
        raise ValidationFailed(report)


def train_step(df: pd.DataFrame, target: str, cfg: ProjectConfig) -> TrainedModel:
    return train_model(df, target, cfg)


def gate_step(trained: TrainedModel, cfg: ProjectConfig, champion: Champion) -> GateResult:
    return evaluate_gates(trained.metrics, trained.task, cfg.gates, champion.metrics_for(trained.task))


def export_step(trained: TrainedModel, cfg: ProjectConfig) -> ExportResult:
    return export_model(trained, cfg.export)


def sample_bytes(df: pd.DataFrame, seed: int, rows: int = SAMPLE_ROWS) -> bytes | None:
    """Up to ``rows`` training rows as parquet, or None when a column cannot be stored that way."""
    sample = df.sample(n=min(rows, len(df)), random_state=seed) if len(df) > rows else df
    buffer = io.BytesIO()
    try:
        sample.to_parquet(buffer, index=False)
    except (ValueError, TypeError, ImportError):
        return None
    return buffer.getvalue()


def build_report(validation: ValidationReport, gate: GateResult, export: ExportResult,
                 metrics: Mapping[str, float], recipe: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What the registry keeps about the run, made JSON-safe."""
    report = {"validation": validation.to_dict(), "gates": [asdict(c) for c in gate.checks],
              "parity": export.parity.to_dict(), "metrics": dict(metrics), "reasons": list(gate.reasons),
              **({"recipe": dict(recipe)} if recipe is not None else {})}
    safe: dict[str, Any] = json.loads(json.dumps(report, default=str))
    return safe


def training_recipe(request: PipelineRequest, trained: TrainedModel) -> dict[str, Any]:
    """What a retrain of this release must repeat (edgeops.retrain.recipe): the target, the task and estimator
    as trained (not as configured: an inferred task or a default estimator is pinned here), and the source."""
    spec = request.config.model
    params = dict(spec.params) if spec.estimator else {**DEFAULT_ESTIMATORS[trained.task][1], **spec.params}
    source = request.source or ModelSource(data=str(request.data))
    return {"target": trained.target, "task": trained.task, "estimator": trained.estimator, "params": params,
            "scale_numeric": spec.scale_numeric, "missing_token": spec.missing_token, "source": source.to_json()}


def register_step(registry: Registry, request: PipelineRequest, key: Ed25519PrivateKey, candidate: Candidate,
                  champion: Champion) -> ReleaseRecord:
    """Sign (if the gates passed) and store the release; then apply the promotion policy (module doc)."""
    cfg = request.config
    trained, gate, export = candidate.trained, candidate.gate, candidate.export
    data_sha256 = candidate.data_sha256
    lineage = Lineage(data_sha256=data_sha256, config_sha256=config_sha256(cfg), code_revision=code_revision(),
                      parent_version=None if champion.record is None else champion.record.version)

    def build(version: int) -> tuple[ReleaseManifest, bytes]:
        manifest = build_manifest(request.model, version, export, lineage, trained.metrics, cfg.export.chunk_size)
        return (sign_manifest(manifest, key) if gate.passed else manifest), export.onnx_bytes

    sample = sample_bytes(candidate.df, cfg.seed)
    record = registry.register(request.model, build, status="registered" if gate.passed else "rejected",
                               report=build_report(candidate.validation, gate, export, trained.metrics,
                                                   training_recipe(request, trained)),
                               files={SAMPLE_FILE: sample} if sample is not None else None)
    if gate.passed:
        registry.promote(request.model, record.version, CANDIDATE)
        record = registry.promote(request.model, record.version, CHAMPION, only_if_unset=True)
    return record


def run_pipeline(request: PipelineRequest) -> PipelineResult:
    """Every step in order, without Prefect (the flow does the same with tasks, artifacts and logs)."""
    key = load_signing_key(request.config)
    registry = Registry.from_config(request.config.registry)
    champion = load_champion(registry, request.model)
    df, data_sha256 = load_step(request.data)
    validation = validate_step(df, request.target, request.config, champion)
    require_valid(validation)
    trained = train_step(df, request.target, request.config)
    gate = gate_step(trained, request.config, champion)
    export = export_step(trained, request.config)
    record = register_step(registry, request, key, Candidate(df, data_sha256, validation, trained, gate, export),
                           champion)
    return PipelineResult(record=record, validation=validation, gate=gate, export=export, metrics=trained.metrics)


def metrics_table(metrics: Mapping[str, float], gate: GateResult) -> list[dict[str, Any]]:
    """One row per metric with the gates that judged it (for the Prefect table artifact and the CLI)."""
    rows = []
    for name, value in sorted(metrics.items()):
        checks = [c for c in gate.checks if c.metric == name]
        rows.append({"metric": name, "value": round(float(value), 6),
                     "gates": "; ".join(c.message for c in checks) or "-",
                     "champion": next((c.champion_value for c in checks if c.champion_value is not None), None),
                     "passed": all(c.passed for c in checks)})
    return rows


def parity_line(parity: ParityReport) -> str:
    """One readable line about ONNX vs scikit-learn (label agreement only exists for classifiers)."""
    line = f"max |diff| {parity.max_abs_diff:.2g} on {parity.rows} holdout rows (tolerance {parity.tolerance:g})"
    if parity.label_agreement is not None:
        line += f", labels agree {parity.label_agreement:.2%}"
    return line


def summary_markdown(result: PipelineResult) -> str:
    """The run's Prefect artifact: outcome, validation, metrics vs gates, ONNX parity, lineage."""
    record, parity = result.record, result.export.parity
    lineage = record.manifest.lineage
    lines = [f"# {record.ref}: {'registered' if result.passed else 'rejected'}", "", result.headline(), "",
             "## Validation", "", result.validation.to_markdown(), "", "## Metrics vs gates", "",
             result.gate.to_markdown(), "", "## ONNX parity", "",
             f"{parity_line(parity)}: {'passed' if parity.passed else 'FAILED'}", "",
             "## Lineage", "", f"- data sha256 `{lineage.data_sha256}`", f"- config sha256 `{lineage.config_sha256}`",
             f"- code revision `{lineage.code_revision}`", f"- parent version {lineage.parent_version}"]
    return "\n".join(lines)


def validation_markdown(model: str, report: ValidationReport) -> str:
    return "\n".join([f"# {model}: validation failed, nothing registered", "", report.to_markdown()])

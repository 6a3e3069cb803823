"""Data validation: the schema of the training data, its quality, and its drift against the champion.

Every problem is a Finding with a severity: *error* stops the pipeline (the caller raises
ValidationFailed(report)), *warning* is shown but lets training go on, *info* is context. Drift is a warning
by default (new data that drifted is often the very reason to retrain); ``data.drift_psi_error`` makes large
drift an error. Thresholds are in config.DataChecks and documented in docs/pipeline.md.
"""

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats

from edge_agent.protocol import CategoricalBins, Counts, Reference, ReleaseManifest
from edgeops.config import DataChecks
from edgeops.train.data import as_numeric, as_text, column_kind, numeric_garbage, with_text_columns
from edgeops.train.reference import categorical_reference, numeric_counts
from edgeops.train.training import infer_task

Severity = Literal["error", "warning", "info"]
PSI_FLOOR = 1e-4
"""Smallest bin share used in PSI, so that an empty bin gives a large but finite term instead of infinity."""


@dataclass(frozen=True)
class Finding:
    severity: Severity
    check: str
    column: str | None
    message: str
    value: float | None = None


@dataclass(frozen=True)
class ColumnSchema:
    name: str
    kind: Literal["numeric", "categorical"]
    dtype: str
    missing_ratio: float
    n_unique: int
    minimum: float | None = None
    maximum: float | None = None
    categories: tuple[str, ...] | None = None


@dataclass(frozen=True)
class DataSchema:
    columns: dict[str, ColumnSchema]
    target: str

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "columns": {k: asdict(v) for k, v in self.columns.items()}}


@dataclass(frozen=True)
class DriftCheck:
    """Drift of one column. ``source``: the champion's reference bins, or a sample of its training data."""

    column: str
    source: Literal["reference", "sample"]
    test: Literal["chi2", "ks"]
    statistic: float
    p_value: float
    psi: float | None
    severity: Severity


@dataclass
class ValidationReport:
    findings: list[Finding]
    schema: DataSchema
    drift: list[DriftCheck] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        """One line: the verdict and every error (warnings counted), for ValidationFailed and the CLI."""
        warn = f"{len(self.warnings)} warning(s)"
        if self.ok:
            return f"data validation passed ({warn})"
        listed = "; ".join(f.message for f in self.errors)
        return f"data validation failed with {len(self.errors)} error(s): {listed} ({warn})"

    def to_markdown(self) -> str:
        lines = [f"**{self.summary()}**", ""]
        if self.findings:
            lines += ["| severity | check | column | message |", "|---|---|---|---|"]
            order = {"error": 0, "warning": 1, "info": 2}
            for f in sorted(self.findings, key=lambda f: order[f.severity]):
                lines.append(f"| {f.severity} | {f.check} | {_cell(f.column or '')} | {_cell(f.message)} |")
        if self.drift:
            lines += ["", "| column | source | test | statistic | p-value | PSI | severity |",
                      "|---|---|---|---|---|---|---|"]
            for d in self.drift:
                psi = "—" if d.psi is None else f"{d.psi:.3f}"
                lines.append(f"| {_cell(d.column)} | {d.source} | {d.test} | {d.statistic:.3g} | {d.p_value:.3g} "
                             f"| {psi} | {d.severity} |")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "summary": self.summary(), "findings": [asdict(f) for f in self.findings],
                "schema": self.schema.to_dict(), "drift": [asdict(d) for d in self.drift]}


def infer_schema(df: pd.DataFrame, target: str) -> DataSchema:
    """Columns with kind (numeric/categorical by data.column_kind), dtype, missing ratio, range, vocabulary."""
    columns = {}
    for col in df.columns:
        s = df[col]
        kind = "numeric" if numeric_garbage(s, 0.5) else column_kind(s)
        missing = float(s.isna().mean()) if len(s) else 0.0
        if kind == "numeric":
            values = as_numeric(s).dropna()
            columns[col] = ColumnSchema(col, "numeric", str(s.dtype), missing, int(values.nunique()),
                                        float(values.min()) if len(values) else None,
                                        float(values.max()) if len(values) else None)
        else:
            cats = tuple(sorted(as_text(s).dropna().unique()))
            columns[col] = ColumnSchema(col, "categorical", str(s.dtype), missing, len(cats), categories=cats)
    return DataSchema(columns=columns, target=target)


def validate_data(df: pd.DataFrame, target: str, checks: DataChecks, champion: ReleaseManifest | None = None,
                  champion_sample: pd.DataFrame | None = None) -> ValidationReport:
    """Schema, quality and (with a champion) drift findings; raises only for duplicate column names (then
    no column can be addressed), otherwise reports every problem as a finding."""
    df, target = with_text_columns(df), str(target)
    if champion_sample is not None:
        champion_sample = with_text_columns(champion_sample, "the champion sample")
    schema = infer_schema(df, target)
    findings = _table_findings(df, checks) + _column_findings(df, target, checks, schema)
    findings += _target_findings(df, target, checks)
    drift: list[DriftCheck] = []
    if champion is not None:
        findings += _schema_change_findings(df, champion, schema)
        drift += _reference_drift(df, champion, checks)
    if champion_sample is not None:
        drift += _sample_drift(df, champion_sample, target, checks)
    for d in drift:
        if d.severity != "info":
            what = f"PSI {d.psi:.3f}" if d.psi is not None else f"{d.test} p={d.p_value:.2g}"
            findings.append(Finding(d.severity, "drift", d.column,
                                    f"column {d.column!r} drifted from the champion's {d.source} ({what})",
                                    d.psi if d.psi is not None else d.p_value))
    return ValidationReport(findings=findings, schema=schema, drift=drift)


def _table_findings(df: pd.DataFrame, checks: DataChecks) -> list[Finding]:
    out = []
    if len(df) < checks.min_rows:
        out.append(Finding("error", "too_few_rows", None,
                           f"only {len(df)} rows (at least {checks.min_rows} needed)", float(len(df))))
    dup = float(df.duplicated().mean()) if len(df) else 0.0
    if dup > checks.max_duplicate_ratio:
        out.append(Finding("warning", "duplicates", None,
                           f"{dup:.1%} of rows are duplicates (limit {checks.max_duplicate_ratio:.1%})", dup))
    return out


def _column_findings(df: pd.DataFrame, target: str, checks: DataChecks, schema: DataSchema) -> list[Finding]:
    out = []
    for col in df.columns:
        s, info = df[col], schema.columns[col]
        if col != target and s.isna().all():
            out.append(Finding("error", "all_missing", col, f"column {col!r} is entirely missing (all NaN)", 1.0))
            continue
        garbage = numeric_garbage(s, checks.numeric_parse_ratio)
        if garbage is not None:
            out.append(Finding("error", "numeric_garbage", col, f"column {col!r} is numeric but holds "
                               f"{garbage[1]} non-numeric value(s), e.g. {garbage[0]!r}", float(garbage[1])))
        if col != target and info.missing_ratio > checks.max_missing_ratio:
            out.append(Finding("warning", "missing", col, f"column {col!r} is {info.missing_ratio:.1%} missing "
                               f"(limit {checks.max_missing_ratio:.1%})", info.missing_ratio))
        if col != target and info.n_unique == 1:
            out.append(Finding("warning", "constant", col, f"column {col!r} has a single value", 1.0))
        if info.kind == "categorical" and info.n_unique > checks.max_categories:
            out.append(Finding("warning", "high_cardinality", col, f"column {col!r} has {info.n_unique} "
                               f"categories (limit {checks.max_categories})", float(info.n_unique)))
    return out


def _target_findings(df: pd.DataFrame, target: str, checks: DataChecks) -> list[Finding]:
    if target not in df.columns:
        return [Finding("error", "target_missing", target, f"target column {target!r} is not in the data")]
    y = df[target]
    out = []
    n_missing = int(y.isna().sum())
    if n_missing:
        out.append(Finding("error", "target_missing_values", target,
                           f"target column {target!r} has {n_missing} missing values", float(n_missing)))
    present = y.dropna()
    if present.nunique() < 2:
        out.append(Finding("error", "target_single_value", target,
                           f"target column {target!r} has a single value: nothing to learn", 1.0))
        return out
    if infer_task(present) != "regression":
        shares = present.astype(str).value_counts(normalize=True)
        if shares.min() < checks.min_class_ratio:
            out.append(Finding("warning", "class_imbalance", target,
                               f"class {shares.index[-1]!r} is only {shares.min():.1%} of the target "
                               f"(limit {checks.min_class_ratio:.1%})", float(shares.min())))
    return out


def _schema_change_findings(df: pd.DataFrame, champion: ReleaseManifest, schema: DataSchema) -> list[Finding]:
    out = []
    for spec in champion.inputs:
        if spec.column not in df.columns:
            out.append(Finding("warning", "column_removed", spec.column,
                               f"column {spec.column!r} of the champion is not in the new data"))
            continue
        kind = "numeric" if spec.dtype == "float32" else "categorical"
        if schema.columns[spec.column].kind != kind:
            out.append(Finding("warning", "kind_changed", spec.column, f"column {spec.column!r} was {kind} for "
                               f"the champion and is {schema.columns[spec.column].kind} now"))
    known = {s.column for s in champion.inputs}
    for col in df.columns:
        if col not in known and col != schema.target:
            out.append(Finding("info", "column_added", col, f"column {col!r} is new (not a champion input)"))
    return out


def psi(reference: list[int] | np.ndarray, current: list[int] | np.ndarray) -> float:
    """Population stability index of two count vectors on the same bins (shares floored at 1e-4)."""
    ref = np.asarray(reference, dtype="float64")
    cur = np.asarray(current, dtype="float64")
    p = np.maximum(ref / max(ref.sum(), 1.0), PSI_FLOOR)
    q = np.maximum(cur / max(cur.sum(), 1.0), PSI_FLOOR)
    return float(np.sum((q - p) * np.log(q / p)))


def chi2_counts(reference: list[int] | np.ndarray, current: list[int] | np.ndarray) -> tuple[float, float]:
    """Chi-square test that two count vectors come from one distribution (bins empty in both dropped)."""
    table = np.vstack([np.asarray(reference, dtype="float64"), np.asarray(current, dtype="float64")])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 1.0
    result = stats.chi2_contingency(table)
    return float(result.statistic), float(result.pvalue)


def _severity(psi_value: float | None, p_value: float, checks: DataChecks) -> Severity:
    if psi_value is not None and checks.drift_psi_error is not None and psi_value >= checks.drift_psi_error:
        return "error"
    if (psi_value is not None and psi_value >= checks.drift_psi_warning) or p_value < checks.drift_p_value:
        return "warning"
    return "info"


def current_counts(ref: Reference, values: pd.Series) -> Counts:
    """Counts of ``values`` on the reference's bins, by the protocol's binning rule."""
    if isinstance(ref.bins, CategoricalBins):
        return categorical_reference(values, categories=ref.bins.categories).counts
    return numeric_counts(ref.bins.edges, as_numeric(values).to_numpy())


def _reference_drift(df: pd.DataFrame, champion: ReleaseManifest, checks: DataChecks) -> list[DriftCheck]:
    out = []
    for col, ref in champion.reference.items():
        if col not in df.columns:
            continue
        spec = champion.input_spec(col)
        values = df[col]
        if spec.dtype == "string":  # the champion counted its missing token as missing
            values = as_text(values).where(as_text(values) != spec.missing_token, None)
        ref_vec, cur_vec = ref.counts.vector(), current_counts(ref, values).vector()
        statistic, p_value = chi2_counts(ref_vec, cur_vec)
        value = psi(ref_vec, cur_vec)
        out.append(DriftCheck(col, "reference", "chi2", statistic, p_value, value, _severity(value, p_value, checks)))
    return out


def _sample_drift(df: pd.DataFrame, sample: pd.DataFrame, target: str, checks: DataChecks) -> list[DriftCheck]:
    out = []
    for col in df.columns:
        if col == target or col not in sample.columns:
            continue
        if column_kind(df[col]) == "numeric" and column_kind(sample[col]) == "numeric":
            new, old = as_numeric(df[col]).dropna(), as_numeric(sample[col]).dropna()
            if new.empty or old.empty:
                continue
            result = stats.ks_2samp(old.to_numpy(), new.to_numpy())
            statistic, p_value = float(result.statistic), float(result.pvalue)
            out.append(DriftCheck(col, "sample", "ks", statistic, p_value, None,
                                  _severity(None, p_value, checks)))
        else:
            ref = categorical_reference(sample[col])
            ref_vec, cur_vec = ref.counts.vector(), current_counts(ref, df[col]).vector()
            statistic, p_value = chi2_counts(ref_vec, cur_vec)
            value = psi(ref_vec, cur_vec)
            out.append(DriftCheck(col, "sample", "chi2", statistic, p_value, value,
                                  _severity(value, p_value, checks)))
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


__all__ = ["ColumnSchema", "DataSchema", "DriftCheck", "Finding", "ValidationReport", "chi2_counts",
           "current_counts", "infer_schema", "psi", "validate_data"]

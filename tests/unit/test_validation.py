"""Data validation: inferred schema, every quality check, drift against a real champion manifest and sample."""

import json
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from edge_agent.protocol import Lineage, ReleaseManifest
from edgeops.config import DataChecks, load_config
from edgeops.errors import EdgeopsError, ValidationFailed
from edgeops.train.export import build_manifest, export_model
from edgeops.train.training import train_model
from edgeops.train.validation import Finding, ValidationReport, chi2_counts, infer_schema, psi, validate_data

pytestmark = pytest.mark.unit

CHECKS = DataChecks()


def frame(n: int = 300, seed: int = 0, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    pressure = rng.normal(5 + shift, 1, n)
    site = rng.choice(["a b", "c/d", "e.f"], n, p=[0.5, 0.3, 0.2]).astype(object)
    site[rng.random(n) < 0.05] = None
    label = np.where(pressure + rng.normal(0, 1, n) > 5 + shift, "high", "low")
    return pd.DataFrame({"pressure (bar)": pressure, "site/id": site, "count": rng.integers(0, 5, n),
                         "label": label})


@pytest.fixture(scope="module")
def champion() -> ReleaseManifest:
    cfg = load_config(None, {})
    trained = train_model(frame(), "label", cfg)
    result = export_model(trained, cfg.export)
    return build_manifest("pressure", 1, result, Lineage("a" * 64, "b" * 64), trained.metrics, 4096)


def findings(report: ValidationReport, check: str) -> list[Finding]:
    return [f for f in report.findings if f.check == check]


def test_clean_data_passes_with_its_schema() -> None:
    report = validate_data(frame(), "label", CHECKS)
    assert report.ok and report.errors == [] and report.drift == []
    cols = report.schema.columns
    assert report.schema.target == "label" and set(cols) == {"pressure (bar)", "site/id", "count", "label"}
    pressure = cols["pressure (bar)"]
    assert pressure.kind == "numeric" and pressure.minimum < 5 < pressure.maximum
    assert cols["site/id"].kind == "categorical" and cols["site/id"].categories == ("a b", "c/d", "e.f")
    assert 0 < cols["site/id"].missing_ratio < 0.15
    assert cols["label"].categories == ("high", "low")
    assert report.summary().startswith("data validation passed")


@pytest.mark.parametrize(("change", "check", "severity", "words"), [
    (lambda df: df.head(10), "too_few_rows", "error", "only 10 rows (at least 30 needed)"),
    (lambda df: pd.concat([df, df.head(60)]), "duplicates", "warning", "of rows are duplicates"),
    (lambda df: df.assign(const=1.0), "constant", "warning", "column 'const' has a single value"),
    (lambda df: df.assign(**{"site/id": df["site/id"].where(df.index % 2 == 0, None)}), "missing", "warning",
     "column 'site/id' is"),
    (lambda df: df.assign(empty=np.nan), "all_missing", "error", "column 'empty' is entirely missing"),
    (lambda df: df.assign(**{"pressure (bar)": df["pressure (bar)"].round(2).astype(str).where(df.index != 7, "N/A")}),
     "numeric_garbage", "error", "column 'pressure (bar)' is numeric but holds 1 non-numeric value(s), e.g. 'N/A'"),
    (lambda df: df.assign(label=df["label"].where(df.index > 2, None)), "target_missing_values", "error",
     "target column 'label' has 3 missing values"),
    (lambda df: df.assign(label="high"), "target_single_value", "error", "target column 'label' has a single value"),
    (lambda df: df.assign(label=np.where(df.index < 5, "rare", "common")), "class_imbalance", "warning",
     "class 'rare' is only 1.7% of the target"),
    (lambda df: df.drop(columns="label"), "target_missing", "error", "target column 'label' is not in the data"),
    (lambda df: df.assign(serial=[f"s{i}" for i in range(len(df))]), "high_cardinality", "warning",
     "column 'serial' has 300 categories"),
])
def test_each_check_reports_its_problem(change: Callable[[pd.DataFrame], pd.DataFrame], check: str, severity: str,
                                       words: str) -> None:
    report = validate_data(change(frame()), "label", CHECKS)
    found = findings(report, check)
    assert found, report.to_markdown()
    assert found[0].severity == severity and words in found[0].message
    assert report.ok == (severity != "error")


def test_validation_failed_is_one_line_naming_every_error() -> None:
    df = frame().assign(empty=np.nan, label="x")
    report = validate_data(df, "label", CHECKS)
    error = ValidationFailed(report)
    assert isinstance(error, EdgeopsError) and error.report is report
    text = str(error)
    assert "\n" not in text and "2 error(s)" in text and "'empty'" in text and "'label'" in text


def test_report_serialises_to_json_and_markdown() -> None:
    report = validate_data(frame().assign(const=0), "label", CHECKS, champion_sample=frame(seed=1))
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is True and data["schema"]["target"] == "label" and data["drift"]
    md = report.to_markdown()
    assert "| warning | constant | const |" in md
    assert "| pressure (bar) | sample | ks |" in md


def test_no_drift_on_the_same_distribution(champion: ReleaseManifest) -> None:
    report = validate_data(frame(seed=5), "label", CHECKS, champion=champion)
    assert {d.column for d in report.drift} == {"pressure (bar)", "site/id", "count"}
    assert all(d.source == "reference" and d.test == "chi2" for d in report.drift)
    assert all(d.psi is not None and d.psi < 0.1 for d in report.drift), report.to_markdown()
    assert findings(report, "drift") == []


def test_drift_against_the_champion_reference_bins(champion: ReleaseManifest) -> None:
    shifted = frame(seed=5, shift=1.5)
    shifted["site/id"] = np.where(np.arange(len(shifted)) % 2 == 0, "new site", shifted["site/id"])
    report = validate_data(shifted, "label", CHECKS, champion=champion)
    by_col = {d.column: d for d in report.drift}
    assert by_col["pressure (bar)"].psi > 0.25 and by_col["pressure (bar)"].p_value < 1e-6
    assert by_col["site/id"].psi > 0.25  # unseen categories count as drift
    assert by_col["count"].severity == "info"
    drifted = {f.column for f in findings(report, "drift")}
    assert drifted == {"pressure (bar)", "site/id"}
    assert report.ok  # drift warns by default: it is often why one retrains
    strict = validate_data(shifted, "label", DataChecks(drift_psi_error=0.25), champion=champion)
    assert not strict.ok and "drifted from the champion's reference" in strict.summary()


def test_schema_changes_against_the_champion(champion: ReleaseManifest) -> None:
    df = frame(seed=2).drop(columns="count").assign(extra=1.0)
    df["site/id"] = np.arange(len(df)).astype(float)
    report = validate_data(df, "label", CHECKS, champion=champion)
    assert findings(report, "column_removed")[0].column == "count"
    assert findings(report, "column_added")[0].column == "extra"
    assert "was categorical for the champion and is numeric now" in findings(report, "kind_changed")[0].message


def test_drift_against_a_champion_sample_uses_ks_and_chi_square() -> None:
    report = validate_data(frame(seed=3, shift=1.0), "label", CHECKS, champion_sample=frame(seed=4))
    by_col = {d.column: d for d in report.drift}
    assert by_col["pressure (bar)"].test == "ks" and by_col["pressure (bar)"].p_value < 1e-6
    assert by_col["pressure (bar)"].severity == "warning" and by_col["pressure (bar)"].psi is None
    assert by_col["site/id"].test == "chi2" and by_col["site/id"].severity == "info"
    assert "label" not in by_col


def test_psi_and_chi_square() -> None:
    assert psi([10, 20, 30], [10, 20, 30]) == 0.0
    assert psi([10, 20, 30], [1, 2, 3]) == pytest.approx(0.0)
    assert psi([50, 50, 0], [0, 50, 50]) > 1.0
    stat, p = chi2_counts([100, 100, 0], [100, 100, 0])
    assert stat == 0.0 and p == 1.0
    _, p = chi2_counts([100, 100], [150, 50])
    assert p < 0.001


def test_infer_schema_treats_garbage_columns_as_numeric() -> None:
    df = pd.DataFrame({"x": ["1", "2", "3", "4", "oops"], "y": [0, 1, 0, 1, 0]})
    assert infer_schema(df, "y").columns["x"].kind == "numeric"

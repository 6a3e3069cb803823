"""Synthetic tabular data for the quickstart, tests and benchmarks.

The sets look like what users bring: numeric and text columns, column names with spaces, a few missing
values, and a target that depends on several columns (so gates pass for the right reason: there is signal).
Three variants cover the three tasks: churn (binary), plan tier (multiclass), monthly spend (regression).
"""

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

Kind = Literal["binary", "multiclass", "regression"]
KINDS: tuple[str, ...] = ("binary", "multiclass", "regression")
TARGETS: dict[str, str] = {"binary": "churned", "multiclass": "plan tier", "regression": "monthly spend"}
MISSING_RATIO = 0.03


def _features(rows: int, rng: np.random.Generator) -> pd.DataFrame:
    """The customer columns shared by every variant."""
    return pd.DataFrame({
        "tenure months": rng.integers(1, 73, rows).astype(float),
        "monthly charges": np.round(rng.gamma(4.0, 18.0, rows), 2),
        "support calls": rng.poisson(1.5, rows).astype(float),
        "contract type": rng.choice(["month-to-month", "one year", "two year"], rows, p=[0.5, 0.3, 0.2]),
        "payment method": rng.choice(["card", "bank transfer", "electronic check", "mailed check"], rows),
        "region": rng.choice(["north", "south", "east", "west"], rows),
    })


def _punch_holes(df: pd.DataFrame, rng: np.random.Generator, columns: list[str]) -> pd.DataFrame:
    """Blank out a few values per feature column, as real exports have."""
    for column in columns:
        mask = rng.random(len(df)) < MISSING_RATIO
        df[column] = df[column].mask(mask)
    return df


def make_sample(kind: Kind = "binary", rows: int = 2000, seed: int = 0) -> pd.DataFrame:
    """A frame with six feature columns and the target named in ``TARGETS[kind]``."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    rng = np.random.default_rng(seed)
    df = _features(rows, rng)
    contract = df["contract type"].map({"month-to-month": 1.0, "one year": 0.0, "two year": -1.0}).to_numpy()
    check = (df["payment method"] == "electronic check").to_numpy(dtype=float)
    tenure, charges, calls = (df[c].to_numpy() for c in ("tenure months", "monthly charges", "support calls"))
    score = 1.6 * contract - 0.05 * tenure + 0.015 * charges + 0.45 * calls + 0.8 * check - 0.3
    if kind == "binary":
        target = (rng.random(rows) < 1.0 / (1.0 + np.exp(-score))).astype(int)
    elif kind == "multiclass":
        spend = charges + 10 * calls + rng.normal(0, 8, rows)
        target = np.select([spend < 60, spend < 95], ["basic", "plus"], "premium")
    else:
        target = np.round(0.9 * charges + 6.0 * calls + 12.0 * contract + 0.2 * tenure + rng.normal(0, 4, rows), 2)
    df = _punch_holes(df, rng, [c for c in df.columns if c != "tenure months"])
    df[TARGETS[kind]] = target
    return df


def make_shifted_sample(kind: Kind = "binary", rows: int = 2000, seed: int = 0) -> pd.DataFrame:
    """The same customers a year later: higher charges, longer tenure. The inputs drift, the signal does not,
    so a retrain on this data should pass its gates (retrain tests and the demo rely on that)."""
    df = make_sample(kind, rows, seed)
    df["monthly charges"] = df["monthly charges"] + 25
    df["tenure months"] = df["tenure months"] + 12
    return df


def write_sample(path: Path, kind: Kind = "binary", rows: int = 2000, seed: int = 0) -> Path:
    """Write ``make_sample(...)`` as CSV (or parquet by suffix) and return the path."""
    df = make_sample(kind, rows, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        df.to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False)
    return path

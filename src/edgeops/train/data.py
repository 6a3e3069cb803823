"""Reading training tables and deciding what kind each column is.

The column-kind rule lives here once because validation, training and export must agree on it: a column is
*numeric* when pandas reads it as numbers (booleans count as 0/1) or when every value it holds parses as a
number; otherwise it is *categorical* (text). A text column that is *mostly* numbers is neither: it is
garbage in a numeric column, and the functions below name it with an example of a bad value.
"""

import hashlib
from pathlib import Path
from typing import Literal

import pandas as pd

from edgeops.errors import DataError

ColumnKind = Literal["numeric", "categorical"]
READ_CHUNK = 1 << 20


def load_table(path: Path) -> pd.DataFrame:
    """Read a .csv or .parquet file; any failure is a DataError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} does not exist", path=path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            df = pd.read_csv(path)
        elif suffix in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        else:
            raise DataError(f"data file {str(path)!r}: unsupported format {suffix or '(none)'!r} "
                            "(use .csv or .parquet)", path=path)
    except DataError:
        raise
    except (ValueError, OSError, UnicodeDecodeError, ImportError, pd.errors.ParserError) as exc:
        raise DataError(f"cannot read data file {str(path)!r}: {exc}", path=path) from exc
    if df.shape[1] == 0 or df.shape[0] == 0:
        raise DataError(f"data file {str(path)!r} holds no rows or no columns", path=path)
    return with_text_columns(df, f"data file {str(path)!r}")


def with_text_columns(df: pd.DataFrame, what: str = "the data") -> pd.DataFrame:
    """``df`` with every column name as text (frames built in code may use numbers); duplicates are an error,
    because a column name is how the model, the manifest and the device address a value."""
    names = [str(c) for c in df.columns]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise DataError(f"{what} has duplicate column names: {dupes[:5]}")
    if all(isinstance(c, str) for c in df.columns):
        return df
    out = df.copy()
    out.columns = names
    return out


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in chunks (training files may be large); for the release lineage."""
    digest = hashlib.sha256()
    try:
        with Path(path).open("rb") as fh:
            while chunk := fh.read(READ_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise DataError(f"cannot read data file {str(path)!r}: {exc.strerror or exc}", path=path) from exc
    return digest.hexdigest()


def frame_sha256(df: pd.DataFrame) -> str:
    """sha256 of a DataFrame's content (columns and values), for lineage when the data came from memory."""
    digest = hashlib.sha256("\x1f".join(map(str, df.columns)).encode("utf-8"))
    digest.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def numeric_garbage(series: pd.Series, parse_ratio: float) -> tuple[str, int] | None:
    """For a text column that is mostly numbers: (an example bad value, how many values are bad), else None.

    "Mostly" means at least ``parse_ratio`` of the non-missing values parse as numbers but not all of them,
    the typical sign of a typo or a sentinel like "n/a" or "12,5" in a numeric column."""
    if column_is_numeric_dtype(series):
        return None
    present = series.dropna()
    if present.empty:
        return None
    parsed = pd.to_numeric(present.astype(str), errors="coerce")
    good = int(parsed.notna().sum())
    bad_values = present[parsed.isna()]
    if good == len(present) or good / len(present) < parse_ratio:
        return None
    return str(bad_values.iloc[0]), len(bad_values)


def column_is_numeric_dtype(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)


def column_kind(series: pd.Series) -> ColumnKind:
    """numeric or categorical, by the rule in the module docstring (garbage counts as categorical here)."""
    if column_is_numeric_dtype(series):
        return "numeric"
    present = series.dropna()
    if not present.empty and pd.to_numeric(present.astype(str), errors="coerce").notna().all():
        return "numeric"
    return "categorical"


def as_numeric(series: pd.Series) -> pd.Series:
    """A numeric column as float64 with NaN for missing (booleans as 0/1, numeric text parsed)."""
    return pd.to_numeric(series.astype(object).where(series.notna(), None), errors="coerce").astype("float64")


def as_text(series: pd.Series) -> pd.Series:
    """A categorical column as Python strings (object dtype) with None for missing."""
    values = [None if _is_missing(v) else str(v) for v in series.tolist()]
    return pd.Series(values, index=series.index, dtype=object, name=series.name)


def _is_missing(value: object) -> bool:
    return value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and value != value)


def check_columns(df: pd.DataFrame, target: str, parse_ratio: float) -> None:
    """Problems that make training impossible, as one-line DataErrors (validation reports them as findings).

    Checked: the target exists, has no missing values and more than one value; no feature is all missing;
    no numeric column holds garbage text; there is at least one feature."""
    if target not in df.columns:
        raise DataError(f"target column {target!r} is not in the data (columns: {describe_columns(df)})",
                        column=target)
    if df.shape[1] < 2:
        raise DataError("the data has no feature columns besides the target", column=target)
    y = df[target]
    if y.isna().any():
        raise DataError(f"target column {target!r} has {int(y.isna().sum())} missing values", column=target)
    if y.nunique() < 2:
        raise DataError(f"target column {target!r} has a single value {y.iloc[0]!r}: nothing to learn",
                        column=target)
    for col in df.columns:
        if col != target and df[col].isna().all():
            raise DataError(f"column {col!r} is entirely missing (all NaN)", column=col)
        garbage = numeric_garbage(df[col], parse_ratio)
        if garbage is not None:
            raise DataError(f"column {col!r} is numeric but holds {garbage[1]} non-numeric value(s), "
                            f"e.g. {garbage[0]!r}", column=col)


def describe_columns(df: pd.DataFrame, limit: int = 10) -> str:
    """The first ``limit`` column names, quoted, for messages that say which columns a table does have."""
    cols = [repr(c) for c in df.columns[:limit]]
    return ", ".join(cols) + (", ..." if df.shape[1] > limit else "")


__all__ = ["ColumnKind", "as_numeric", "as_text", "check_columns", "column_kind", "describe_columns",
           "file_sha256", "frame_sha256", "load_table", "numeric_garbage", "with_text_columns"]

"""Reading tables, file hashes, the column-kind rule, and one-line DataErrors for unusable data."""

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edgeops.errors import DataError, EdgeopsError
from edgeops.train.data import (
    as_numeric,
    as_text,
    check_columns,
    column_kind,
    file_sha256,
    frame_sha256,
    load_table,
    numeric_garbage,
)

pytestmark = pytest.mark.unit


def small_frame() -> pd.DataFrame:
    return pd.DataFrame({"size m²": [1.5, 2.0, None, 4.0], "colour/name": ["red", None, "blue", "red"],
                         "label": ["yes", "no", "yes", "no"]})


def test_load_csv_and_parquet_give_the_same_frame(tmp_path: Path) -> None:
    df = small_frame()
    df.to_csv(tmp_path / "d.csv", index=False)
    df.to_parquet(tmp_path / "d.parquet", index=False)
    from_csv, from_parquet = load_table(tmp_path / "d.csv"), load_table(tmp_path / "d.parquet")
    assert list(from_csv.columns) == list(df.columns) == list(from_parquet.columns)
    assert from_csv["size m²"].isna().sum() == 1 and from_csv["colour/name"].isna().sum() == 1
    pd.testing.assert_frame_equal(from_csv.astype(object), from_parquet.astype(object), check_dtype=False)


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.csv' does not exist"):
        load_table(tmp_path / "nope.csv")


@pytest.mark.parametrize(("name", "content", "words"), [
    ("bad.csv", b'a,b\n1,"unterminated\n', "cannot read data file"),
    ("bin.parquet", b"\x00\x01 not parquet at all", "cannot read data file"),
    ("empty.csv", b"", "cannot read data file"),
    ("header.csv", b"a,b\n", "holds no rows"),
    ("data.xlsx", b"whatever", "unsupported format '.xlsx'"),
])
def test_unreadable_files_give_one_line_errors(tmp_path: Path, name: str, content: bytes, words: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as info:
        load_table(path)
    assert words in str(info.value) and name in str(info.value)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, EdgeopsError)


def test_file_sha256_is_the_sha256_of_the_bytes(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    data = np.random.default_rng(0).bytes(3_000_000)
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
    with pytest.raises(DataError):
        file_sha256(tmp_path / "missing.bin")


def test_frame_sha256_depends_on_content_only() -> None:
    df = small_frame()
    assert frame_sha256(df) == frame_sha256(df.copy())
    changed = df.copy()
    changed.loc[0, "size m²"] = 9.0
    assert frame_sha256(changed) != frame_sha256(df)


def test_column_kinds() -> None:
    assert column_kind(pd.Series([1, 2, 3])) == "numeric"
    assert column_kind(pd.Series([1.0, None])) == "numeric"
    assert column_kind(pd.Series([True, False])) == "numeric"
    assert column_kind(pd.Series(["1", "2.5", None])) == "numeric"  # text that is all numbers
    assert column_kind(pd.Series(["a", "b", None])) == "categorical"
    assert column_kind(pd.Series(["1", "2", "n/a"])) == "categorical"


def test_numeric_garbage_finds_an_example_bad_value() -> None:
    s = pd.Series(["1.5", "2", "3", "4", "5", "n/a", None])
    assert numeric_garbage(s, 0.8) == ("n/a", 1)
    assert numeric_garbage(pd.Series(["a", "b", "1"]), 0.8) is None  # mostly text: a real category column
    assert numeric_garbage(pd.Series([1.0, 2.0]), 0.8) is None
    assert numeric_garbage(pd.Series(["1", "2"]), 0.8) is None


def test_conversions() -> None:
    assert as_numeric(pd.Series(["1", None, "2.5"])).tolist()[::2] == [1.0, 2.5]
    assert np.isnan(as_numeric(pd.Series(["1", None])).iloc[1])
    assert as_text(pd.Series([1, None, "x"], dtype=object)).tolist() == ["1", None, "x"]


def with_target(**columns: list) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    return pd.DataFrame({**columns, "y": (["a", "b"] * n)[:n]})


@pytest.mark.parametrize(("df", "target", "words"), [
    (with_target(x=[1, 2, 3]), "label", "target column 'label' is not in the data"),
    (pd.DataFrame({"x": [1, 2], "y": ["a", "a"]}), "y", "target column 'y' has a single value"),
    (pd.DataFrame({"x": [1, 2], "y": ["a", None]}), "y", "target column 'y' has 1 missing values"),
    (with_target(x=[1, 2], empty=[None, None]), "y", "column 'empty' is entirely missing"),
    (with_target(**{"price €": ["1", "2", "3", "4", "5", "oops"]}), "y",
     "column 'price €' is numeric but holds 1 non-numeric value(s), e.g. 'oops'"),
    (pd.DataFrame({"y": ["a", "b"]}), "y", "no feature columns"),
])
def test_check_columns_names_the_problem(df: pd.DataFrame, target: str, words: str) -> None:
    with pytest.raises(DataError) as info:
        check_columns(df, target, 0.8)
    assert words in str(info.value)


def test_check_columns_accepts_good_data() -> None:
    check_columns(small_frame(), "label", 0.8)


def test_column_names_become_text_and_duplicates_are_refused(tmp_path: Path) -> None:
    from edgeops.train.data import with_text_columns

    df = pd.DataFrame([[1, 2, "a"]], columns=[0, 1.5, "y"])
    assert list(with_text_columns(df).columns) == ["0", "1.5", "y"]
    assert list(df.columns) == [0, 1.5, "y"]  # the caller's frame is untouched
    with pytest.raises(DataError, match=r"duplicate column names: \['1'\]"):
        with_text_columns(pd.DataFrame([[1, 2]], columns=[1, "1"]))
    (tmp_path / "dup.csv").write_text("a,a,b\n1,2,3\n", encoding="utf-8")
    assert list(load_table(tmp_path / "dup.csv").columns) == ["a", "a.1", "b"]  # pandas renames on read

"""A model's training data from its source: a file, the newest file of a folder or of a glob (local, or under an
S3 prefix: datasource_s3.py), or a SQL query.

The pipeline reads files (its lineage is the file's sha256), so a query's result is written to a parquet file
in a temporary folder first; ``materialized`` removes it when the run is over. "Newest" is by modification
time, then name, among .csv/.parquet files: where an export job drops a fresh extract. A glob is per model
(``data/churn-*.csv``), so a fresher file of another model in the same folder is never picked.
"""

import glob
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgeops.config import S3Config
from edgeops.config.control import DATA_SUFFIXES, ModelSource
from edgeops.errors import ConfigError, DataError

GLOB_CHARS = frozenset("*?[")


def is_glob(spec: str) -> bool:
    return any(c in GLOB_CHARS for c in spec)


def newest_data(spec: str | Path) -> Path:
    """A file as it is; a folder's or a glob's newest .csv/.parquet file. DataError names what was looked at."""
    text = str(spec)
    if is_glob(text):
        files = [Path(p) for p in glob.glob(text, recursive=True)]
        where = f"the glob {text!r}"
    else:
        path = Path(text)
        if path.is_file():
            return path
        if not path.is_dir():
            raise DataError(f"data not found: {text!r} is neither a file, a folder nor a glob")
        files = list(path.iterdir())
        where = f"the data directory {text!r}"
    files = [p for p in files if p.is_file() and p.suffix.lower() in DATA_SUFFIXES]
    if not files:
        raise DataError(f"no .csv or .parquet file in {where}")
    return max(files, key=lambda p: (p.stat().st_mtime_ns, p.name))


def query_to_parquet(source: ModelSource, database_url: str, out: Path) -> Path:
    """Run ``source.sql`` with SQLAlchemy and write the result to ``out`` (parquet keeps the column types)."""
    import pandas as pd
    import sqlalchemy

    assert source.sql is not None
    try:
        engine = sqlalchemy.create_engine(database_url)
    except (sqlalchemy.exc.ArgumentError, ImportError) as exc:
        raise ConfigError("database_url", f"not a usable SQLAlchemy URL: {type(exc).__name__}: {exc}") from None
    try:
        with engine.connect() as conn:
            df = pd.read_sql_query(sqlalchemy.text(source.sql), conn)
    except (sqlalchemy.exc.SQLAlchemyError, pd.errors.DatabaseError) as exc:
        # str(exc) of a connection error can quote the URL: name the query and the driver's own reason only
        cause = exc.__cause__ if isinstance(exc, pd.errors.DatabaseError) else exc
        reason = str(getattr(cause, "orig", None) or type(cause).__name__).splitlines()[0]
        raise DataError(f"the query of {source.describe()} failed: {reason}") from None
    finally:
        engine.dispose()
    if df.empty:
        raise DataError(f"the query of {source.describe()} returned no rows")
    df.to_parquet(out, index=False)
    return out


@contextmanager
def materialized(source: ModelSource, database_url: str | None = None, s3: S3Config | None = None
                 ) -> Iterator[Path]:
    """The source as a file for the pipeline: a file as it is, the newest of a folder or glob, or (in a temporary
    folder removed on exit) the newest object of an ``s3://`` prefix or glob, or a query's result as parquet.
    ``database_url`` is the resolved URL for ``sql``; ``s3`` the endpoint settings (the registry's)."""
    if source.sql is None:
        if source.data is None:
            raise ConfigError("data", "a data source needs data (a file, folder or glob) or sql")
        if source.data.startswith("s3://"):
            from edgeops.train.datasource_s3 import download_newest

            with tempfile.TemporaryDirectory(prefix="edgeops-s3-") as tmp:
                yield download_newest(source.data, s3 or S3Config(), Path(tmp))
            return
        yield newest_data(source.data)
        return
    if database_url is None:
        raise ConfigError("database_url", f"no database URL for {source.describe()}")
    with tempfile.TemporaryDirectory(prefix="edgeops-sql-") as tmp:
        yield query_to_parquet(source, database_url, Path(tmp) / "query.parquet")


__all__ = ["is_glob", "materialized", "newest_data", "query_to_parquet"]

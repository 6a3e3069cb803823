"""A model's training data under an S3 prefix: ``s3://bucket/exports/churn-*.csv``, where an export job drops
fresh extracts that workers on any machine can read (they share no disk, only the object store).

The same rules as a local glob or folder (datasource.py): the newest .csv/.parquet object by LastModified, then
key, is the data; a glob is per model, so another model's fresher extract under the same prefix is never
picked. It is downloaded into the run's temporary folder because the pipeline hashes a file for its lineage.
``*`` may cross ``/`` (S3 has no folders; fnmatch semantics). The endpoint, region and addressing style are the
registry's (``registry.s3`` in edgeops.yaml, AWS_ENDPOINT_URL wins), credentials boto3's usual ones.
"""

import fnmatch
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from edgeops.config import S3Config
from edgeops.config.control import DATA_SUFFIXES
from edgeops.errors import DataError, RegistryError
from edgeops.release.registry_s3 import S3Store

GLOB_CHARS = "*?["


def split_s3_spec(url: str) -> tuple[str, str, str | None]:
    """``s3://bucket/a/b-*.csv`` → ("bucket", "a/b-", "a/b-*.csv"); without a glob the pattern is None and the
    key names an object or a "folder" (``s3://bucket/a/`` or ``s3://bucket/a``)."""
    rest = url.removeprefix("s3://")
    bucket, _, key = rest.partition("/")
    if not url.startswith("s3://") or not bucket:
        raise DataError(f"data {url!r}: expected s3://bucket/prefix, s3://bucket/key or s3://bucket/glob")
    first = min((i for i in (key.find(c) for c in GLOB_CHARS) if i >= 0), default=-1)
    if first < 0:
        return bucket, key, None
    return bucket, key[:first], key


def newest_s3_key(url: str, options: S3Config, client: Any = None) -> tuple[str, str]:
    """The bucket and key of the data ``url`` names (see the module doc); DataError names what was looked at."""
    bucket, prefix, pattern = split_s3_spec(url)
    s3 = client if client is not None else S3Store(f"s3://{bucket}", options).client
    objects = _list(s3, bucket, prefix, url)
    if pattern is None:
        exact = [o for o in objects if o["Key"] == prefix]
        if exact:
            return bucket, prefix
        folder = prefix.rstrip("/") + "/" if prefix else ""
        # a folder's own files, not those of its subfolders: as a local folder is read
        candidates = [o for o in objects if o["Key"].startswith(folder) and "/" not in o["Key"][len(folder):]]
        where = f"the S3 folder {url!r}"
    else:
        candidates = [o for o in objects if fnmatch.fnmatchcase(o["Key"], pattern)]
        where = f"the S3 glob {url!r}"
    candidates = [o for o in candidates if Path(o["Key"]).suffix.lower() in DATA_SUFFIXES]
    if not candidates:
        raise DataError(f"no .csv or .parquet object in {where}")
    newest = max(candidates, key=lambda o: (o["LastModified"], o["Key"]))
    return bucket, str(newest["Key"])


def download_newest(url: str, options: S3Config, folder: Path) -> Path:
    """The newest object ``url`` names, downloaded into ``folder`` under its own file name."""
    try:
        s3 = S3Store(f"s3://{split_s3_spec(url)[0]}", options).client
    except RegistryError as exc:
        raise DataError(f"cannot read {url}: {exc}") from None
    bucket, key = newest_s3_key(url, options, s3)
    out = folder / Path(key).name
    try:
        s3.download_file(bucket, key, str(out))
    except (BotoCoreError, ClientError) as exc:
        raise DataError(f"cannot download s3://{bucket}/{key}: {exc}") from None
    return out


def _list(s3: Any, bucket: str, prefix: str, url: str) -> list[dict[str, Any]]:
    try:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [item for page in pages for item in page.get("Contents", [])]
    except (BotoCoreError, ClientError) as exc:
        raise DataError(f"cannot list {url}: {exc}") from None


__all__ = ["download_newest", "newest_s3_key", "split_s3_spec"]

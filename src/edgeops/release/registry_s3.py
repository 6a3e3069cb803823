"""The registry on S3 or an S3-compatible server (SeaweedFS, MinIO, Ceph), through boto3.

Why conditional writes: writers on several machines share nothing but the bucket, and S3 itself can decide
"first writer wins" atomically. ``PutObject`` with ``If-None-Match: *`` creates a key only when it is absent
(AWS since 2024-08; the losers get 412 Precondition Failed, or 409 when two requests race in flight), and with
``If-Match: <ETag>`` replaces it only when it still holds what was read (AWS since 2024-11). The registry builds
version claims and alias compare-and-swap on those two, so no lock service and no database are needed. A server
that ignores the conditions would let two writers take one version: tests/unit/test_registry.py runs the
concurrency tests against a real SeaweedFS, which enforces them.

Configuration is boto3's own (environment, profiles, instance roles) plus ``registry.s3`` in edgeops.yaml for
the endpoint, region, profile and addressing style; never a secret.
"""

import os
from collections.abc import Callable, Iterator
from typing import Any, Literal, TypeVar, cast

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from edgeops.config import S3Config
from edgeops.errors import RegistryError
from edgeops.release.registry_store import Stored, check_key

_LOST_RACE = {"PreconditionFailed", "ConditionalRequestConflict"}   # 412, and 409 for a conditional write in flight
_MISSING = {"NoSuchKey", "404", "NotFound"}
T = TypeVar("T")
_Addressing = Literal["auto", "virtual", "path"]   # botocore's; config.py checks it is one of them


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` → ("bucket", "some/prefix/"); the prefix may be empty."""
    rest = url.removeprefix("s3://")
    bucket, _, prefix = rest.partition("/")
    prefix = prefix.strip("/")
    if not bucket or any(p in ("", ".", "..") for p in prefix.split("/") if prefix):
        raise RegistryError(f"registry root {url!r}: expected s3://bucket or s3://bucket/prefix")
    return bucket, f"{prefix}/" if prefix else ""


class S3Store:
    """Objects under ``s3://bucket/prefix/``. The boto3 client is made on first use and dropped when pickled
    (a ReleaseRecord may travel as a Prefect result), so the store is cheap to create and to copy."""

    def __init__(self, url: str, options: S3Config) -> None:
        self.url = url.rstrip("/")
        self.bucket, self.prefix = parse_s3_url(url)
        self.options = options
        self._client: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None}

    @property
    def client(self) -> Any:
        if self._client is None:
            opts = self.options
            # AWS_ENDPOINT_URL (or AWS_ENDPOINT_URL_S3) wins over edgeops.yaml, as the environment does elsewhere.
            env_endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
            try:
                session = boto3.session.Session(profile_name=opts.profile, region_name=opts.region)
                self._client = session.client(
                    "s3", endpoint_url=None if env_endpoint else opts.endpoint_url,
                    config=Config(s3={"addressing_style": cast(_Addressing, opts.addressing_style)}, connect_timeout=10,
                                  read_timeout=60, retries={"mode": "standard", "max_attempts": 5}))
            except BotoCoreError as exc:
                raise RegistryError(f"cannot use the registry at {self.url}: {exc}") from exc
        return self._client

    def where(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"

    def local_path(self, key: str) -> None:
        return None

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def read(self, key: str) -> Stored | None:
        def get() -> Stored:
            got = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            with got["Body"] as body:
                return Stored(body.read(), got["ETag"])

        try:
            return self._call(key, get)
        except _Missing:
            return None

    def write(self, key: str, data: bytes) -> None:
        self._call(key, lambda: self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data))

    def swap(self, key: str, data: bytes, token: str | None) -> bool:
        condition = {"IfNoneMatch": "*"} if token is None else {"IfMatch": token}
        try:
            self._call(key, lambda: self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data,
                                                           **condition))
        except (_LostRace, _Missing):   # If-Match on a key deleted meanwhile answers 404
            return False
        return True

    def keys(self, prefix: str) -> list[str]:
        return sorted(self._list(prefix, delimiter=False))

    def children(self, prefix: str) -> list[str]:
        return sorted(name.rstrip("/").rpartition("/")[2] for name in self._list(prefix, delimiter=True))

    def _list(self, prefix: str, *, delimiter: bool) -> Iterator[str]:
        full = self.prefix + prefix
        extra = {"Delimiter": "/"} if delimiter else {}

        def pages() -> list[dict[str, Any]]:
            paginator = self.client.get_paginator("list_objects_v2")
            return list(paginator.paginate(Bucket=self.bucket, Prefix=full, **extra))

        for page in self._call(prefix, pages):
            items = page.get("CommonPrefixes", []) if delimiter else page.get("Contents", [])
            for item in items:
                yield (item["Prefix"] if delimiter else item["Key"])[len(self.prefix):]

    def _call(self, key: str, action: Callable[[], T]) -> T:
        """Run one S3 request; every failure but "absent" and "lost the race" is a RegistryError naming the key."""
        try:
            return action()
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code in _LOST_RACE:
                raise _LostRace from exc
            if code in _MISSING:
                raise _Missing from exc
            if code == "NoSuchBucket":
                raise RegistryError(f"the bucket of the registry at {self.url} does not exist: create it first "
                                    f"(aws s3 mb s3://{self.bucket})") from exc
            raise RegistryError(f"S3 refused {self.where(key)}: {code} {error.get('Message', '')}".rstrip()) from exc
        except BotoCoreError as exc:   # endpoint unreachable, no credentials, ...
            raise RegistryError(f"cannot reach the registry at {self.url}: {exc}") from exc


class _LostRace(Exception):
    pass


class _Missing(Exception):
    pass


__all__ = ["S3Store", "parse_s3_url"]

"""Where the registry's bytes live: one small interface, with a local folder and S3 behind it.

The registry (registry.py) asks its storage for five things and nothing else, so that version allocation,
aliases and verification are written once: read an object with a token naming its current content, replace an
object whole, *create* an object only when it is absent, *swap* an object only when its token is unchanged
(compare-and-swap), and list keys. A folder gives them with an fsynced temp file plus ``rename`` (replace),
``link`` (create: fails when the name exists) and an ``fcntl`` lock around compare-and-swap; S3 gives them
with conditional writes (``If-None-Match: *`` and ``If-Match: <ETag>``, registry_s3.py). Neither needs a
lock service, so writers on several machines can share an S3 registry.

Keys are ``/``-separated relative names (``models/churn/3/manifest.json``); the store maps them to files or
objects under its root.
"""

import contextlib
import fcntl
import hashlib
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from edge_agent.durable import atomic_write, fsync_dir, write_synced
from edgeops.errors import RegistryError

STALE_TMP_S = 3600.0
"""A temp file older than this belongs to a writer that died (a live one finishes within seconds): swept."""


@dataclass(frozen=True)
class Stored:
    """An object's bytes and the token a compare-and-swap must name to replace exactly this content."""

    data: bytes
    token: str


class ObjectStore(Protocol):
    """What the registry needs of its storage (implementations: LocalStore, registry_s3.S3Store)."""

    def where(self, key: str = "") -> str:
        """Where ``key`` lives, for messages: a file path or an ``s3://`` URL."""
        ...

    def local_path(self, key: str) -> Path | None:
        """The file holding ``key`` when the store is a local folder, else None."""
        ...

    def read(self, key: str) -> Stored | None:
        """The object, or None when there is none."""
        ...

    def write(self, key: str, data: bytes) -> None:
        """Replace (or create) the object whole: readers see the old bytes or the new, never a mix."""
        ...

    def swap(self, key: str, data: bytes, token: str | None) -> bool:
        """Write only if the object is unchanged since it was read with ``token`` (None: only if it does not
        exist). False when another writer got there first: nothing was written."""
        ...

    def keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (a folder-like prefix ending in ``/``), at any depth."""
        ...

    def children(self, prefix: str) -> list[str]:
        """The names one level below ``prefix`` that hold objects (``models/`` → model names)."""
        ...


def check_key(key: str) -> str:
    """Keys come from validated names; this is the last line against a path that leaves the root."""
    parts = key.split("/")
    if not key or any(p in ("", ".", "..") for p in parts):
        raise RegistryError(f"bad registry key {key!r}")
    return key


def content_token(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class LocalStore:
    """The registry as a folder. Temp files go to ``tmp/`` on the same file system; a writer killed mid-write
    leaves one there, which a later writer sweeps once it is old enough not to be anyone's work in progress."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._ready = False

    def where(self, key: str = "") -> str:
        return str(self.root / key) if key else str(self.root)

    def local_path(self, key: str) -> Path | None:
        return self.root / check_key(key)

    def read(self, key: str) -> Stored | None:
        try:
            data = (self.root / check_key(key)).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except OSError as exc:
            raise RegistryError(f"cannot read {self.where(key)}: {exc.strerror or exc}") from exc
        return Stored(data, content_token(data))

    def write(self, key: str, data: bytes) -> None:
        path = self._prepare(key)
        try:
            atomic_write(path, data, tmp=self._tmp_name())
        except OSError as exc:
            raise RegistryError(f"cannot write {path}: {exc.strerror or exc}") from exc

    def swap(self, key: str, data: bytes, token: str | None) -> bool:
        path = self._prepare(key)
        try:
            if token is None:
                return self._create(path, data)
            with self._locked():
                current = self.read(key)
                if current is None or current.token != token:
                    return False
                atomic_write(path, data, tmp=self._tmp_name())
                return True
        except OSError as exc:
            raise RegistryError(f"cannot write {path}: {exc.strerror or exc}") from exc

    def _create(self, path: Path, data: bytes) -> bool:
        """``link`` publishes a complete, fsynced file under its name, or fails when the name is taken."""
        tmp = self._tmp_name()
        write_synced(tmp, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(path.parent)
        return True

    def keys(self, prefix: str) -> list[str]:
        base = self.root / prefix
        if not base.is_dir():
            return []
        found: list[str] = []
        for folder, _dirs, files in os.walk(base):
            found.extend((Path(folder) / name).relative_to(self.root).as_posix() for name in files)
        return sorted(found)

    def children(self, prefix: str) -> list[str]:
        base = self.root / prefix
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if p.is_dir())

    # -- local mechanics ---------------------------------------------------------------------------------
    def _prepare(self, key: str) -> Path:
        path = self.root / check_key(key)
        try:
            if not self._ready:
                (self.root / "tmp").mkdir(parents=True, exist_ok=True)
                self._sweep_tmp()
                self._ready = True
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RegistryError(f"cannot write the registry at {self.root}: {exc.strerror or exc}") from exc
        return path

    def _tmp_name(self) -> Path:
        return self.root / "tmp" / f"{uuid.uuid4().hex}.tmp"

    def _sweep_tmp(self) -> None:
        cutoff = time.time() - STALE_TMP_S
        for leftover in (self.root / "tmp").iterdir():
            with contextlib.suppress(OSError):
                if leftover.lstat().st_mtime >= cutoff:
                    continue
                if leftover.is_dir():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Compare-and-swap on a folder: the compare and the rename under one exclusive lock, across processes."""
        with open(self.root / ".lock", "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


__all__ = ["STALE_TMP_S", "LocalStore", "ObjectStore", "Stored", "check_key", "content_token"]

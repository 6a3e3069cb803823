"""A local, content-addressed model registry with monotonic versions, aliases and atomic writes.

Layout under ``root`` (default ``.edgeops/registry``)::

    .lock                                   fcntl lock: one writer at a time, across processes
    blobs/sha256/<hex>                      ONNX artifacts, stored once by content
    models/<model>/<version>/manifest.json  canonical JSON of the (signed) manifest
    models/<model>/<version>/record.json    status, created, report (validation, gates, parity)
    models/<model>/<version>/<extra files>  e.g. sample.parquet: training rows the next run checks drift against
    models/<model>/aliases.json             {"champion": 3, "candidate": 4}
    tmp/                                    versions being written (swept by the next writer after a crash)

A version directory is assembled under ``tmp/``, fsynced, then renamed into place, so readers see a version
complete or not at all, and a crash leaves only litter in ``tmp/``. Version numbers are allocated under the
lock, so concurrent pipeline runs get distinct, consecutive numbers. Rejected candidates get a number too
(their reasons stay inspectable) but can never take an alias.
"""

import fcntl
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from edge_agent.durable import atomic_write, fsync_dir, write_synced
from edge_agent.protocol import ProtocolError, ReleaseManifest, check_name, sha256_hex

from .errors import RegistryError

Status = Literal["registered", "rejected"]
STATUSES: tuple[str, ...] = ("registered", "rejected")
CHAMPION = "champion"
CANDIDATE = "candidate"
LATEST = "latest"
SAMPLE_FILE = "sample.parquet"
_RESERVED_FILES = {"manifest.json", "record.json"}

Build = Callable[[int], tuple[ReleaseManifest, bytes]]


@dataclass(frozen=True)
class ReleaseRecord:
    """One registered version as stored: manifest, where its ONNX is, and the run's report."""

    model: str
    version: int
    status: Status
    manifest: ReleaseManifest
    onnx_path: Path
    report: dict[str, Any]
    aliases: tuple[str, ...]
    path: Path = field(default=Path())
    created: str = ""

    @property
    def ref(self) -> str:
        return f"{self.model}@{self.version}"

    def onnx_bytes(self) -> bytes:
        return self.onnx_path.read_bytes()

    def file(self, name: str) -> Path | None:
        """An extra file stored with this version (e.g. ``sample.parquet``), or None."""
        path = self.path / name
        return path if path.is_file() else None

    def summary(self) -> dict[str, Any]:
        """What ``models list/show --json`` prints: JSON-safe, stable keys."""
        return {"model": self.model, "version": self.version, "ref": self.ref, "status": self.status,
                "aliases": list(self.aliases), "created": self.created, "metrics": self.manifest.metrics,
                "sha256": self.manifest.artifact.sha256, "size": self.manifest.artifact.size,
                "task": self.manifest.outputs.task, "signed": self.manifest.signature is not None,
                "key_id": None if self.manifest.signature is None else self.manifest.signature.key_id,
                "lineage": self.manifest.lineage.to_json(), "reasons": self.report.get("reasons", []),
                "onnx_path": str(self.onnx_path)}


_VERSION_REF = re.compile(r"[0-9]{1,10}")


def is_version_ref(ref: str) -> bool:
    """Whether a reference names a version number: 1-10 ASCII digits, a full match (``str.isdigit`` also takes
    '²', which ``int`` then refuses with a crash, and '٣', which it reads as 3)."""
    return _VERSION_REF.fullmatch(ref) is not None


def parse_ref(text: str) -> tuple[str, str | None]:
    """Split ``churn@3`` / ``churn@champion`` / ``churn`` into (model, ref or None)."""
    model, sep, ref = text.partition("@")
    try:
        check_name(model, "model")
    except ProtocolError as exc:
        raise RegistryError(f"bad model reference {text!r}: {exc.reason}") from None
    if sep and not ref:
        raise RegistryError(f"bad model reference {text!r}: nothing after '@'")
    return model, (ref if sep else None)


def _check_alias(alias: str) -> str:
    try:
        check_name(alias, "alias")
    except ProtocolError as exc:
        raise RegistryError(exc.reason) from None
    if is_version_ref(alias) or alias == LATEST:
        raise RegistryError(f"{alias!r} cannot be an alias (it reads as a version)")
    return alias


class Registry:
    """The registry rooted at ``root``; cheap to construct, safe to share between processes."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- paths -------------------------------------------------------------------------------------------
    def _model_dir(self, model: str) -> Path:
        return self.root / "models" / check_name(model, "model")

    def _blob_path(self, sha256: str) -> Path:
        return self.root / "blobs" / "sha256" / sha256

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive lock across processes; creates the registry skeleton on first write."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            for sub in ("models", "blobs/sha256", "tmp"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            fh = open(self.root / ".lock", "a+b")  # noqa: SIM115 - held for the with-block below
        except OSError as exc:
            raise RegistryError(f"cannot write the registry at {self.root}: {exc.strerror or exc}") from exc
        with fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                self._sweep_tmp()
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _sweep_tmp(self) -> None:
        """Remove what a killed writer left in tmp/: only lock holders write there, and we hold the lock."""
        for leftover in (self.root / "tmp").iterdir():
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)

    # -- writing -----------------------------------------------------------------------------------------
    def register(self, model: str, build: Build, *, status: Status = "registered",
                 report: Mapping[str, Any] | None = None, files: Mapping[str, bytes] | None = None) -> ReleaseRecord:
        """Allocate the next version, call ``build(version)`` for (manifest, onnx bytes), store both atomically.

        ``build`` runs under the lock so that the version it bakes into the manifest (and signs) is the one
        stored. A "registered" release must be signed; a "rejected" one is kept for inspection only.
        """
        check_name(model, "model")
        if status not in STATUSES:
            raise RegistryError(f"status {status!r} is not one of {STATUSES}")
        extra = dict(files or {})
        if bad := sorted(set(extra) & _RESERVED_FILES | {n for n in extra if "/" in n or n.startswith(".")}):
            raise RegistryError(f"cannot store extra files named {bad}")
        with self._locked():
            version = self._next_version(model)
            manifest, onnx = build(version)
            self._check_built(model, version, status, manifest, onnx)
            record = {"model": model, "version": version, "status": status,
                      "created": datetime.now(UTC).isoformat(timespec="seconds"),
                      "report": dict(report or {})}
            self._store_blob(manifest.artifact.sha256, onnx)
            self._commit_version(model, version, manifest, record, extra)
        return self.get(model, version)

    def _next_version(self, model: str) -> int:
        existing = self._version_numbers(model)
        return (existing[-1] if existing else 0) + 1

    @staticmethod
    def _check_built(model: str, version: int, status: str, manifest: ReleaseManifest, onnx: bytes) -> None:
        if (manifest.name, manifest.version) != (model, version):
            raise RegistryError(f"build returned {manifest.name}@{manifest.version}, expected {model}@{version}")
        if sha256_hex(onnx) != manifest.artifact.sha256 or len(onnx) != manifest.artifact.size:
            raise RegistryError(f"{model}@{version}: ONNX bytes do not match the manifest's sha256/size")
        if status == "registered" and manifest.signature is None:
            raise RegistryError(f"{model}@{version}: a registered release must be signed")

    def _store_blob(self, sha256: str, data: bytes) -> None:
        blob = self._blob_path(sha256)
        if blob.exists():
            return
        atomic_write(blob, data, tmp=self.root / "tmp" / f"blob-{uuid.uuid4().hex}")

    def _commit_version(self, model: str, version: int, manifest: ReleaseManifest, record: dict[str, Any],
                        extra: Mapping[str, bytes]) -> None:
        staging = self.root / "tmp" / f"{model}-{version}-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            write_synced(staging / "manifest.json", manifest.to_bytes())
            write_synced(staging / "record.json", json.dumps(record, indent=2, sort_keys=True).encode())
            for name, data in extra.items():
                write_synced(staging / name, data)
            fsync_dir(staging)
            model_dir = self._model_dir(model)
            model_dir.mkdir(parents=True, exist_ok=True)
            os.rename(staging, model_dir / str(version))
            fsync_dir(model_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def promote(self, model: str, version: int, alias: str = CHAMPION, *, only_if_unset: bool = False) -> ReleaseRecord:
        """Point ``alias`` at ``version``. Rejected versions can never be promoted.

        ``only_if_unset`` leaves an existing alias alone, decided under the lock, so that of two first runs
        racing each other exactly one becomes the champion.
        """
        _check_alias(alias)
        with self._locked():
            record = self.get(model, version)
            if record.status != "registered":
                reasons = "; ".join(record.report.get("reasons", [])) or "no reason recorded"
                raise RegistryError(f"{record.ref} was rejected ({reasons}) and cannot be promoted")
            aliases = self._aliases(model)
            if not (only_if_unset and alias in aliases):
                aliases[alias] = version
                self._write_aliases(model, aliases)
        return self.get(model, version)

    def _write_aliases(self, model: str, aliases: dict[str, int]) -> None:
        path = self._model_dir(model) / "aliases.json"
        atomic_write(path, json.dumps(aliases, indent=2, sort_keys=True).encode(),
                     tmp=self.root / "tmp" / f"aliases-{uuid.uuid4().hex}")

    # -- reading -----------------------------------------------------------------------------------------
    def _version_numbers(self, model: str) -> list[int]:
        model_dir = self._model_dir(model)
        if not model_dir.is_dir():
            return []
        return sorted(int(p.name) for p in model_dir.iterdir() if is_version_ref(p.name) and p.is_dir())

    def _aliases(self, model: str) -> dict[str, int]:
        path = self._model_dir(model) / "aliases.json"
        try:
            return {str(k): int(v) for k, v in json.loads(path.read_text()).items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, AttributeError) as exc:
            raise RegistryError(f"{path} is unreadable: {exc}") from exc

    def aliases(self, model: str) -> dict[str, int]:
        """Alias → version of ``model`` (empty when it has none)."""
        return self._aliases(model)

    def models(self) -> list[str]:
        models_dir = self.root / "models"
        if not models_dir.is_dir():
            return []
        return sorted(p.name for p in models_dir.iterdir() if p.is_dir() and self._version_numbers(p.name))

    def versions(self, model: str) -> list[ReleaseRecord]:
        return [self._load(model, v, self._aliases(model)) for v in self._version_numbers(model)]

    def get(self, model: str, ref: int | str = LATEST) -> ReleaseRecord:
        """``ref``: a version number (int or digits), an alias, or "latest" (newest *registered* version)."""
        try:
            check_name(model, "model")
        except ProtocolError as exc:
            raise RegistryError(exc.reason) from None
        numbers = self._version_numbers(model)
        if not numbers:
            raise RegistryError(f"no model named {model!r} in the registry at {self.root}")
        aliases = self._aliases(model)
        version = self._pick(model, ref, numbers, aliases)
        return self._load(model, version, aliases)

    def _pick(self, model: str, ref: int | str, numbers: list[int], aliases: dict[str, int]) -> int:
        if isinstance(ref, int) or is_version_ref(ref):
            version = int(ref)
            if version not in numbers:
                raise RegistryError(f"{model} has no version {version} (versions: {numbers[0]}..{numbers[-1]})")
            return version
        if ref == LATEST:
            for version in reversed(numbers):
                if self._status(model, version) == "registered":
                    return version
            raise RegistryError(f"{model} has no registered (non-rejected) version")
        if ref not in aliases:
            raise RegistryError(f"{model} has no alias {ref!r} (aliases: {sorted(aliases) or 'none'})")
        return aliases[ref]

    def resolve(self, text: str) -> ReleaseRecord:
        """``churn@3``, ``churn@champion``, or ``churn`` (its champion, else its latest registered version)."""
        model, ref = parse_ref(text)
        if ref is None:
            ref = CHAMPION if CHAMPION in self._aliases(model) else LATEST
        return self.get(model, ref)

    def champion(self, model: str) -> ReleaseRecord | None:
        aliases = self._aliases(model)
        return self._load(model, aliases[CHAMPION], aliases) if CHAMPION in aliases else None

    def _status(self, model: str, version: int) -> str:
        return self._read_record(self._model_dir(model) / str(version))["status"]

    @staticmethod
    def _read_record(path: Path) -> dict[str, Any]:
        try:
            return json.loads((path / "record.json").read_text())
        except (OSError, ValueError) as exc:
            raise RegistryError(f"{path}/record.json is unreadable: {exc}") from exc

    def _load(self, model: str, version: int, aliases: dict[str, int]) -> ReleaseRecord:
        path = self._model_dir(model) / str(version)
        record = self._read_record(path)
        try:
            manifest = ReleaseManifest.from_json(json.loads((path / "manifest.json").read_bytes()))
        except (OSError, ValueError) as exc:  # ProtocolError is a ValueError
            raise RegistryError(f"{path}/manifest.json is unreadable: {exc}") from exc
        return ReleaseRecord(
            model=model, version=version, status=record["status"], manifest=manifest,
            onnx_path=self._blob_path(manifest.artifact.sha256), report=record.get("report", {}),
            aliases=tuple(sorted(a for a, v in aliases.items() if v == version)), path=path,
            created=record.get("created", ""))

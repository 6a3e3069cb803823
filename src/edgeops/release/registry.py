"""A content-addressed model registry with monotonic versions and aliases, in a folder or on S3.

Layout under ``root`` (default ``.edgeops/registry``; or ``s3://bucket/prefix``)::

    blobs/sha256/<hex>                      ONNX artifacts, stored once by content, verified on every read
    models/<model>/<version>/claim          written first, create-if-absent: who took this version number
    models/<model>/<version>/record.json    status, created, report, sha256 of each extra file
    models/<model>/<version>/<extra files>  e.g. sample.parquet: training rows the next run checks drift against
    models/<model>/<version>/manifest.json  canonical JSON of the (signed) manifest: written last, the commit
    models/<model>/aliases.json             {"champion": 3, "candidate": 4}, replaced by compare-and-swap

Everything here is written once on top of registry_store.ObjectStore, whose create-if-absent and
compare-and-swap are atomic on both backends, so the same rules hold for processes sharing a folder and for
machines sharing a bucket:

* A writer takes version ``max(taken) + 1`` by *creating* its ``claim``; when another writer created it first,
  it tries the next number. Concurrent writers therefore get distinct, consecutive versions without a lock.
  ``build(version)`` runs after the claim, so the version it signs is the one stored.
* A version exists for readers once its ``manifest.json`` does, and that is written after everything else:
  a crash leaves an invisible claim (its number is not reused, as a database sequence would not reuse it).
* Aliases are read with a token and written back only if unchanged since (compare-and-swap), retried with
  jittered backoff, so two promotions racing each other never lose one. Rejected versions never get an alias.
* Blobs are named by their sha256 and checked against it (and extra files against the hash in the record)
  whenever they are read: a damaged or tampered object is a RegistryError naming it.
"""

import json
import os
import random
import re
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from edge_agent.protocol import ProtocolError, ReleaseManifest, check_name, sha256_hex
from edge_agent.protocol.names import is_name
from edgeops.config import RegistryConfig, S3Config, is_url
from edgeops.errors import RegistryError
from edgeops.release.registry_store import LocalStore, ObjectStore

Status = Literal["registered", "rejected"]
STATUSES: tuple[str, ...] = ("registered", "rejected")
CHAMPION = "champion"
CANDIDATE = "candidate"
LATEST = "latest"
SAMPLE_FILE = "sample.parquet"
MANIFEST = "manifest.json"
RECORD = "record.json"
CLAIM = "claim"
_RESERVED_FILES = {MANIFEST, RECORD, CLAIM}
CLAIM_ATTEMPTS = 1000
ALIAS_ATTEMPTS = 50

Build = Callable[[int], tuple[ReleaseManifest, bytes]]


def blob_key(sha256: str) -> str:
    return f"blobs/sha256/{sha256}"


def verified(store: ObjectStore, key: str, sha256: str, size: int | None = None) -> bytes:
    """The object's bytes, after checking they are what their name or record says."""
    stored = store.read(key)
    if stored is None:
        raise RegistryError(f"{store.where(key)} is missing from the registry")
    actual = sha256_hex(stored.data)
    if actual != sha256 or (size is not None and len(stored.data) != size):
        raise RegistryError(f"{store.where(key)} is damaged or was tampered with: sha256 {actual[:16]}…, "
                            f"{len(stored.data)} bytes, expected {sha256[:16]}…" + (f", {size} bytes" if size else ""))
    return stored.data


def open_store(root: Path | str, s3: S3Config | None = None) -> ObjectStore:
    """The store for ``registry.root``: an ``s3://bucket/prefix`` URL or a local folder."""
    if is_url(root):
        if not str(root).startswith("s3://"):
            raise RegistryError(f"registry root {root!r}: a local folder or an s3://bucket/prefix URL")
        from edgeops.release.registry_s3 import S3Store  # boto3 is imported only by those who use S3

        return S3Store(str(root), s3 or S3Config())
    return LocalStore(Path(root))


@dataclass(frozen=True)
class ReleaseRecord:
    """One registered version as stored: manifest, the run's report, and where its ONNX and files are."""

    model: str
    version: int
    status: Status
    manifest: ReleaseManifest
    report: dict[str, Any]
    aliases: tuple[str, ...]
    created: str = ""
    files: Mapping[str, str | None] = field(default_factory=dict)
    """Extra file name → sha256 (None for versions written before the registry recorded it)."""
    store: ObjectStore | None = field(default=None, repr=False, compare=False)

    @property
    def ref(self) -> str:
        return f"{self.model}@{self.version}"

    @property
    def onnx_key(self) -> str:
        return blob_key(self.manifest.artifact.sha256)

    @property
    def onnx_location(self) -> str:
        """The ONNX file's path, or its ``s3://`` URL."""
        return self._store().where(self.onnx_key)

    @property
    def onnx_path(self) -> Path | None:
        """The ONNX file when the registry is a local folder (None on S3: use ``onnx_bytes``)."""
        return self._store().local_path(self.onnx_key)

    def onnx_bytes(self) -> bytes:
        """The artifact, verified against the manifest's sha256 and size."""
        art = self.manifest.artifact
        return verified(self._store(), self.onnx_key, art.sha256, art.size)

    def read_file(self, name: str) -> bytes | None:
        """An extra file stored with this version (e.g. ``sample.parquet``), verified by hash; None if absent."""
        if name not in self.files:
            return None
        key = f"{version_key(self.model, self.version)}/{name}"
        sha256 = self.files[name]
        if sha256 is not None:
            return verified(self._store(), key, sha256)
        stored = self._store().read(key)
        return None if stored is None else stored.data

    def _store(self) -> ObjectStore:
        if self.store is None:
            raise RegistryError(f"{self.ref} was not read from a registry")
        return self.store

    def summary(self) -> dict[str, Any]:
        """What ``models list/show --json`` prints: JSON-safe, stable keys."""
        return {"model": self.model, "version": self.version, "ref": self.ref, "status": self.status,
                "aliases": list(self.aliases), "created": self.created, "metrics": self.manifest.metrics,
                "sha256": self.manifest.artifact.sha256, "size": self.manifest.artifact.size,
                "task": self.manifest.outputs.task, "signed": self.manifest.signature is not None,
                "key_id": None if self.manifest.signature is None else self.manifest.signature.key_id,
                "lineage": self.manifest.lineage.to_json(), "reasons": self.report.get("reasons", []),
                "onnx_path": self.onnx_location}


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


def model_key(model: str) -> str:
    return f"models/{check_name(model, 'model')}"


def version_key(model: str, version: int) -> str:
    return f"{model_key(model)}/{version}"


class Registry:
    """The registry at ``root`` (a folder, or ``s3://bucket/prefix`` with ``s3`` settings); cheap to construct,
    safe to share between processes and machines."""

    def __init__(self, root: Path | str, *, s3: S3Config | None = None, store: ObjectStore | None = None) -> None:
        self.root = root if is_url(root) else Path(root)
        self.store = store or open_store(self.root, s3)

    @classmethod
    def from_config(cls, cfg: RegistryConfig) -> "Registry":
        """The registry edgeops.yaml names (``registry.root`` and ``registry.s3``)."""
        return cls(cfg.root, s3=cfg.s3)

    # -- writing -----------------------------------------------------------------------------------------
    def register(self, model: str, build: Build, *, status: Status = "registered",
                 report: Mapping[str, Any] | None = None, files: Mapping[str, bytes] | None = None) -> ReleaseRecord:
        """Claim the next version, call ``build(version)`` for (manifest, onnx bytes), store both.

        A "registered" release must be signed; a "rejected" one is kept for inspection only. When ``build`` or a
        write fails, the version stays invisible and its number is not given out again.
        """
        check_name(model, "model")
        if status not in STATUSES:
            raise RegistryError(f"status {status!r} is not one of {STATUSES}")
        extra = dict(files or {})
        if bad := sorted(set(extra) & _RESERVED_FILES | {n for n in extra if "/" in n or n.startswith(".")}):
            raise RegistryError(f"cannot store extra files named {bad}")
        version = self._claim(model)
        manifest, onnx = build(version)
        self._check_built(model, version, status, manifest, onnx)
        self._store_blob(manifest.artifact.sha256, onnx)
        prefix = version_key(model, version)
        for name, data in extra.items():
            self.store.write(f"{prefix}/{name}", data)
        record = {"model": model, "version": version, "status": status,
                  "created": datetime.now(UTC).isoformat(timespec="seconds"), "report": dict(report or {}),
                  "files": {name: sha256_hex(data) for name, data in extra.items()}}
        self.store.write(f"{prefix}/{RECORD}", json.dumps(record, indent=2, sort_keys=True).encode())
        self._create(f"{prefix}/{MANIFEST}", manifest.to_bytes())   # the commit point
        return self.get(model, version)

    def _claim(self, model: str) -> int:
        taken = self._taken_numbers(model)
        version = (taken[-1] if taken else 0) + 1
        body = json.dumps({"writer": f"{socket.gethostname()}:{os.getpid()}", "nonce": uuid.uuid4().hex,
                           "claimed": datetime.now(UTC).isoformat(timespec="seconds")}).encode()
        for _ in range(CLAIM_ATTEMPTS):
            key = f"{version_key(model, version)}/{CLAIM}"
            if self.store.swap(key, body, None):
                return version
            mine = self.store.read(key)   # a retried request whose first attempt did land reads as a lost race
            if mine is not None and mine.data == body:
                return version
            version += 1
        raise RegistryError(f"could not claim a version of {model} in {CLAIM_ATTEMPTS} attempts")

    def _create(self, key: str, data: bytes) -> None:
        if self.store.swap(key, data, None):
            return
        existing = self.store.read(key)
        if existing is None or existing.data != data:
            raise RegistryError(f"{self.store.where(key)} was written by another writer despite this writer's "
                                "claim: does the storage honour conditional writes (If-None-Match)?")

    @staticmethod
    def _check_built(model: str, version: int, status: str, manifest: ReleaseManifest, onnx: bytes) -> None:
        if (manifest.name, manifest.version) != (model, version):
            raise RegistryError(f"build returned {manifest.name}@{manifest.version}, expected {model}@{version}")
        if sha256_hex(onnx) != manifest.artifact.sha256 or len(onnx) != manifest.artifact.size:
            raise RegistryError(f"{model}@{version}: ONNX bytes do not match the manifest's sha256/size")
        if status == "registered" and manifest.signature is None:
            raise RegistryError(f"{model}@{version}: a registered release must be signed")

    def _store_blob(self, sha256: str, data: bytes) -> None:
        key = blob_key(sha256)
        if self.store.swap(key, data, None):
            return
        existing = self.store.read(key)
        if existing is None or sha256_hex(existing.data) != sha256:
            self.store.write(key, data)   # a damaged copy is healed by the bytes in hand

    def promote(self, model: str, version: int, alias: str = CHAMPION, *, only_if_unset: bool = False) -> ReleaseRecord:
        """Point ``alias`` at ``version``. Rejected versions can never be promoted.

        ``only_if_unset`` leaves an existing alias alone, decided in the same compare-and-swap, so that of two
        first runs racing each other exactly one becomes the champion.
        """
        _check_alias(alias)
        record = self.get(model, version)
        if record.status != "registered":
            reasons = "; ".join(record.report.get("reasons", [])) or "no reason recorded"
            raise RegistryError(f"{record.ref} was rejected ({reasons}) and cannot be promoted")
        key = f"{model_key(model)}/aliases.json"
        for attempt in range(ALIAS_ATTEMPTS):
            current = self.store.read(key)
            aliases = self._parse_aliases(key, current.data) if current else {}
            if (only_if_unset and alias in aliases) or aliases.get(alias) == version:
                break
            aliases[alias] = version
            if self.store.swap(key, json.dumps(aliases, indent=2, sort_keys=True).encode(),
                               None if current is None else current.token):
                break
            time.sleep(random.uniform(0, min(0.5, 0.005 * 2 ** attempt)))   # another promotion won: read again
        else:
            raise RegistryError(f"could not update the aliases of {model}: {ALIAS_ATTEMPTS} attempts lost to "
                                "other writers")
        return self.get(model, version)

    # -- reading -----------------------------------------------------------------------------------------
    def _taken_numbers(self, model: str) -> list[int]:
        """Every version number in use, committed or only claimed."""
        return sorted(int(n) for n in self.store.children(f"{model_key(model)}/") if is_version_ref(n))

    def _version_numbers(self, model: str) -> list[int]:
        """Committed versions: those whose manifest is written."""
        prefix = f"{model_key(model)}/"
        found = set()
        for key in self.store.keys(prefix):
            number, _, name = key[len(prefix):].partition("/")
            if name == MANIFEST and is_version_ref(number):
                found.add(int(number))
        return sorted(found)

    def _aliases(self, model: str) -> dict[str, int]:
        key = f"{model_key(model)}/aliases.json"
        stored = self.store.read(key)
        return {} if stored is None else self._parse_aliases(key, stored.data)

    def _parse_aliases(self, key: str, data: bytes) -> dict[str, int]:
        try:
            return {str(k): int(v) for k, v in json.loads(data).items()}
        except (ValueError, AttributeError, TypeError) as exc:
            raise RegistryError(f"{self.store.where(key)} is unreadable: {exc}") from exc

    def aliases(self, model: str) -> dict[str, int]:
        """Alias → version of ``model`` (empty when it has none)."""
        return self._aliases(model)

    def models(self) -> list[str]:
        return [m for m in self.store.children("models/") if is_name(m) and self._version_numbers(m)]

    def versions(self, model: str) -> list[ReleaseRecord]:
        aliases = self._aliases(model)
        return [self._load(model, v, aliases) for v in self._version_numbers(model)]

    def get(self, model: str, ref: int | str = LATEST) -> ReleaseRecord:
        """``ref``: a version number (int or digits), an alias, or "latest" (newest *registered* version)."""
        try:
            check_name(model, "model")
        except ProtocolError as exc:
            raise RegistryError(exc.reason) from None
        numbers = self._version_numbers(model)
        if not numbers:
            raise RegistryError(f"no model named {model!r} in the registry at {self.store.where()}")
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
                if self._read_record(model, version)["status"] == "registered":
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

    def _read_json(self, key: str) -> Any:
        stored = self.store.read(key)
        if stored is None:
            raise RegistryError(f"{self.store.where(key)} is missing")
        try:
            return json.loads(stored.data)
        except ValueError as exc:
            raise RegistryError(f"{self.store.where(key)} is unreadable: {exc}") from exc

    def _read_record(self, model: str, version: int) -> dict[str, Any]:
        record = self._read_json(f"{version_key(model, version)}/{RECORD}")
        if not isinstance(record, dict) or record.get("status") not in STATUSES:
            raise RegistryError(f"{self.store.where(f'{version_key(model, version)}/{RECORD}')} is unreadable")
        return record

    def _load(self, model: str, version: int, aliases: dict[str, int]) -> ReleaseRecord:
        prefix = version_key(model, version)
        record = self._read_record(model, version)
        try:
            manifest = ReleaseManifest.from_json(self._read_json(f"{prefix}/{MANIFEST}"))
        except ProtocolError as exc:
            raise RegistryError(f"{self.store.where(f'{prefix}/{MANIFEST}')} is unreadable: {exc}") from exc
        return ReleaseRecord(
            model=model, version=version, status=record["status"], manifest=manifest,
            report=record.get("report", {}), aliases=tuple(sorted(a for a, v in aliases.items() if v == version)),
            created=record.get("created", ""), files=self._files(prefix, record), store=self.store)

    def _files(self, prefix: str, record: dict[str, Any]) -> dict[str, str | None]:
        if isinstance(record.get("files"), dict):
            return {str(k): str(v) for k, v in record["files"].items()}
        # written before records listed their files: whatever lies beside the manifest, unverified
        return {key.rpartition("/")[2]: None for key in self.store.keys(f"{prefix}/")
                if key.rpartition("/")[2] not in _RESERVED_FILES}

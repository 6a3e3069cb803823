"""The on-device model store: verified releases on disk, a ``current`` pointer, and the lifecycle state file.

Layout under ``data_dir``::

    models/{model}/{version}/model.onnx      the verified ONNX bytes
    models/{model}/{version}/manifest.json   its signed manifest (canonical JSON)
    current                                  {"current": {model, version}, "previous": {...} | null}
    state.json                               the lifecycle state (lifecycle.AgentState)

Every file is written to a temporary name in the same directory, fsynced, renamed over the target with
``os.replace`` and the directory fsynced, so a ``kill -9`` or power cut leaves either the old or the new file,
never a torn one. Names are checked by the protocol *and* every path is resolved and asserted to lie inside
``data_dir`` (defence in depth: a name the protocol let through must still not escape).
"""

import contextlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .durable import atomic_write, fsync_dir
from .errors import StoreError, VerificationError
from .protocol import ProtocolError, ReleaseManifest, check_name, check_version, parse_manifest
from .verify import verify_artifact

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
POINTER_FILE = "current"
STATE_FILE = "state.json"


@dataclass(frozen=True, order=True)
class ModelRef:
    """A model version; both parts are checked by the protocol's name rules on construction."""

    model: str
    version: int

    def __post_init__(self) -> None:
        try:
            check_name(self.model, "model")
            check_version(self.version)
        except ProtocolError as exc:
            raise StoreError(f"unsafe model reference: {exc}") from exc

    def __str__(self) -> str:
        return f"{self.model}@{self.version}"

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version}

    @classmethod
    def from_json(cls, obj: Any) -> "ModelRef | None":
        if obj is None:
            return None
        if not isinstance(obj, dict):
            raise StoreError(f"bad model reference {obj!r}")
        return cls(obj.get("model"), obj.get("version"))  # type: ignore[arg-type]


@dataclass(frozen=True)
class Pointer:
    """What the agent serves (``current``) and what it falls back to (``previous``)."""

    current: ModelRef | None = None
    previous: ModelRef | None = None


class ModelStore:
    """Everything the agent keeps on disk, confined to ``data_dir`` (see the module docstring)."""

    def __init__(self, data_dir: Path) -> None:
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        self.root = Path(data_dir).resolve()

    # paths ----------------------------------------------------------------------------------------
    def path(self, *parts: str) -> Path:
        """``data_dir/parts...``, refused unless it resolves to a path strictly inside ``data_dir``."""
        candidate = self.root.joinpath(*parts).resolve()
        if candidate == self.root or not candidate.is_relative_to(self.root):
            raise StoreError(f"path {'/'.join(parts)!r} would leave the data directory")
        return candidate

    def model_dir(self, ref: ModelRef) -> Path:
        return self.path("models", ref.model, str(ref.version))

    # releases -------------------------------------------------------------------------------------
    def install(self, manifest: ReleaseManifest, data: bytes, manifest_bytes: bytes | None = None) -> ModelRef:
        """Write a verified release under ``models/{model}/{version}/`` (artifact first, manifest last: a
        directory with a manifest is complete). ``manifest_bytes`` are the signed bytes as received, kept
        verbatim so the signature can be checked again after a restart."""
        ref = ModelRef(manifest.name, manifest.version)
        directory = self.model_dir(ref)
        created = [p for p in (directory.parent, directory) if not p.exists()]
        directory.mkdir(parents=True, exist_ok=True)
        for made in created:
            fsync_dir(made.parent)
        atomic_write(directory / MODEL_FILE, data)
        atomic_write(directory / MANIFEST_FILE, manifest.to_bytes() if manifest_bytes is None else manifest_bytes)
        return ref

    def has(self, ref: ModelRef) -> bool:
        directory = self.model_dir(ref)
        return (directory / MANIFEST_FILE).is_file() and (directory / MODEL_FILE).is_file()

    def load(self, ref: ModelRef, max_bytes: int) -> tuple[ReleaseManifest, bytes]:
        """Read a stored release and check its bytes against its manifest (the caller checks the signature)."""
        manifest, data, _ = self.load_raw(ref, max_bytes)
        return manifest, data

    def load_raw(self, ref: ModelRef, max_bytes: int) -> tuple[ReleaseManifest, bytes, bytes]:
        """Like ``load``, plus the manifest's bytes as stored (what its signature covers)."""
        directory = self.model_dir(ref)
        try:
            manifest_bytes = (directory / MANIFEST_FILE).read_bytes()
            manifest = parse_manifest(manifest_bytes)
            data = (directory / MODEL_FILE).read_bytes()
        except OSError as exc:
            raise StoreError(f"{ref} is incomplete on disk: {exc.strerror}") from exc
        except ProtocolError as exc:
            raise StoreError(f"{ref} has a bad manifest on disk: {exc}") from exc
        if (manifest.name, manifest.version) != (ref.model, ref.version):
            raise StoreError(f"{ref} holds the manifest of {manifest.name}@{manifest.version}")
        try:
            verify_artifact(manifest, data, max_bytes)
        except VerificationError as exc:
            raise StoreError(f"{ref} is corrupt on disk: {exc}") from exc
        return manifest, data, manifest_bytes

    def prune(self, keep: set[ModelRef]) -> None:
        """Delete stored versions other than ``keep`` (current and previous), so the disk stays bounded."""
        models = self.path("models")
        if not models.is_dir():
            return
        for model_dir in models.iterdir():
            for version_dir in model_dir.iterdir() if model_dir.is_dir() else ():
                with contextlib.suppress(StoreError, ValueError):
                    if ModelRef(model_dir.name, int(version_dir.name)) in keep:
                        continue
                shutil.rmtree(version_dir, ignore_errors=True)

    # pointer and state ----------------------------------------------------------------------------
    def read_pointer(self) -> Pointer:
        path = self.path(POINTER_FILE)
        try:
            obj = json.loads(path.read_bytes())
            return Pointer(ModelRef.from_json(obj.get("current")), ModelRef.from_json(obj.get("previous")))
        except FileNotFoundError:
            return Pointer()
        except (OSError, ValueError, AttributeError, StoreError) as exc:
            raise StoreError(f"the current pointer is unreadable: {exc}") from exc

    def write_pointer(self, pointer: Pointer) -> None:
        obj = {"current": pointer.current and pointer.current.to_json(),
               "previous": pointer.previous and pointer.previous.to_json()}
        atomic_write(self.path(POINTER_FILE), json.dumps(obj, sort_keys=True).encode())

    def read_state(self) -> dict[str, Any] | None:
        """The persisted lifecycle state, or None when absent or unreadable (the pointer is the truth)."""
        try:
            obj = json.loads(self.path(STATE_FILE).read_bytes())
        except (OSError, ValueError):
            return None
        return obj if isinstance(obj, dict) else None

    def write_state(self, obj: dict[str, Any]) -> None:
        atomic_write(self.path(STATE_FILE), json.dumps(obj, sort_keys=True).encode())

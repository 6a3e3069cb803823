"""Checks a release must pass before any byte of it is trusted: signature first, then size and hashes.

Order matters (skops' parse → audit → construct): the manifest is parsed by the protocol, its signature is
checked here against the device's key ring, and only a signed manifest's hashes are used to judge the
artifact. Nothing is loaded into onnxruntime before both checks pass.
"""

import hashlib
import hmac
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .errors import ConfigError, VerificationError
from .protocol import (
    SIGNATURE_ALGORITHM,
    ProtocolError,
    ReleaseManifest,
    Signature,
    canonical_json,
    key_id,
    parse_json,
)


def public_key_id(key: Ed25519PublicKey) -> str:
    """The protocol's key id of ``key`` (first 16 hex chars of the sha256 of its 32 raw bytes)."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return key_id(raw)


@dataclass(frozen=True)
class KeyRing:
    """The Ed25519 public keys a device trusts, by key id. Several keys allow rotation: sign new releases
    with the new key while devices still accept the old one, then drop the old file."""

    keys: dict[str, Ed25519PublicKey]

    @classmethod
    def from_public_keys(cls, keys: Iterable[Ed25519PublicKey]) -> "KeyRing":
        return cls({public_key_id(key): key for key in keys})

    @classmethod
    def from_paths(cls, paths: Iterable[Path]) -> "KeyRing":
        """Load PEM (SubjectPublicKeyInfo) Ed25519 public keys; a bad file is a ConfigError naming it."""
        keys = []
        for path in paths:
            try:
                key = serialization.load_pem_public_key(Path(path).read_bytes())
            except OSError as exc:
                raise ConfigError(f"public_keys: cannot read {path}: {exc.strerror}") from exc
            except ValueError as exc:
                raise ConfigError(f"public_keys: {path} is not a PEM public key") from exc
            if not isinstance(key, Ed25519PublicKey):
                raise ConfigError(f"public_keys: {path} is not an Ed25519 key")
            keys.append(key)
        return cls.from_public_keys(keys)

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(sorted(self.keys))


def signing_bytes(payload: bytes, what: str = "manifest") -> bytes:
    """The bytes a signature covers, taken from the document *as received*: its canonical JSON without the
    ``signature`` member. Re-encoding the parsed dataclass instead would drop fields a newer minor version
    added (and rewrite its schema tag), so an older agent could never verify a minor-bumped manifest or
    desired state. ``what`` names the document in the error."""
    try:
        obj = parse_json(payload)
    except ProtocolError as exc:
        raise VerificationError(f"malformed {what}: {exc}") from exc
    obj.pop("signature", None)
    return canonical_json(obj)


manifest_signing_bytes = signing_bytes


def check_signature(signature: Signature | None, keyring: KeyRing, signed: Callable[[], bytes], what: str) -> None:
    """The agent's one signature check (release manifests, desired states): present, Ed25519, by a trusted key,
    and valid over ``signed()`` (computed only once a trusted key matched). ``what`` names the document."""
    if signature is None:
        raise VerificationError(f"{what} is not signed")
    if signature.algorithm != SIGNATURE_ALGORITHM:
        raise VerificationError(f"{what}: unsupported signature algorithm {signature.algorithm!r}")
    key = keyring.keys.get(signature.key_id)
    if key is None:
        trusted = ", ".join(keyring.key_ids) or "none"
        raise VerificationError(f"{what}: unknown signing key {signature.key_id} (trusted: {trusted})")
    try:
        key.verify(signature.value, signed())
    except InvalidSignature:
        raise VerificationError(f"{what}: invalid signature by key {signature.key_id}") from None


def verify_manifest(manifest: ReleaseManifest, keyring: KeyRing, payload: bytes | None = None) -> None:
    """Raise VerificationError unless ``manifest`` carries a valid signature by a trusted key.

    Pass ``payload`` (the bytes ``manifest`` was parsed from) whenever you have them; without it the
    signature is checked over ``manifest.signing_bytes()``, which equals it for the current schema version.
    """
    check_signature(manifest.signature, keyring,
                    manifest.signing_bytes if payload is None else lambda: manifest_signing_bytes(payload),
                    "manifest")


def check_size(manifest: ReleaseManifest, max_bytes: int) -> None:
    """Refuse a release whose declared size exceeds the device's limit, before fetching any of it."""
    if manifest.artifact.size > max_bytes:
        raise VerificationError(
            f"artifact of {manifest.artifact.size} bytes exceeds the limit of {max_bytes} bytes")


def verify_artifact(manifest: ReleaseManifest, data: bytes, max_bytes: int) -> None:
    """Raise VerificationError unless ``data`` is exactly the artifact the (verified) manifest describes."""
    info = manifest.artifact
    if len(data) > max_bytes:
        raise VerificationError(f"artifact of {len(data)} bytes exceeds the limit of {max_bytes} bytes")
    check_size(manifest, max_bytes)
    if len(data) != info.size:
        raise VerificationError(f"artifact size {len(data)} differs from the manifest's {info.size}")
    if not hmac.compare_digest(hashlib.sha256(data).hexdigest(), info.sha256):
        raise VerificationError("artifact sha256 mismatch")
    for index, expected in enumerate(info.chunk_sha256):  # a manifest whose chunk list disagrees is bad too
        chunk = data[index * info.chunk_size:(index + 1) * info.chunk_size]
        if not hmac.compare_digest(hashlib.sha256(chunk).hexdigest(), expected):
            raise VerificationError(f"artifact chunk {index} sha256 mismatch")


def verify_chunk(manifest: ReleaseManifest, index: int, data: bytes) -> None:
    """Check one chunk as it arrives, so a corrupt chunk is named precisely and never buffered."""
    info = manifest.artifact
    if not 0 <= index < info.chunks:
        raise VerificationError(f"artifact chunk {index} is out of range (0..{info.chunks - 1})")
    expected_len = min(info.chunk_size, info.size - index * info.chunk_size)
    if len(data) != expected_len:
        raise VerificationError(f"artifact chunk {index} has {len(data)} bytes, expected {expected_len}")
    if not hmac.compare_digest(hashlib.sha256(data).hexdigest(), info.chunk_sha256[index]):
        raise VerificationError(f"artifact chunk {index} sha256 mismatch")

import dataclasses
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from releases import Release, artifact_info, build_release, kid, new_key, public_pem, sign, tampered_artifact

from edge_agent.errors import ConfigError, VerificationError
from edge_agent.verify import KeyRing, verify_artifact, verify_chunk, verify_manifest

pytestmark = pytest.mark.unit

LIMIT = 1 << 24


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return new_key()


@pytest.fixture(scope="module")
def release(key: Ed25519PrivateKey) -> Release:
    return build_release("churn", 3, key, chunk_size=700)


def test_a_signed_release_verifies(key: Ed25519PrivateKey, release: Release) -> None:
    verify_manifest(release.manifest, KeyRing.from_public_keys([key.public_key()]))
    verify_artifact(release.manifest, release.data, LIMIT)
    for i in range(release.manifest.artifact.chunks):
        size = release.manifest.artifact.chunk_size
        verify_chunk(release.manifest, i, release.data[i * size:(i + 1) * size])


def test_unsigned_manifest_is_refused(key: Ed25519PrivateKey, release: Release) -> None:
    with pytest.raises(VerificationError, match="not signed"):
        unsigned = dataclasses.replace(release.manifest, signature=None)
        verify_manifest(unsigned, KeyRing.from_public_keys([key.public_key()]))


def test_unknown_key_is_named(key: Ed25519PrivateKey, release: Release) -> None:
    other = new_key()
    with pytest.raises(VerificationError, match=f"unknown signing key {kid(key)}"):
        verify_manifest(release.manifest, KeyRing.from_public_keys([other.public_key()]))


def test_signature_by_another_key_under_a_trusted_key_id_is_invalid(key: Ed25519PrivateKey, release: Release) -> None:
    forged = sign(release.manifest, new_key(), claimed_key_id=kid(key))
    with pytest.raises(VerificationError, match="invalid signature"):
        verify_manifest(forged, KeyRing.from_public_keys([key.public_key()]))


def test_any_change_after_signing_breaks_the_signature(key: Ed25519PrivateKey, release: Release) -> None:
    changed = dataclasses.replace(release.manifest, metrics={"accuracy": 0.99})
    with pytest.raises(VerificationError, match="invalid signature"):
        verify_manifest(changed, KeyRing.from_public_keys([key.public_key()]))


def test_rotation_keyring_from_pem_files_accepts_old_and_new_key(
        tmp_path: Path, key: Ed25519PrivateKey, release: Release) -> None:
    new = new_key()
    (tmp_path / "old.pub").write_bytes(public_pem(key))
    (tmp_path / "new.pub").write_bytes(public_pem(new))
    ring = KeyRing.from_paths([tmp_path / "old.pub", tmp_path / "new.pub"])
    assert set(ring.key_ids) == {kid(key), kid(new)}
    verify_manifest(release.manifest, ring)
    verify_manifest(sign(release.manifest, new), ring)


def test_keyring_refuses_garbage_and_non_ed25519_keys(tmp_path: Path) -> None:
    (tmp_path / "junk.pub").write_bytes(b"not a key")
    with pytest.raises(ConfigError, match=r"junk\.pub is not a PEM public key"):
        KeyRing.from_paths([tmp_path / "junk.pub"])
    ec_pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "ec.pub").write_bytes(ec_pem)
    with pytest.raises(ConfigError, match="not an Ed25519 key"):
        KeyRing.from_paths([tmp_path / "ec.pub"])
    with pytest.raises(ConfigError, match="cannot read"):
        KeyRing.from_paths([tmp_path / "missing.pub"])


def test_tampered_artifact_is_a_sha256_mismatch(release: Release) -> None:
    with pytest.raises(VerificationError, match="artifact sha256 mismatch"):
        verify_artifact(release.manifest, tampered_artifact(release).data, LIMIT)


def test_truncated_artifact_and_oversized_release_are_refused(release: Release) -> None:
    with pytest.raises(VerificationError, match="differs from the manifest"):
        verify_artifact(release.manifest, release.data[:-1], LIMIT)
    with pytest.raises(VerificationError, match="exceeds the limit of 100 bytes"):
        verify_artifact(release.manifest, release.data, 100)


def test_inconsistent_chunk_hashes_are_refused(key: Ed25519PrivateKey, release: Release) -> None:
    info = artifact_info(release.data, 700)
    bad = dataclasses.replace(info, chunk_sha256=("0" * 64, *info.chunk_sha256[1:]))
    manifest = sign(dataclasses.replace(release.manifest, artifact=bad), key)
    with pytest.raises(VerificationError, match="chunk 0 sha256 mismatch"):
        verify_artifact(manifest, release.data, LIMIT)


def test_a_corrupt_or_misplaced_chunk_is_named(release: Release) -> None:
    corrupt = bytes([release.data[0] ^ 1]) + release.data[1:700]
    with pytest.raises(VerificationError, match="chunk 0 sha256 mismatch"):
        verify_chunk(release.manifest, 0, corrupt)
    with pytest.raises(VerificationError, match="out of range"):
        verify_chunk(release.manifest, 999, b"x")
    with pytest.raises(VerificationError, match="has 3 bytes"):
        verify_chunk(release.manifest, 0, b"abc")

import dataclasses
import stat
from pathlib import Path

import numpy as np
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from manifests import fake_manifest

from edge_agent.protocol import (
    ArtifactInfo,
    CategoricalBins,
    Counts,
    Reference,
    ReleaseManifest,
    key_id,
    parse_manifest,
    sha256_hex,
)
from edgeops.errors import SigningError
from edgeops.release.signing import (
    check_signature,
    generate_keys,
    load_private_key,
    load_public_key,
    public_key_id,
    sign_manifest,
)
from edgeops.train.calibration import score_calibration

pytestmark = pytest.mark.unit


def release(name: str = "churn", version: int = 1, onnx: bytes = b"onnx" * 30) -> ReleaseManifest:
    return fake_manifest(name, version, onnx)


def test_keys_are_written_private_and_never_silently_replaced(tmp_path: Path) -> None:
    private, public = generate_keys(tmp_path / "keys")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS8
    first = private.read_bytes()
    with pytest.raises(SigningError, match="--force"):
        generate_keys(tmp_path / "keys")
    assert private.read_bytes() == first
    generate_keys(tmp_path / "keys", force=True)
    assert private.read_bytes() != first
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert public_key_id(load_private_key(private).public_key()) == public_key_id(load_public_key(public))


def test_missing_key_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(SigningError, match="edgeops keys init"):
        load_private_key(tmp_path / "nope.key")
    (tmp_path / "junk.key").write_text("not a key")
    with pytest.raises(SigningError, match="not an unencrypted PEM"):
        load_private_key(tmp_path / "junk.key")


def test_signature_verifies_with_plain_cryptography(tmp_path: Path) -> None:
    private, public = generate_keys(tmp_path)
    signed = sign_manifest(release(), load_private_key(private))
    # A device sees only bytes: parse them back and verify with cryptography alone.
    received = parse_manifest(signed.to_bytes())
    pub = serialization.load_pem_public_key(public.read_bytes())
    assert isinstance(pub, Ed25519PublicKey)
    assert received.signature is not None
    assert received.signature.key_id == key_id(pub.public_bytes(serialization.Encoding.Raw,
                                                                 serialization.PublicFormat.Raw))
    pub.verify(received.signature.value, received.signing_bytes())
    check_signature(received, load_public_key(public))


def _tampered(manifest: ReleaseManifest) -> list[tuple[str, ReleaseManifest]]:
    other = b"other" * 30
    return [
        ("name", dataclasses.replace(manifest, name="churn2")),
        ("version", dataclasses.replace(manifest, version=2)),
        ("created", dataclasses.replace(manifest, created="2026-11-28T12:00:00+00:00")),
        ("artifact", dataclasses.replace(manifest, artifact=ArtifactInfo(
            sha256=sha256_hex(other), size=len(other), opset=17, chunk_size=len(other),
            chunk_sha256=(sha256_hex(other),)))),
        ("inputs", dataclasses.replace(manifest, inputs=(
            manifest.inputs[0], dataclasses.replace(manifest.inputs[1], categories=("a", "b", "c"))))),
        ("outputs", dataclasses.replace(manifest, outputs=dataclasses.replace(manifest.outputs, classes=(1, 0)))),
        ("reference", dataclasses.replace(manifest, reference={})),
        ("prediction_reference", dataclasses.replace(
            manifest, prediction_reference=Reference(CategoricalBins(("0", "1")), Counts((2, 5))))),
        ("golden", dataclasses.replace(manifest, golden=dataclasses.replace(manifest.golden, tolerance=1.0))),
        ("lineage", dataclasses.replace(manifest, lineage=dataclasses.replace(manifest.lineage, parent_version=1))),
        ("metrics", dataclasses.replace(manifest, metrics={"accuracy": 0.99})),
        ("calibration", dataclasses.replace(manifest, calibration=score_calibration(
            np.array([[0.8, 0.2], [0.3, 0.7]]), np.array([0, 1])))),
    ]


def test_any_tampered_field_fails_verification(tmp_path: Path) -> None:
    private, public = generate_keys(tmp_path)
    signed = sign_manifest(release(), load_private_key(private))
    pub = load_public_key(public)
    names = {f.name for f in dataclasses.fields(ReleaseManifest)} - {"signature"}
    cases = _tampered(signed)
    assert {name for name, _ in cases} == names  # every signed field is covered
    for name, forged in cases:
        assert forged.signature == signed.signature, name
        with pytest.raises(InvalidSignature):
            pub.verify(forged.signature.value, forged.signing_bytes())  # type: ignore[union-attr]
        with pytest.raises(SigningError, match="does not match"):
            check_signature(forged, pub)


def test_a_different_key_is_named_not_trusted(tmp_path: Path) -> None:
    private, _ = generate_keys(tmp_path / "a")
    _, other_public = generate_keys(tmp_path / "b")
    signed = sign_manifest(release(), load_private_key(private))
    with pytest.raises(SigningError, match="signed by key"):
        check_signature(signed, load_public_key(other_public))
    with pytest.raises(SigningError, match="not signed"):
        check_signature(release(), load_public_key(other_public))


def test_the_agent_verifier_accepts_ours_and_rejects_tampering(tmp_path: Path) -> None:
    from edge_agent.errors import VerificationError
    from edge_agent.verify import KeyRing, verify_manifest

    private, public = generate_keys(tmp_path)
    signed = sign_manifest(release(), load_private_key(private))
    keyring = KeyRing.from_paths([public])
    verify_manifest(parse_manifest(signed.to_bytes()), keyring)
    for name, forged in _tampered(signed):
        with pytest.raises(VerificationError, match="invalid signature"):
            verify_manifest(forged, keyring)
        assert name

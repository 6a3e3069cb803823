"""Release signing with Ed25519: the control plane holds the private key, devices hold the public key.

Keys live as files so that any tool (openssl, cryptography) can read them: the private key as unencrypted
PKCS8 PEM readable by its owner only (0600), the public key as SubjectPublicKeyInfo PEM. The signature covers
``manifest.signing_bytes()`` — canonical JSON of everything but the signature — so agents can check it with
nothing more than the protocol package and ``cryptography``.
"""

from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge_agent.durable import atomic_write
from edge_agent.protocol import ReleaseManifest, Signature, key_id
from edgeops.errors import SigningError

PRIVATE_KEY_FILE = "release.key"
PUBLIC_KEY_FILE = "release.pub"
INIT_HINT = "run `edgeops keys init` to create one"


def key_paths(keys_dir: Path) -> tuple[Path, Path]:
    """Where ``generate_keys`` puts the private and public key of ``keys_dir``."""
    return keys_dir / PRIVATE_KEY_FILE, keys_dir / PUBLIC_KEY_FILE


def generate_keys(keys_dir: Path, force: bool = False) -> tuple[Path, Path]:
    """Create a new Ed25519 key pair in ``keys_dir`` and return (private, public) paths.

    Refuses to replace an existing key unless ``force``: releases signed with the old key stop verifying on
    devices that only trust it, so overwriting must be a deliberate act.
    """
    private_path, public_path = key_paths(keys_dir)
    if not force and (private_path.exists() or public_path.exists()):
        raise SigningError(f"a signing key already exists in {keys_dir}; pass --force to replace it")
    try:
        keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = Ed25519PrivateKey.generate()
        private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
        public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
        atomic_write(private_path, private_pem, mode=0o600)
        atomic_write(public_path, public_pem, mode=0o644)
    except OSError as exc:
        raise SigningError(f"cannot write keys to {keys_dir}: {exc.strerror or exc}") from exc
    return private_path, public_path


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read a PKCS8 PEM Ed25519 private key; SigningError with a hint when it is missing or not one."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SigningError(f"no signing key at {path}: {INIT_HINT}") from None
    except OSError as exc:
        raise SigningError(f"cannot read signing key {path}: {exc.strerror or exc}") from exc
    return parse_private_key(data, str(path))


def parse_private_key(data: bytes, where: str) -> Ed25519PrivateKey:
    """A PKCS8 PEM Ed25519 private key from bytes (a file's, or a Secret block's text); ``where`` names the
    source in the error, never the bytes."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningError(f"{where} is not an unencrypted PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"{where} is not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Read a PEM Ed25519 public key."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SigningError(f"no public key at {path}: {INIT_HINT}") from None
    except OSError as exc:
        raise SigningError(f"cannot read public key {path}: {exc.strerror or exc}") from exc
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise SigningError(f"{path} is not a PEM public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SigningError(f"{path} is not an Ed25519 public key")
    return key


def public_key_id(key: Ed25519PublicKey) -> str:
    """The protocol's key id: first 16 hex characters of sha256 over the 32 raw public-key bytes."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return key_id(raw)


def sign_manifest(manifest: ReleaseManifest, key: Ed25519PrivateKey) -> ReleaseManifest:
    """Return ``manifest`` carrying an Ed25519 signature over its signing bytes (any old signature replaced)."""
    signature = Signature(key_id=public_key_id(key.public_key()), value=key.sign(manifest.signing_bytes()))
    return manifest.with_signature(signature)


def check_signature(manifest: ReleaseManifest, key: Ed25519PublicKey) -> None:
    """Control-plane check that ``manifest`` was signed by ``key`` (devices use edge_agent.verify)."""
    sig = manifest.signature
    if sig is None:
        raise SigningError(f"{manifest.name}@{manifest.version} is not signed")
    if sig.key_id != public_key_id(key):
        raise SigningError(f"{manifest.name}@{manifest.version} is signed by key {sig.key_id}, not this one")
    try:
        key.verify(sig.value, manifest.signing_bytes())
    except InvalidSignature:
        raise SigningError(f"{manifest.name}@{manifest.version}: signature does not match") from None

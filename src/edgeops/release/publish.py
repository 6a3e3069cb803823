"""Publishing a registered release to the broker as retained messages, and taking it down again.

The artifact goes out *before* the manifest: an agent that sees a manifest can then always fetch the bytes
it describes. Everything is retained QoS 1 and waits for the broker's PUBACKs, so "published" means the
broker holds it. Publishing is idempotent: when the broker already holds the same manifest and artifact
bytes, nothing is sent again.
"""

import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.protocol import MAX_MESSAGE_BYTES, ReleaseManifest, Topics
from edgeops.errors import RegistryError
from edgeops.mqtt import ControlClient


@dataclass(frozen=True)
class PublishResult:
    model: str
    version: int
    messages: int
    bytes: int
    skipped: bool

    @property
    def ref(self) -> str:
        return f"{self.model}@{self.version}"


def release_messages(topics: Topics, manifest: ReleaseManifest, artifact: bytes) -> list[tuple[str, bytes]]:
    """(topic, payload) in publishing order: the artifact whole or chunk by chunk, then the manifest."""
    info = manifest.artifact
    name, version = manifest.name, manifest.version
    if info.chunks == 1:
        out = [(topics.artifact(name, version), artifact)]
    else:
        out = [(topics.artifact(name, version, i), artifact[i * info.chunk_size:(i + 1) * info.chunk_size])
               for i in range(info.chunks)]
    return [*out, (topics.manifest(name, version), manifest.to_bytes())]


def check_publishable(manifest: ReleaseManifest, artifact: bytes, status: str = "registered",
                      public_key: Ed25519PublicKey | None = None) -> None:
    """Only signed, non-rejected releases whose bytes match their manifest leave the registry."""
    ref = f"{manifest.name}@{manifest.version}"
    if status != "registered":
        raise RegistryError(f"{ref} is {status}; only registered releases can be published")
    if manifest.signature is None:
        raise RegistryError(f"{ref} is not signed; refusing to publish it")
    if hashlib.sha256(artifact).hexdigest() != manifest.artifact.sha256 or len(artifact) != manifest.artifact.size:
        raise RegistryError(f"{ref}: the ONNX bytes do not match the manifest's sha256/size")
    largest = min(manifest.artifact.size, manifest.artifact.chunk_size)  # the whole artifact, or one chunk
    if largest > MAX_MESSAGE_BYTES:  # the shipped broker would drop it, and devices would wait for it in vain
        raise RegistryError(f"{ref}: artifact messages of {largest} bytes exceed the protocol's limit of "
                            f"{MAX_MESSAGE_BYTES}; register it again with a smaller export.chunk_size")
    if public_key is not None:
        try:
            public_key.verify(manifest.signature.value, manifest.signing_bytes())
        except InvalidSignature:
            raise RegistryError(f"{ref}: the signature does not verify with the project's public key") from None


def publish_release(client: ControlClient, topics: Topics, manifest: ReleaseManifest, artifact: bytes, *,
                    status: str = "registered", public_key: Ed25519PublicKey | None = None,
                    force: bool = False) -> PublishResult:
    """Publish ``manifest`` and ``artifact`` retained; skip when the broker already holds exactly them."""
    check_publishable(manifest, artifact, status, public_key)
    messages = release_messages(topics, manifest, artifact)
    if not force:
        held = client.collect_retained(topics.release_filter(manifest.name, manifest.version),
                                       sync_root=topics.prefix)
        if all(held.get(topic) == payload for topic, payload in messages):
            return PublishResult(manifest.name, manifest.version, 0, 0, skipped=True)
    client.publish_many((topic, payload, True) for topic, payload in messages)
    return PublishResult(manifest.name, manifest.version, len(messages), sum(len(p) for _, p in messages),
                         skipped=False)


def unpublish_release(client: ControlClient, topics: Topics, model: str, version: int) -> int:
    """Clear every retained message of the release (manifest first, so agents stop starting new fetches);
    returns how many topics held something."""
    held = client.collect_retained(topics.release_filter(model, version), sync_root=topics.prefix)
    manifest = topics.manifest(model, version)
    order = [manifest, *sorted(t for t in held if t != manifest), topics.artifact(model, version)]
    client.publish_many((topic, b"", True) for topic in dict.fromkeys(order))
    return len(held)

"""Collect one release from the broker: its retained manifest and its artifact, whole or in chunks.

Retained messages of the release's topics arrive in any order after subscribing to ``release_filter``.
The collector buffers artifact pieces (bounded by the device's size limit), and as soon as the manifest
arrives checks its signature and declared size, so an unsigned or oversized release is refused before
megabytes are kept. Chunks are checked against the signed per-chunk hashes as they come.
"""

from dataclasses import dataclass, field

from .errors import VerificationError
from .protocol import ProtocolError, ReleaseManifest, Topics, parse_manifest
from .store import ModelRef
from .verify import KeyRing, check_size, verify_chunk, verify_manifest


@dataclass
class ReleaseCollector:
    ref: ModelRef
    topics: Topics
    keyring: KeyRing
    max_bytes: int
    manifest: ReleaseManifest | None = None
    manifest_bytes: bytes = b""
    whole: bytes | None = None
    chunks: dict[int, bytes] = field(default_factory=dict)

    def add(self, topic: str, payload: bytes) -> None:
        """Take one message of the release; VerificationError rejects the release for good."""
        try:
            model, version, kind, chunk = self.topics.parse_release_topic(topic)
        except ProtocolError:
            return
        if (model, version) != (self.ref.model, self.ref.version) or not payload:
            return  # another release, or a retained message being cleared
        if kind == "manifest":
            self._take_manifest(payload)
            return
        if len(payload) > self.max_bytes or self._buffered() + len(payload) > 2 * self.max_bytes:
            raise VerificationError(f"artifact data of {self._buffered() + len(payload)} bytes exceeds the "
                                    f"limit of {self.max_bytes} bytes")
        if chunk is None:
            self.whole = payload
        else:
            if self.manifest is not None:
                verify_chunk(self.manifest, chunk, payload)
            self.chunks[chunk] = payload

    def _take_manifest(self, payload: bytes) -> None:
        try:
            manifest = parse_manifest(payload)
        except ProtocolError as exc:
            raise VerificationError(f"malformed manifest: {exc}") from exc
        if (manifest.name, manifest.version) != (self.ref.model, self.ref.version):
            raise VerificationError(f"manifest names {manifest.name}@{manifest.version}, expected {self.ref}")
        try:
            verify_manifest(manifest, self.keyring, payload)
        except ProtocolError as exc:  # a manifest whose content cannot be re-encoded is as bad as a forged one
            raise VerificationError(f"manifest cannot be verified: {exc}") from exc
        check_size(manifest, self.max_bytes)
        self.manifest, self.manifest_bytes = manifest, payload
        for index, data in self.chunks.items():
            verify_chunk(manifest, index, data)

    def _buffered(self) -> int:
        return len(self.whole or b"") + sum(len(c) for c in self.chunks.values())

    def result(self) -> tuple[ReleaseManifest, bytes] | None:
        """(manifest, artifact bytes) once everything arrived, else None (keep waiting)."""
        manifest = self.manifest
        if manifest is None:
            return None
        info = manifest.artifact
        if self.whole is not None and (len(self.whole) == info.size or info.chunks == 1):
            return manifest, self.whole
        if all(i in self.chunks for i in range(info.chunks)):
            return manifest, b"".join(self.chunks[i] for i in range(info.chunks))
        return None

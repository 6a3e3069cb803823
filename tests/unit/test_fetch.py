"""Collecting a release from retained messages that arrive in any order, with early refusals."""

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from releases import Release, build_release, new_key, with_bytes

from edge_agent.errors import VerificationError
from edge_agent.fetch import ReleaseCollector
from edge_agent.protocol import Topics
from edge_agent.store import ModelRef
from edge_agent.verify import KeyRing

pytestmark = pytest.mark.unit

TOPICS = Topics("t")


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return new_key()


@pytest.fixture(scope="module")
def chunked(key: Ed25519PrivateKey) -> Release:
    return build_release("churn", 5, key, chunk_size=300)


def collector(key: Ed25519PrivateKey, max_bytes: int = 1 << 20, version: int = 5) -> ReleaseCollector:
    return ReleaseCollector(ModelRef("churn", version), TOPICS, KeyRing.from_public_keys([key.public_key()]), max_bytes)


def chunks(release: Release) -> list[bytes]:
    size = release.manifest.artifact.chunk_size
    return [release.data[i:i + size] for i in range(0, len(release.data), size)]


def test_chunks_before_and_after_the_manifest_in_any_order(key: Ed25519PrivateKey, chunked: Release) -> None:
    c = collector(key)
    parts = chunks(chunked)
    assert len(parts) > 2
    for i in reversed(range(1, len(parts))):
        c.add(TOPICS.artifact("churn", 5, i), parts[i])
    assert c.result() is None
    c.add(TOPICS.manifest("churn", 5), chunked.manifest.to_bytes())
    assert c.result() is None  # chunk 0 still missing
    c.add(TOPICS.artifact("churn", 5, 0), parts[0])
    assert c.result() == (chunked.manifest, chunked.data)
    assert c.manifest_bytes == chunked.manifest.to_bytes()


def test_whole_artifact_release(key: Ed25519PrivateKey) -> None:
    release = build_release("churn", 5, key)
    c = collector(key)
    c.add(TOPICS.manifest("churn", 5), release.manifest.to_bytes())
    c.add(TOPICS.artifact("churn", 5), release.data)
    assert c.result() == (release.manifest, release.data)


def test_other_releases_cleared_retained_messages_and_foreign_topics_are_ignored(
        key: Ed25519PrivateKey, chunked: Release) -> None:
    c = collector(key)
    c.add(TOPICS.manifest("churn", 6), b"garbage for another version")
    c.add(TOPICS.artifact("other", 5), b"x")
    c.add(TOPICS.manifest("churn", 5), b"")  # a retained message being deleted
    c.add("elsewhere/releases/churn/5/manifest", b"{}")
    assert c.manifest is None and c.result() is None


def test_a_corrupt_chunk_is_refused_as_soon_as_it_can_be_checked(key: Ed25519PrivateKey, chunked: Release) -> None:
    parts = chunks(chunked)
    c = collector(key)
    c.add(TOPICS.artifact("churn", 5, 1), bytes(len(parts[1])))  # buffered: no manifest yet to judge it
    with pytest.raises(VerificationError, match="chunk 1 sha256 mismatch"):
        c.add(TOPICS.manifest("churn", 5), chunked.manifest.to_bytes())
    c2 = collector(key)
    c2.add(TOPICS.manifest("churn", 5), chunked.manifest.to_bytes())
    with pytest.raises(VerificationError, match="chunk 2 sha256 mismatch"):
        c2.add(TOPICS.artifact("churn", 5, 2), parts[1])


def test_manifest_problems_are_refused_before_any_artifact_is_kept(key: Ed25519PrivateKey, chunked: Release) -> None:
    with pytest.raises(VerificationError, match="malformed manifest"):
        collector(key).add(TOPICS.manifest("churn", 5), b"{not json")
    with pytest.raises(VerificationError, match="manifest names churn@5, expected churn@9"):
        collector(key, version=9).add(TOPICS.manifest("churn", 9), chunked.manifest.to_bytes())
    with pytest.raises(VerificationError, match="unknown signing key"):
        collector(new_key()).add(TOPICS.manifest("churn", 5), chunked.manifest.to_bytes())
    big = with_bytes(chunked, chunked.data * 4, key)
    with pytest.raises(VerificationError, match="exceeds the limit of 2000 bytes"):
        collector(key, max_bytes=2000).add(TOPICS.manifest("churn", 5), big.manifest.to_bytes())


def test_artifact_data_beyond_the_limit_is_refused_while_collecting(key: Ed25519PrivateKey) -> None:
    c = collector(key, max_bytes=1000)
    with pytest.raises(VerificationError, match="exceeds the limit of 1000 bytes"):
        c.add(TOPICS.artifact("churn", 5), bytes(1001))
    c = collector(key, max_bytes=1000)
    c.add(TOPICS.artifact("churn", 5, 0), bytes(900))
    c.add(TOPICS.artifact("churn", 5, 1), bytes(900))
    with pytest.raises(VerificationError, match="exceeds the limit"):
        c.add(TOPICS.artifact("churn", 5, 2), bytes(900))


def test_a_manifest_that_cannot_be_re_encoded_is_refused_not_raised(key: Ed25519PrivateKey,
                                                                    chunked: Release) -> None:
    """A lone surrogate escape is valid JSON that parses, but no UTF-8 encoding of it exists, so the signing
    bytes cannot be rebuilt: the collector must refuse the release like any unverifiable one."""
    payload = chunked.manifest.to_bytes().replace(b'"code_revision":null', b'"code_revision":"\\ud800"')
    assert payload != chunked.manifest.to_bytes()
    with pytest.raises(VerificationError, match="cannot be verified"):
        collector(key).add(TOPICS.manifest("churn", 5), payload)

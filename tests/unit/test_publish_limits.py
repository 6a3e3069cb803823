"""A release leaves the registry only in messages the broker carries (the protocol's MAX_MESSAGE_BYTES)."""

from pathlib import Path

import pytest
from manifests import fake_manifest

from edge_agent.protocol import MAX_MESSAGE_BYTES, Topics
from edgeops.errors import RegistryError
from edgeops.release.publish import check_publishable, release_messages
from edgeops.release.signing import generate_keys, load_private_key, sign_manifest

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("size", "chunk_size", "ok"), [
    (3 * MAX_MESSAGE_BYTES, MAX_MESSAGE_BYTES, True),        # chunks of the largest size allowed
    (MAX_MESSAGE_BYTES, 4 * MAX_MESSAGE_BYTES, True),        # one message, not over the limit
    (MAX_MESSAGE_BYTES + 1, 4 * MAX_MESSAGE_BYTES, False),   # one message, one byte over
    (3 * MAX_MESSAGE_BYTES, MAX_MESSAGE_BYTES + 1, False),   # chunks one byte over
])
def test_only_releases_in_messages_under_the_limit_are_published(tmp_path: Path, size: int, chunk_size: int,
                                                                 ok: bool) -> None:
    artifact = bytes(size)
    key = load_private_key(generate_keys(tmp_path / "keys")[0])
    manifest = sign_manifest(fake_manifest(onnx=artifact, chunk_size=chunk_size), key)
    if ok:
        check_publishable(manifest, artifact)
        assert max(len(p) for _, p in release_messages(Topics(), manifest, artifact)) <= MAX_MESSAGE_BYTES
    else:
        with pytest.raises(RegistryError, match=r"churn@1: artifact messages of \d+ bytes exceed"):
            check_publishable(manifest, artifact)

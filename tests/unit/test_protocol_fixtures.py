"""Saved examples of every message and every manifest schema version (tests/fixtures/protocol/).

Old examples are never edited: they prove that this code still reads what older senders wrote, that a
minor bump with unknown fields is accepted (and its signature still verifies), and that an unknown major
is refused with the field named. Examples of the current version must also re-encode to the identical bytes,
so an accidental change of the wire format fails here. ``python tests/unit/test_protocol_fixtures.py``
writes the files that are missing (see docs/protocol.md, "Changing a schema").
"""

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.desired import verify_desired_signature
from edge_agent.protocol import (
    SCHEMA_VERSIONS,
    AgentEvent,
    Counts,
    Desired,
    FeedbackCredit,
    ProtocolError,
    Reported,
    ScoreCounts,
    Status,
    TelemetryWindow,
    canonical_json,
    parse_manifest,
)
from edge_agent.verify import KeyRing, verify_manifest

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "protocol"
PARSERS: dict[str, Any] = {"manifest": parse_manifest, "desired": Desired.parse, "reported": Reported.parse,
                           "status": Status.parse, "event": AgentEvent.parse, "telemetry": TelemetryWindow.parse}
SCHEMA_OF = {"manifest": "edgeops.manifest", "desired": "edgeops.desired", "reported": "edgeops.reported",
             "status": "edgeops.status", "event": "edgeops.event", "telemetry": "edgeops.telemetry"}


def fixture_key() -> Ed25519PrivateKey:
    """A fixed test key (never used for anything real), so regenerated examples stay verifiable."""
    return Ed25519PrivateKey.from_private_bytes(b"edgeops-protocol-fixture-key-v1!")


def examples() -> list[Path]:
    return sorted(p for p in FIXTURES.glob("*.json"))


def kind_and_version(path: Path) -> tuple[str, str]:
    kind, version = path.stem.split("-")[:2]
    return kind, version


def keyring() -> KeyRing:
    pem = (FIXTURES / "key.pub").read_bytes()
    key = serialization.load_pem_public_key(pem)
    return KeyRing.from_public_keys([key])  # type: ignore[list-item]


def test_every_schema_has_an_example_of_its_current_version() -> None:
    have = {kind_and_version(p) for p in examples()}
    for kind, schema in SCHEMA_OF.items():
        assert (kind, SCHEMA_VERSIONS[schema]) in have, f"no saved example of {schema} {SCHEMA_VERSIONS[schema]}"


@pytest.mark.parametrize("path", examples(), ids=lambda p: p.name)
def test_saved_example_is_read_as_its_version_says(path: Path) -> None:
    kind, version = kind_and_version(path)
    payload = path.read_bytes()
    major = int(version.split(".")[0])
    if major != 1:  # a major this code does not know: refused, with the field named
        with pytest.raises(ProtocolError, match=r"schema\.version"):
            PARSERS[kind](payload)
        return
    parsed = PARSERS[kind](payload)
    if kind == "manifest":
        verify_manifest(parsed, keyring(), payload)
    if kind == "desired" and parsed.signature is not None:
        verify_desired_signature(parsed, payload, keyring())
    if version == SCHEMA_VERSIONS[SCHEMA_OF[kind]]:
        assert parsed.to_bytes() == payload, "the current version must re-encode byte for byte"


def test_a_minor_bump_signature_would_not_verify_over_the_re_encoded_dataclass() -> None:
    """Why signatures are checked over the received bytes: re-encoding drops the fields 1.1 added."""
    payload = (FIXTURES / "manifest-1.1.json").read_bytes()
    manifest = parse_manifest(payload)
    assert canonical_json({k: v for k, v in json.loads(payload).items() if k != "signature"}) \
        != manifest.signing_bytes()


# writing the examples ----------------------------------------------------------------------------------
def _write(name: str, payload: bytes) -> None:
    path = FIXTURES / name
    if path.exists():
        return  # saved examples are history: never rewritten
    path.write_bytes(payload)
    print("wrote", path)


def _signed(obj: dict[str, Any], key: Ed25519PrivateKey) -> bytes:
    from releases import kid  # test helper; only needed when writing

    body = {k: v for k, v in obj.items() if k != "signature"}
    import base64

    sig = {"algorithm": "ed25519", "key_id": kid(key),
           "value": base64.b64encode(key.sign(canonical_json(body))).decode()}
    return canonical_json({**body, "signature": sig})


def write_missing_examples() -> None:
    sys.path.insert(0, str(FIXTURES.parents[1]))
    from releases import build_release

    key = fixture_key()
    FIXTURES.mkdir(parents=True, exist_ok=True)
    _write("key.pub", key.public_key().public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo))
    manifest = build_release("churn", 7, key, chunk_size=512).manifest
    _write("manifest-1.0.json", manifest.to_bytes())
    newer = manifest.to_json()
    newer["schema"]["version"] = "1.1"
    newer["deployment_hints"] = {"min_ram_mb": 64}  # a field 1.0 does not know
    newer["inputs"][0]["unit"] = "years"
    _write("manifest-1.1.json", _signed(newer, key))
    calibrated = build_release("churn", 7, key, chunk_size=512, calibrated=True).manifest
    _write("manifest-1.2.json", calibrated.to_bytes())  # 1.2: calibration
    future = manifest.to_json()
    future["schema"]["version"] = "2.0"
    _write("manifest-2.0.json", _signed(future, key))
    ts = "2026-11-27T12:00:00.000Z"
    desired = Desired(device="press-17", model="churn", version=7, rollout_id="r-42", ts=ts)
    _write("desired-1.0.json", desired.to_bytes())
    signed_desired = Desired(device="press-17", model="churn", version=7, rollout_id="r-42", counter=1796212800000,
                             expires="2026-12-04T12:00:00.000Z", ts=ts).to_json()
    _write("desired-1.1.json", _signed(signed_desired, key))
    clear = Desired(device="press-17", model=None, version=None, rollout_id="r-43", counter=1796212800001,
                    expires="2026-12-04T12:00:00.000Z", ts=ts).to_json()
    _write("desired-1.1-clear.json", _signed(clear, key))
    newer_desired = {**signed_desired, "schema": {"name": "edgeops.desired", "version": "1.2"},
                     "priority": "low"}  # a field 1.1 does not know: still parsed, the signature still verifies
    _write("desired-1.2.json", _signed(newer_desired, key))
    old_desired = Desired(device="press-17", model="churn", version=7, ts=ts).to_json()
    old_desired["schema"]["version"] = "2.0"
    _write("desired-2.0.json", canonical_json(old_desired))
    _write("reported-1.0.json", Reported(device="press-17", state="serving", model="churn", version=7,
                                         desired_version=7, rollout_id="r-42", agent_version="0.1.0",
                                         labels={"site": "berlin"}, ts=ts).to_bytes())
    _write("status-1.0.json", Status(device="press-17", status="offline", ts=ts).to_bytes())
    _write("event-1.0.json", AgentEvent(device="press-17", event="rejected", model="churn", version=8,
                                        reason="artifact sha256 mismatch", rollout_id="r-43", ts=ts).to_bytes())
    _write("telemetry-1.1.json", TelemetryWindow(  # 1.0 had no epoch
        device="press-17", epoch="5eed0f1c2a3b4d5e", seq=12, model="churn", version=7, start=ts, end=ts, count=40,
        errors={"invalid_input": 2}, latency_ms={"p50": 0.2, "p95": 0.4, "p99": 0.9, "max": 1.5},
        features={"age in years": Counts((3, 10, 12, 9, 4), underflow=1, missing=1),
                  "plan": Counts((20, 15, 3), unseen=2)},
        predictions=Counts((25, 15)), feedback={"labelled": 10.0, "accuracy": 0.8}, ts=ts).to_bytes())
    _write("telemetry-1.2.json", TelemetryWindow(  # 1.2: feedback_for credits labels to their predictions' windows
        device="press-17", epoch="5eed0f1c2a3b4d5e", seq=13, model="churn", version=8, start=ts, end=ts, count=0,
        feedback={"labelled": 3.0, "accuracy": 2 / 3},
        feedback_for=(FeedbackCredit("churn", 7, "2026-11-27T11:58:00.000Z", 2, correct=1),
                      FeedbackCredit("churn", 8, "2026-11-27T11:59:00.000Z", 1, correct=1)), ts=ts).to_bytes())
    _write("telemetry-1.2-scores.json", TelemetryWindow(  # 1.2: scores (the member is absent when there are none)
        device="press-17", epoch="5eed0f1c2a3b4d5e", seq=13, model="churn", version=7, start=ts, end=ts, count=40,
        errors={}, latency_ms={"p50": 0.2, "p95": 0.4, "p99": 0.9, "max": 1.5},
        features={"age in years": Counts((3, 10, 12, 9, 5), underflow=1), "plan": Counts((20, 15, 5))},
        predictions=Counts((25, 15)), scores=ScoreCounts(
            predicted=((0,) * 10 + (2, 3, 2, 4, 1, 3, 2, 3, 2, 3), (0,) * 10 + (1, 1, 2, 1, 2, 1, 2, 1, 2, 2)),
            other=((1, 2, 1, 2, 1, 2, 1, 1, 2, 2) + (0,) * 10, (3, 2, 3, 2, 4, 1, 3, 2, 3, 2) + (0,) * 10)),
        ts=ts).to_bytes())


if __name__ == "__main__":
    write_missing_examples()

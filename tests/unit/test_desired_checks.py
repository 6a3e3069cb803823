"""The pure checks of edge_agent/desired.py and the control plane's signer, without a broker."""

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.desired import DesiredGuard, Seen, judge_desired
from edge_agent.errors import VerificationError
from edge_agent.protocol import Desired, ProtocolError, Signature, canonical_json
from edge_agent.verify import KeyRing
from edgeops.release.signing import public_key_id
from edgeops.rollout.signer import DesiredSigner

pytestmark = pytest.mark.unit

KEY = Ed25519PrivateKey.generate()
RING = KeyRing.from_public_keys([KEY.public_key()])
NOW = 1_800_000_000.0


def signer(now: float = NOW, key: Ed25519PrivateKey = KEY, lifetime_s: float = 3600.0) -> DesiredSigner:
    return DesiredSigner(key, lifetime_s=lifetime_s, clock=lambda: now)


def judge(payload: bytes, seen: Seen | None = None, now: float = NOW, policy: str = "required") -> Seen | None:
    return judge_desired(Desired.parse(payload), payload, RING, seen=seen, now=now, policy=policy)  # type: ignore[arg-type]


def test_a_good_signature_is_accepted_and_remembered() -> None:
    payload = signer().sign("d1", "churn", 2, "r1")
    seen = judge(payload)
    assert seen is not None and seen.counter == Desired.parse(payload).counter


def test_the_same_message_again_is_accepted_as_already_seen_even_after_it_expired() -> None:
    payload = signer().sign("d1", "churn", 2)
    seen = judge(payload)
    assert judge(payload, seen, now=NOW + 10 * 3600) == seen


@pytest.mark.parametrize("case, reason", [
    ("unsigned", "desired state is not signed"), ("unknown key", "desired state: unknown signing key"),
    ("bad signature", "desired state: invalid signature"),
    ("expired", "expired at"), ("lower counter", "is not above"), ("same counter, other bytes", "is not above"),
])
def test_what_a_device_refuses(case: str, reason: str) -> None:
    sign = signer()
    old = sign.sign("d1", "churn", 1)
    new = sign.sign("d1", "churn", 2)
    seen = judge(new)
    payload, now, remembered = {
        "unsigned": (Desired(device="d1", model="churn", version=3).to_bytes(), NOW, None),
        "unknown key": (signer(key=Ed25519PrivateKey.generate()).sign("d1", "churn", 3), NOW, None),
        "bad signature": (new.replace(b'"version":2', b'"version":1'), NOW, None),
        "expired": (sign.sign("d1", "churn", 3), NOW + 3600, seen),
        "lower counter": (old, NOW, seen),
        "same counter, other bytes": (_resigned(new, rollout_id="x"), NOW, seen),
    }[case]
    with pytest.raises(VerificationError, match=reason):
        judge(payload, remembered, now=now)


def _resigned(payload: bytes, **changes: object) -> bytes:
    """``payload`` with fields changed and signed again by KEY, same counter."""
    obj = {k: v for k, v in json.loads(payload).items() if k != "signature"}
    obj.update(changes)
    sig = Signature(key_id=public_key_id(KEY.public_key()), value=KEY.sign(canonical_json(obj)))
    return canonical_json({**obj, "signature": sig.to_json()})


def test_the_migration_switch_accepts_unsigned_until_the_first_signed_one() -> None:
    unsigned = Desired(device="d1", model="churn", version=3).to_bytes()
    assert judge(unsigned, policy="optional") is None
    seen = judge(signer().sign("d1", "churn", 2), policy="optional")
    with pytest.raises(VerificationError, match="already accepted signed"):
        judge(unsigned, seen, policy="optional")


def test_a_signed_message_without_counter_or_expiry_is_refused() -> None:
    obj = Desired(device="d1", model="churn", version=2).to_json()
    with pytest.raises(VerificationError, match="counter and an expiry"):
        judge(_resigned(canonical_json(obj)))


def test_a_minor_bump_with_unknown_fields_still_verifies() -> None:
    obj = json.loads(signer().sign("d1", "churn", 2))
    del obj["signature"]
    obj["schema"]["version"] = "1.7"
    obj["priority"] = "low"
    assert judge(_resigned(canonical_json(obj))) is not None


def test_counters_grow_per_device_past_what_was_read_from_the_broker() -> None:
    sign = signer()
    first = Desired.parse(sign.sign("d1", "churn", 1)).counter
    assert Desired.parse(sign.sign("d1", "churn", 1)).counter == first + 1  # same millisecond
    other = signer(now=NOW - 3600)  # a controller whose clock is behind reads the retained desired first
    other.note("d1", sign.sign("d1", "churn", 1))
    assert Desired.parse(other.sign("d1", "churn", 2)).counter == first + 3


def test_an_abort_restores_the_previous_release_or_clears_as_a_new_message() -> None:
    sign = signer()
    previous = sign.sign("d1", "churn", 1, "r-old")
    rollout = sign.sign("d1", "churn", 2, "r-new")
    restored = Desired.parse(sign.restore("d1", previous, "r-new"))
    assert (restored.model, restored.version, restored.rollout_id) == ("churn", 1, "r-old")
    assert restored.counter > Desired.parse(rollout).counter  # type: ignore[operator]
    cleared = Desired.parse(sign.restore("d2", None, "r-new"))
    assert cleared.clears and cleared.signature is not None


def test_model_and_version_are_both_set_or_both_null() -> None:
    with pytest.raises(ProtocolError, match="model"):
        Desired(device="d1", model="churn", version=None)


def test_the_guard_persists_the_counter_so_a_restart_still_refuses_a_replay(tmp_path: Path) -> None:
    sign = signer()
    old, new = sign.sign("d1", "churn", 1), sign.sign("d1", "churn", 2)
    guard = DesiredGuard(tmp_path / "desired.json", RING, clock=lambda: NOW)
    guard.admit(Desired.parse(new), new)
    restarted = DesiredGuard(tmp_path / "desired.json", RING, clock=lambda: NOW)
    restarted.admit(Desired.parse(new), new)  # the retained message redelivered: fine
    with pytest.raises(VerificationError, match="is not above"):
        restarted.admit(Desired.parse(old), old)

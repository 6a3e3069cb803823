"""Which desired states a device obeys: signed by a trusted key, newer than the last one it accepted, not expired.

MQTT lets any client allowed to publish ``desired`` retain any bytes there, including an old message the control
plane once signed. The signature alone would accept a year-old desired state naming a vulnerable release, so
(Uptane's idea) the control plane also signs a per-device ``counter`` that only grows and an ``expires``
instant. ``admit`` refuses:

- an unsigned message (unless ``desired_signatures = "optional"``, the migration switch, and this device has not
  accepted a signed one yet: one signed message ends the migration for good on that device),
- a signature by an unknown key or one that does not verify over the bytes as received,
- a counter not above the last accepted one (a replay, or an older desired state: a downgrade),
- an expired message.

The broker redelivers the retained message on every reconnect and restart: the *same* message (same counter,
same bytes) as the last accepted one is accepted again quietly, even when it has expired since, because it is
not a new instruction. The last accepted counter and the sha256 of its message are kept in ``desired.json`` in
the data directory (written atomically before the agent acts on the message), so a restarted agent still refuses
a replay.
"""

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .config import SignaturePolicy
from .durable import atomic_write
from .errors import VerificationError
from .protocol import Desired, iso_ms
from .verify import KeyRing, check_signature, signing_bytes

log = logging.getLogger(__name__)

DESIRED_FILE = "desired.json"


@dataclass(frozen=True)
class Seen:
    """The last signed desired state a device accepted: its counter and the sha256 of its bytes."""

    counter: int
    sha256: str


def desired_signing_bytes(payload: bytes) -> bytes:
    """The bytes a desired state's signature covers: as for manifests, from the message as received."""
    return signing_bytes(payload, "desired state")


def verify_desired_signature(desired: Desired, payload: bytes, keyring: KeyRing) -> None:
    """Raise VerificationError unless ``desired`` (parsed from ``payload``) is signed by a trusted key."""
    check_signature(desired.signature, keyring, lambda: desired_signing_bytes(payload), "desired state")


def judge_desired(desired: Desired, payload: bytes, keyring: KeyRing, *, seen: Seen | None, now: float,
                  policy: SignaturePolicy = "required") -> Seen | None:
    """The pure decision. Returns what to remember after accepting ``desired`` (``seen`` itself when it is the
    same message again; None for an unsigned message the migration switch lets through), or raises
    VerificationError with a one-line reason."""
    if desired.signature is None:
        if policy == "optional" and seen is None:
            return None
        why = "desired_signatures is required" if policy == "required" else \
            f"this device already accepted signed desired states (counter {seen.counter if seen else 0})"
        raise VerificationError(f"desired state is not signed ({why})")
    verify_desired_signature(desired, payload, keyring)
    if desired.counter is None or desired.expires_at is None:
        raise VerificationError("a signed desired state needs a counter and an expiry")
    digest = hashlib.sha256(payload).hexdigest()
    if seen is not None and (desired.counter, digest) == (seen.counter, seen.sha256):
        return seen  # the retained message again (reconnect, restart): not a new instruction
    if seen is not None and desired.counter <= seen.counter:
        raise VerificationError(f"counter {desired.counter} is not above {seen.counter}, the last accepted: "
                                "a replayed or older desired state")
    if now >= desired.expires_at:
        raise VerificationError(f"desired state expired at {desired.expires} (device clock {iso_ms(now)})")
    return Seen(desired.counter, digest)


class DesiredGuard:
    """``judge_desired`` plus the device's memory of the last accepted counter (``desired.json``)."""

    def __init__(self, path: Path, keyring: KeyRing, policy: SignaturePolicy = "required",
                 clock: Callable[[], float] = time.time) -> None:
        self.path, self.keyring, self.policy, self.clock = path, keyring, policy, clock
        self.seen = read_seen(path)

    def admit(self, desired: Desired, payload: bytes) -> None:
        """Accept ``desired`` (persisting its counter first) or raise VerificationError."""
        seen = judge_desired(desired, payload, self.keyring, seen=self.seen, now=self.clock(), policy=self.policy)
        if seen is None:
            log.warning("accepting an unsigned desired state (desired_signatures = optional)")
        elif seen != self.seen:
            atomic_write(self.path, json.dumps({"counter": seen.counter, "sha256": seen.sha256}).encode())
            self.seen = seen


def read_seen(path: Path) -> Seen | None:
    """The persisted last accepted desired state; None when there is none. A file that cannot be read is logged
    and taken as none (the device keeps taking orders; expiry still bounds what a replay can bring back)."""
    try:
        obj = json.loads(path.read_bytes())
        counter, digest = obj["counter"], obj["sha256"]
        if type(counter) is not int or type(digest) is not str:
            raise ValueError("counter or sha256 has the wrong type")
        return Seen(counter, digest)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.error("%s is unreadable (%s): the last accepted desired counter is lost", path, exc)
        return None

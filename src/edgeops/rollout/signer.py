"""Signed desired states: what the control plane tells a device, with a counter that only grows and an expiry.

Devices refuse a desired state whose counter is not above the last one they accepted, or that has expired
(edge_agent/desired.py), so every instruction — a wave, a re-send on resume, an abort's restore — is a *new*
signed message, never old bytes published again. The counter needs no central service, so several controllers
on several machines can sign for the same fleet: it is the signing time in milliseconds, or one more than the
highest counter this signer has seen for the device (the retained desired state read before planning, and
every one it signed since) when that is higher. Controllers' clocks must therefore be roughly right (NTP): a
controller whose clock is far behind another's signs counters that devices refuse until time catches up.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.protocol import Desired, ProtocolError, Signature, iso_ms
from edgeops.config import ProjectConfig
from edgeops.credentials import signing_key
from edgeops.release.signing import public_key_id

DEFAULT_LIFETIME_S = 7 * 24 * 3600.0
"""How long a device acts on a desired state after it was signed (``rollout.desired_lifetime_days``)."""


@dataclass
class DesiredSigner:
    """Signs desired states for devices with the release key (``edgeops keys init``)."""

    key: Ed25519PrivateKey
    lifetime_s: float = DEFAULT_LIFETIME_S
    clock: Callable[[], float] = time.time
    _highest: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.lifetime_s > 0:
            raise ValueError(f"desired lifetime must be positive, got {self.lifetime_s!r}")
        self._key_id = public_key_id(self.key.public_key())

    def note(self, device: str, payload: bytes | None) -> None:
        """Remember the counter of a desired state read from the broker (unparseable bytes are ignored)."""
        if not payload:
            return
        try:
            counter = Desired.parse(payload).counter
        except ProtocolError:
            return
        if counter is not None:
            self._highest[device] = max(self._highest.get(device, 0), counter)

    def sign(self, device: str, model: str | None, version: int | None, rollout_id: str | None = None) -> bytes:
        """The bytes of a new signed desired state (``model`` and ``version`` None: a signed clear)."""
        now = self.clock()
        counter = max(int(now * 1000), self._highest.get(device, 0) + 1)
        self._highest[device] = counter
        desired = Desired(device=device, model=model, version=version, rollout_id=rollout_id, counter=counter,
                          expires=iso_ms(now + self.lifetime_s), ts=iso_ms(now))
        signature = Signature(key_id=self._key_id, value=self.key.sign(desired.signing_bytes()))
        return desired.with_signature(signature).to_bytes()

    def restore(self, device: str, previous: bytes | None, rollout_id: str | None = None) -> bytes:
        """A new signed desired state naming what ``previous`` (a device's desired state before a rollout)
        named, or a signed clear when there was none: an abort is a new instruction, not a replay."""
        self.note(device, previous)
        try:
            before = Desired.parse(previous) if previous else None
        except ProtocolError:
            before = None
        if before is None or before.clears:
            return self.sign(device, None, None, rollout_id)
        return self.sign(device, before.model, before.version, before.rollout_id)


def desired_signer(cfg: ProjectConfig) -> DesiredSigner:
    """The signer of a project: its release key (edgeops.credentials.signing_key: the environment, a Secret
    block, or ``registry.keys_dir``) and ``rollout.desired_lifetime_days``. SigningError with a hint when the key
    is missing."""
    return DesiredSigner(signing_key(cfg), lifetime_s=cfg.rollout.desired_lifetime_days * 86400.0)

"""Canonical JSON: the exact bytes that signatures cover and that go on the wire.

Both sides must produce identical bytes for the same object, so the encoding is fixed here once: keys
sorted, no insignificant whitespace, UTF-8, and NaN/Infinity refused (they are not JSON and would make the
bytes depend on the encoder).
"""

import json
import math
from typing import Any

from .errors import ProtocolError

MAX_MESSAGE_BYTES = 1 << 20
"""Largest JSON control message a receiver parses (manifests with golden samples and bins included)."""


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not allowed")


def _finite(text: str) -> float:
    """A JSON number like ``1e999`` is valid JSON but becomes infinity: refused like the Infinity literal, or a
    signed manifest carrying one would fail only later, when its canonical bytes are rebuilt for verification
    (found by tests/unit/test_protocol_fuzz.py: one flipped byte in a real manifest)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


# One decoder for every call: json.loads with a hook builds a new JSONDecoder (and its scanner) each time, which
# the ingest paid per message. A decoder holds no per-call state, so sharing it across threads is safe.
_DECODER = json.JSONDecoder(parse_constant=_no_constants, parse_float=_finite)


# One encoder too: json.dumps with options builds a JSONEncoder per call (a third of the cost of encoding a
# report); ``encode`` keeps no state between calls.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canonical_json(obj: Any) -> bytes:
    """Encode ``obj`` canonically; raise ProtocolError for values JSON cannot carry exactly."""
    try:
        return _ENCODER.encode(obj).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"not encodable as canonical JSON: {exc}") from exc


def parse_json(payload: bytes | str, *, limit: int = MAX_MESSAGE_BYTES) -> dict[str, Any]:
    """Decode a JSON object from untrusted bytes with a size limit; NaN and Infinity are rejected."""
    if len(payload) > limit:
        raise ProtocolError(f"payload of {len(payload)} bytes exceeds the limit of {limit}")
    if isinstance(payload, bytes | bytearray):
        try:
            payload = bytes(payload).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("payload is not UTF-8") from exc

    try:
        obj = _DECODER.decode(payload)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"malformed JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise ProtocolError("payload must be a JSON object")
    return obj


def sha256_hex(data: bytes) -> str:
    import hashlib  # not at the top: loading OpenSSL's hashes costs a CLI command that never hashes ~2 ms

    return hashlib.sha256(data).hexdigest()


def key_id(public_key_raw: bytes) -> str:
    """Short, stable id of an Ed25519 public key (its 32 raw bytes): first 16 hex chars of their sha256."""
    if len(public_key_raw) != 32:
        raise ProtocolError("an Ed25519 public key has 32 raw bytes")
    return sha256_hex(public_key_raw)[:16]

"""The Ed25519 signature a manifest and a desired-state message carry. Its own module so that reading device
state (``Desired``) does not load the manifest's classes."""

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from .errors import ProtocolError
from .fields import check_type, require

SIGNATURE_ALGORITHM = "ed25519"


@dataclass(frozen=True)
class Signature:
    """The Ed25519 signature over the canonical JSON of the rest of the manifest."""

    key_id: str
    value: bytes
    algorithm: str = SIGNATURE_ALGORITHM

    def to_json(self) -> dict[str, str]:
        return {"algorithm": self.algorithm, "key_id": self.key_id,
                "value": base64.b64encode(self.value).decode("ascii")}

    @classmethod
    def from_json(cls, obj: Any, path: str = "signature") -> "Signature":
        obj = check_type(obj, dict, path)
        algorithm = require(obj, "algorithm", str, path)
        if algorithm != SIGNATURE_ALGORITHM:
            raise ProtocolError(f"unsupported algorithm {algorithm!r}", field=f"{path}.algorithm")
        try:
            value = base64.b64decode(require(obj, "value", str, path), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ProtocolError("is not base64", field=f"{path}.value") from exc
        return cls(key_id=require(obj, "key_id", str, path), value=value, algorithm=algorithm)

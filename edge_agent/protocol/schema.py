"""Schema tags: every message and manifest names its schema and a ``MAJOR.MINOR`` version.

A receiver accepts any minor version of a major it knows (new optional fields are ignored) and rejects an
unknown major with a ProtocolError. To change a schema: add optional fields with a minor bump; anything a
current receiver would misread needs a major bump, a new parser branch, and a saved example under
tests/fixtures/protocol/ (see docs/protocol.md, "Changing a schema").
"""

import re
from dataclasses import dataclass
from typing import Any

from .errors import ProtocolError
from .fields import require

MANIFEST = "edgeops.manifest"
DESIRED = "edgeops.desired"
REPORTED = "edgeops.reported"
STATUS = "edgeops.status"
TELEMETRY = "edgeops.telemetry"
EVENT = "edgeops.event"

CURRENT: dict[str, str] = {
    MANIFEST: "1.2",  # 1.2: calibration (1.1 was never written: its saved example is a made-up newer minor)
    DESIRED: "1.1",  # 1.1: counter, expires, signature; model and version null = a signed clear
    REPORTED: "1.0",
    STATUS: "1.0",
    TELEMETRY: "1.2",  # 1.1: epoch; 1.2: feedback_for, scores
    EVENT: "1.0",
}
SUPPORTED_MAJORS: dict[str, frozenset[int]] = {name: frozenset({1}) for name in CURRENT}
_MAJOR_MINOR = re.compile(r"([0-9]{1,9})\.[0-9]{1,9}")
"""Full match, ASCII digits, bounded: ``str.isdigit`` also takes '²' (which ``int`` then refuses with a crash)
and '١', and ``int`` refuses more than 4300 digits."""


@dataclass(frozen=True)
class SchemaTag:
    """A message's ``schema`` field: its name and ``major.minor`` version."""

    name: str
    version: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version}


def tag(name: str) -> dict[str, str]:
    """The tag a sender writes for schema ``name`` at its current version."""
    return {"name": name, "version": CURRENT[name]}


def check_schema(obj: dict[str, Any], expected: str) -> SchemaTag:
    """Check that ``obj`` declares schema ``expected`` with a major version this code understands."""
    schema = require(obj, "schema", dict)
    name = require(schema, "name", str, "schema")
    version = require(schema, "version", str, "schema")
    accepted = _ACCEPTED.get((expected, name, version))
    if accepted is not None:
        return accepted
    if name != expected:
        raise ProtocolError(f"expected schema {expected!r}, got {name!r}", field="schema.name")
    parts = _MAJOR_MINOR.fullmatch(version)
    if parts is None:
        raise ProtocolError(f"{version[:40]!r} is not MAJOR.MINOR", field="schema.version")
    if int(parts[1]) not in SUPPORTED_MAJORS[name]:
        raise ProtocolError(
            f"unsupported major version {version} of {name} (supported: "
            f"{sorted(SUPPORTED_MAJORS[name])})",
            field="schema.version",
        )
    accepted = SchemaTag(name, version)
    if len(_ACCEPTED) < 256:  # bounded: every 1.x minor is accepted, and a sender chooses the string
        _ACCEPTED[(expected, name, version)] = accepted
    return accepted


_ACCEPTED: dict[tuple[str, str, str], SchemaTag] = {}
"""(expected, name, version) tags already checked: every message repeats the same one or two."""

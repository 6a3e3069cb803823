"""Rules for the names that end up in topics and file paths.

Model names, device ids and label values become MQTT topic levels and directory names on the device, so the
rules are strict: no ``/``, no ``+``/``#`` wildcards, no ``..``, no leading dot, bounded length.

Every rule is a full match (``fullmatch``), never ``match`` with ``$``: ``$`` also matches before a trailing
newline, so ``"churn\\n"`` passed, and a topic level holding a control character makes Mosquitto drop the
connection (an agent told to fetch ``"churn\\n"`` reconnected and failed again, over and over).
"""

import re
from typing import TypeGuard

from .errors import ProtocolError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_LABEL = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_VERSION_TEXT = re.compile(r"[1-9][0-9]{0,9}")  # ASCII digits only (str.isdigit also takes '²' and '٣')
MAX_VERSION = 2**31 - 1


def is_name(value: object) -> TypeGuard[str]:
    """Whether ``value`` is a safe model name or device id (the test of :func:`check_name`, without raising)."""
    return isinstance(value, str) and _NAME.fullmatch(value) is not None and ".." not in value


def check_name(value: object, field: str = "name") -> str:
    """Return ``value`` when it is a safe model name or device id, else raise ProtocolError."""
    if not is_name(value):
        raise ProtocolError(
            f"{value!r} is not a valid name (1-64 of A-Z a-z 0-9 _ . -, starting alphanumeric, no '..')",
            field=field,
        )
    return value


def is_version(value: object) -> TypeGuard[int]:
    """Whether ``value`` is a valid version (the test of :func:`check_version`, without raising)."""
    return not isinstance(value, bool) and isinstance(value, int) and 1 <= value <= MAX_VERSION


def check_version(value: object, field: str = "version") -> int:
    """Versions are positive integers, allocated monotonically per model by the registry."""
    if not is_version(value):
        raise ProtocolError(f"{value!r} is not a positive integer version", field=field)
    return value


def parse_version(text: str, field: str = "version") -> int:
    """Parse a version as found in a topic level (decimal digits only, no sign, no leading zeros)."""
    if not _VERSION_TEXT.fullmatch(text):
        raise ProtocolError(f"{text!r} is not a positive integer version", field=field)
    return check_version(int(text), field)


def check_labels(value: object, field: str = "labels") -> dict[str, str]:
    """Labels select devices in rollouts (``site=berlin``); keys and values follow the label rule."""
    if not isinstance(value, dict):
        raise ProtocolError("must be an object of string labels", field=field)
    if len(value) > 64:
        raise ProtocolError("at most 64 labels", field=field)
    for key, val in value.items():
        if not isinstance(key, str) or not _LABEL.fullmatch(key):
            raise ProtocolError(f"label key {key!r} is invalid", field=field)
        if not isinstance(val, str) or not _LABEL.fullmatch(val):
            raise ProtocolError(f"label value {val!r} for {key!r} is invalid", field=field)
    return dict(value)


def parse_label(text: str) -> tuple[str, str]:
    """Parse ``key=value`` as given on a command line."""
    key, sep, val = text.partition("=")
    if not sep:
        raise ProtocolError(f"label {text!r} must look like key=value", field="labels")
    check_labels({key: val})
    return key, val

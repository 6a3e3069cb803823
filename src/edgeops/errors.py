"""The exceptions of the edgeops control plane: one base class and a few precise subclasses.

Every message is one readable line that names what failed (a config key, a file, a column), because the CLI
prints ``str(exc)`` and exits non-zero instead of showing a traceback for a user mistake. Details that a
program may want stay on attributes (``key``, ``path``, ``column``, ``report``).
"""

from typing import Any

MAX_MESSAGE_CHARS = 300
"""Longest message kept from a third-party error (skl2onnx can raise ~850 KB of protobuf text)."""


def one_line(text: object, limit: int = MAX_MESSAGE_CHARS) -> str:
    """Collapse ``text`` to a single line of at most ``limit`` characters (an ellipsis marks the cut)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


class EdgeopsError(Exception):
    """Base of every edgeops error; its message is one line the CLI shows as is."""


class ConfigError(EdgeopsError):
    """The project config is wrong; ``key`` is the dotted key at fault (``model.params``).

    ``ConfigError("model.params", "must be a mapping")`` reads "model.params: must be a mapping";
    ``ConfigError("some message")`` (no key) is accepted too.
    """

    def __init__(self, key: str, problem: str | None = None) -> None:
        self.key: str | None = key if problem is not None else None
        self.problem = problem if problem is not None else key
        super().__init__(one_line(f"{key}: {problem}" if problem is not None else key))


class DataError(EdgeopsError):
    """The data cannot be used: unreadable file, missing target, a column that cannot be parsed, ..."""

    def __init__(self, message: str, *, path: object = None, column: str | None = None) -> None:
        self.path = path
        self.column = column
        super().__init__(one_line(message))


class ValidationFailed(EdgeopsError):
    """Data validation found errors; ``report`` is the full ValidationReport, the message its summary."""

    def __init__(self, report: Any) -> None:
        self.report = report
        super().__init__(one_line(report.summary(), limit=1000))


class ExportError(EdgeopsError):
    """Conversion to ONNX or the ONNX check failed. Converter messages are cut to one readable line."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


class ParityError(ExportError):
    """ONNX and scikit-learn disagree on the holdout beyond the tolerance; ``parity`` is the ParityReport."""

    def __init__(self, message: str, parity: Any = None) -> None:
        self.parity = parity
        super().__init__(message)


class RegistryError(EdgeopsError):
    """A release cannot be stored or found in the registry."""


class SigningError(EdgeopsError):
    """Keys cannot be created, loaded or used to sign."""


class BrokerError(EdgeopsError):
    """The MQTT broker cannot be reached or refused an operation."""


class RolloutError(EdgeopsError):
    """A rollout cannot start, advance or be aborted as asked."""


__all__ = [
    "BrokerError", "ConfigError", "DataError", "EdgeopsError", "ExportError", "ParityError", "RegistryError",
    "RolloutError", "SigningError", "ValidationFailed", "one_line",
]

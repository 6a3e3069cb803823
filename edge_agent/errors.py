"""The agent's exceptions: one base and a few precise subclasses, each with a one-line message.

The lifecycle sorts failures into two kinds, as mender does: *fatal* ones reject a release for good
(``VerificationError``, ``ModelError``), *transient* ones are retried with backoff (``FetchError``).
"""

MAX_REASON_CHARS = 500


def short_reason(text: str) -> str:
    """One line of at most MAX_REASON_CHARS: reasons may quote hostile input (a 1 MiB "model name"), and they
    end up in retained reports, events and logs, which must stay small."""
    text = " ".join(text.split())
    return text if len(text) <= MAX_REASON_CHARS else text[:MAX_REASON_CHARS - 1] + "…"


class AgentError(Exception):
    """Base of every error the agent raises on purpose; ``str(exc)`` is a one-line reason."""


class VerificationError(AgentError):
    """A release failed a check (signature, key, size, hash, golden samples, unsafe name): never install it."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class ModelError(AgentError):
    """onnxruntime could not load or run a model (a load failure during self-test rejects the release)."""


class InputError(AgentError):
    """A record does not match the model's inputs; ``field`` names the column (and record index in a batch)."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class StoreError(AgentError):
    """The on-device model store is unusable: a path outside the data dir, or a model that fails its hash."""


class FetchError(AgentError):
    """A release could not be fetched yet (timeout, broker gone); transient, so the agent retries."""


class NoModelError(AgentError):
    """Inference was asked for before any model was installed."""


class FeedbackError(AgentError):
    """Feedback names an unknown (or expired) prediction id, or the wrong kind of truth for the task."""


class ConfigError(AgentError):
    """A config key is unknown, has the wrong type or an invalid value; the message names the key (config.py)."""

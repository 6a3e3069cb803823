"""The agent's exceptions: one base, and a few precise subclasses named after what failed.

(Minimal version created by helper D so that config.py can import ConfigError; helper C owns this file.)
"""


class AgentError(Exception):
    """Anything the agent reports as a one-line reason (CLI: ``edgeops-agent: ...`` and exit 2)."""


class ConfigError(AgentError):
    """A config key is unknown, has the wrong type or an invalid value; the message names the key."""

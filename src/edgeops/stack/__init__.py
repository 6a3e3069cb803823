"""The local control plane of ``edgeops up``: a broker, a Prefect server, the telemetry ingest and the served
monitor, started once per project and found by every later command.

Modules: ``state`` (the project's ``.edgeops/stack.json`` and what other commands take from it; standard library
only, because every command reads it), ``services`` (how each service is started; ``edgeops demo`` starts its
own the same way), ``supervisor`` (child processes: start, watch, stop every one), ``up`` / ``down`` / ``probe``
(start, stop, and ask each service whether it answers).
"""

from pathlib import Path

STATE_FILE = Path(".edgeops") / "stack.json"
"""Where a project remembers its running stack; here, not in ``state``, so that a command can see there is none
without importing that module (``edgeops.cli.main`` does, for every command)."""

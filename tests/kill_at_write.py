"""The real ``edgeops-agent`` CLI, SIGKILLed by itself at its Nth durable write step: a power cut at an exact
point of an install, an activation or a rollback, reproducible in a test.

Every durable file of the agent's store goes through ``store.atomic_write`` (temp file, fsync, rename, fsync
of the directory). Each write counts as two steps, *before* it (nothing of it on disk) and *after* it (the new
file in place), which are the two sides of each atomic rename. The step names are appended to
``EDGEOPS_TEST_STEP_LOG`` as they happen; at step ``EDGEOPS_TEST_KILL_AT`` (1-based) the process sends itself
SIGKILL: no handler, no flush, no atexit runs, exactly like ``kill -9``.

    PYTHONPATH=. EDGEOPS_TEST_KILL_AT=7 EDGEOPS_TEST_STEP_LOG=steps python tests/kill_at_write.py run --config a.toml
"""

import os
import signal
import sys
from pathlib import Path

import edge_agent.store as store
from edge_agent.cli import main

_real_write = store.atomic_write
_kill_at = int(os.environ.get("EDGEOPS_TEST_KILL_AT", "0"))
_log = Path(os.environ["EDGEOPS_TEST_STEP_LOG"])
_taken = 0


def _step(name: str) -> None:
    global _taken
    _taken += 1
    with _log.open("a") as log:
        log.write(f"{name}\n")
    if _taken == _kill_at:
        os.kill(os.getpid(), signal.SIGKILL)


def _atomic_write(path: Path, data: bytes) -> None:
    _step(f"before {path.name}")
    _real_write(path, data)
    _step(f"after {path.name}")


store.atomic_write = _atomic_write

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

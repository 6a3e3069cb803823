"""Durable file writes, shared by the agent's model store and the control plane's registry and key files.

Data is fsynced before it is renamed into place and the directory is fsynced after, so a crash or a power
cut leaves the old content or the new, never a half-written file. Standard library only: the control plane
may import it without pulling in anything of the agent.
"""

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable (POSIX needs the directory itself fsynced)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_synced(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write all of ``data`` to ``path`` and fsync it. ``mode`` is set exactly (umask does not apply) from the
    moment the file exists, so a private key is never readable by others, not even briefly."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644 if mode is None else mode)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int | None = None, tmp: Path | None = None) -> None:
    """Replace ``path`` with ``data`` so that readers (and a restart after a crash) see old or new, never half.
    ``tmp`` (same file system) defaults to a hidden sibling; the registry passes one under its swept tmp/."""
    tmp = tmp or path.with_name(f".{path.name}.tmp-{os.getpid()}")
    write_synced(tmp, data, mode)
    os.replace(tmp, path)
    fsync_dir(path.parent)

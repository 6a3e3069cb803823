"""The cyclic garbage collector, told that a command's imported libraries live until the process ends.

Why: a pipeline run imports Prefect, scikit-learn, skl2onnx, onnx and pandas, a few hundred thousand objects
that stay alive until exit. CPython's collector does not know that: each full collection walks every object it
tracks, and the imports' own allocations trigger several of them, as does the interpreter's shutdown. None of
those walks can free a module. ``gc.freeze()`` moves the objects alive at that moment to a permanent generation
that collections skip (its documented use is before a fork; the reasoning is the same: these objects never die).

- ``console_process()``: called first thing by the console script's ``main()``. It registers ``gc.freeze`` as
  the first atexit handler, so it runs last and the shutdown's collections skip the heap. Nothing else changes:
  every other atexit handler, the thread joins, the flushes and the module teardown still run. What it gives up
  is collecting reference cycles at exit, which CPython never promises to finalize.
- ``long_lived_imports()``: in that process, the collector is off while the heavy modules load, then the heap
  is frozen. Garbage made later is collected as usual. Elsewhere (``CliRunner`` tests, a process that imports
  the app) it does nothing: freezing a long-lived process's heap would keep its uncollected cycles forever.

benchmarks/stack.py measures the effect on a pipeline run (docs/cli.md, "Benchmarks").
"""

import atexit
import gc
from collections.abc import Iterator
from contextlib import contextmanager

_console = False


def console_process() -> None:
    """Mark this process as one ``edgeops`` command (call it before anything else registers an atexit
    handler: handlers run last-registered first)."""
    global _console
    if not _console:
        _console = True
        atexit.register(gc.freeze)


@contextmanager
def long_lived_imports() -> Iterator[None]:
    """In a console process: run the block (imports of libraries the process keeps) without collections, then
    freeze the heap. The collector's previous state comes back even when an import fails."""
    if not _console:
        yield
        return
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
        gc.freeze()
    finally:
        if was_enabled:
            gc.enable()


__all__ = ["console_process", "long_lived_imports"]

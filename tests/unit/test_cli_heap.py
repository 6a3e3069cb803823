"""The console script tells the garbage collector that imported libraries live until exit (edgeops/cli/heap.py).

Each case runs in a fresh interpreter: the collector's state is process-wide, and the console mode must never
leak into the test process (it would freeze pytest's heap). The speed-up itself is measured by
benchmarks/stack.py, not here.
"""

import gc

import pytest
from fresh_python import fresh_python

from edgeops.cli.heap import long_lived_imports

pytestmark = pytest.mark.unit


def test_the_console_script_freezes_the_heap_after_every_other_exit_handler() -> None:
    out = fresh_python("""
        import atexit, gc
        # registered before main(): runs after every handler main() and the command register
        atexit.register(lambda: print("frozen at exit:", gc.get_freeze_count() > 0))
        from edgeops.cli import main
        try:
            main(["--help"])
        except SystemExit as exc:
            print("exit", exc.code)
        print("Typer frozen on the way:", gc.get_freeze_count() > 0)
        gc.unfreeze()  # what is frozen from here on is the exit handler's doing
    """)
    assert "exit 0" in out and "Commands" in out
    assert "Typer frozen on the way: True" in out
    assert out.rstrip().endswith("frozen at exit: True")


def test_in_the_console_process_imports_load_without_collections_and_are_frozen() -> None:
    out = fresh_python("""
        import gc, sys
        from edgeops.cli.heap import console_process, long_lived_imports
        console_process()
        with long_lived_imports():
            print("enabled inside:", gc.isenabled())
            import fractions, decimal, statistics
        print("enabled after:", gc.isenabled(), "frozen:", gc.get_freeze_count() > 0)
        print("loaded:", "statistics" in sys.modules)
        gc.unfreeze()
        try:
            with long_lived_imports():
                raise ImportError("no such module")
        except ImportError:
            print("after a failed import, enabled:", gc.isenabled(), "frozen:", gc.get_freeze_count())
        gc.disable()
        with long_lived_imports():
            pass
        print("a disabled collector stays disabled:", not gc.isenabled())
    """)
    assert "enabled inside: False" in out
    assert "enabled after: True frozen: True" in out and "loaded: True" in out
    assert "after a failed import, enabled: True frozen: 0" in out
    assert "a disabled collector stays disabled: True" in out


def test_outside_the_console_process_the_collector_is_left_alone() -> None:
    frozen = gc.get_freeze_count()
    with long_lived_imports():
        assert gc.isenabled()
    assert gc.get_freeze_count() == frozen

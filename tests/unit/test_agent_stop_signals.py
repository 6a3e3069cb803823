"""``edge_agent.shutdown.StopSignals``: how ``edgeops-agent run`` waits for SIGTERM/SIGINT.

The old wait (``Event.set()`` in the handler, ``Event.wait(1.0)`` in a loop) could deadlock for good when the
signal landed while the main thread held the Event's lock; see shutdown.py. Each case runs in a fresh Python
process: signal handlers belong to a process's main thread, and pytest's own must not be touched. The
``timeout`` of each run is a hang detector, not a speed check.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).parents[2]


def run_script(body: str, timeout: float = 120.0) -> str:
    script = "import os, signal, threading, random, time\nfrom edge_agent.shutdown import StopSignals\n"
    done = subprocess.run([sys.executable, "-c", script + textwrap.dedent(body)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_a_signal_before_wait_is_kept_a_repeat_is_ignored_and_handlers_are_restored() -> None:
    out = run_script("""
        with StopSignals() as stops:
            os.kill(os.getpid(), signal.SIGTERM)  # e.g. during the agent's start, before it waits
            os.kill(os.getpid(), signal.SIGINT)  # a second signal: no KeyboardInterrupt, no exit
            print(signal.Signals(stops.wait()).name)
            time.sleep(0.05)  # the second one is still handled by StopSignals while it is open
        print(signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, signal.getsignal(signal.SIGINT).__name__)
    """)
    assert out.split() == ["SIGTERM", "True", "default_int_handler"]


def test_wait_returns_for_signals_sent_at_random_moments_while_other_threads_fight_for_the_gil() -> None:
    """Hundreds of signals from another thread (so the kernel may deliver them to any thread), at random
    moments, while busy threads force the main thread to give up the GIL at every chance: every wait must
    return and none may be lost. (This does not reproduce the old hang: its window was a few bytecodes per
    second, too narrow to hit on demand; a freeze/thaw loop of real agents hit it about once in 60.)"""
    out = run_script("""
        import sys
        sys.setswitchinterval(1e-5)
        stop_busy = False
        def busy():
            n = 0
            while not stop_busy:
                n += 1
        workers = [threading.Thread(target=busy, daemon=True) for _ in range(2)]
        for w in workers:
            w.start()
        got = 0
        for i in range(300):
            with StopSignals() as stops:
                timer = threading.Timer(random.uniform(0, 0.002), os.kill, (os.getpid(), signal.SIGTERM))
                timer.start()
                got += stops.wait() == signal.SIGTERM
                timer.join()
        stop_busy = True
        print(got)
    """)
    assert out.strip() == "300"


def test_wait_with_a_timeout_returns_none_then_the_signal() -> None:
    """``edgeops telemetry serve`` logs its counters between waits: a timed wait with no signal returns None,
    and a signal sent later still ends the next wait."""
    out = run_script("""
        with StopSignals() as stops:
            print(stops.wait(0.05))
            threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM)).start()
            print(signal.Signals(stops.wait(30)).name)
    """)
    assert out.split() == ["None", "SIGTERM"]

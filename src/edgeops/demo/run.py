"""``edgeops demo``: the whole loop on one machine, with real processes, in one command.

    broker (Mosquitto) + Prefect server ─► v1 trained, signed, rolled out to N real agents ─► traffic ─►
    telemetry ingest ─► monitor: no drift ─► one feature shifts ─► monitor: drift ─► edgeops.drift.detected ─►
    trigger ─► retrain on the newest (shifted) data ─► canary rollout of v2 ─► every agent serves v2

Plain orchestration: it starts the real services (stack/supervisor.py), runs the library's plain functions for the
first release and its rollout, and from then on only *watches* — the drift event, the retrain run and the
v2 rollout are the product's own monitor flow, trigger and retrain flow, served by Prefect
(flows/serve_demo.py). What it starts it stops again, on success, error, timeout and Ctrl-C.
"""

import shutil
import signal
from collections.abc import Callable
from pathlib import Path

from edgeops.demo.loop import DemoLoop
from edgeops.demo.parts import Clock, DemoOptions, DemoResult, Say
from edgeops.errors import EdgeopsError
from edgeops.stack.supervisor import Supervisor, group_alive

MARKER = ".edgeops-demo"


def prepare_work_dir(work: Path) -> None:
    """Start from a clean work dir. Only a directory this command created (it holds the marker file) is
    wiped; anything else that is not empty is refused, so a typo in --work-dir cannot delete a project."""
    if work.exists() and any(work.iterdir()):
        if not (work / MARKER).exists():
            raise EdgeopsError(f"work dir {work} is not empty and was not made by `edgeops demo`; "
                               "give an empty or new directory with --work-dir")
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    (work / MARKER).write_text("created by `edgeops demo`; wiped by its next run\n")


def run_demo(options: DemoOptions, say: Say, *, stop_when_done: Callable[[DemoResult], None] | None = None
             ) -> DemoResult:
    """Run the loop; the result says whether it closed. ``stop_when_done`` is called with the result while
    everything still runs (``--keep-running`` blocks there until Ctrl-C)."""
    clock = Clock(options.timeout_s)
    work = options.work_dir.resolve()
    prepare_work_dir(work)
    result = DemoResult(work_dir=str(work))

    def log(message: str) -> None:
        say(f"[{clock.elapsed():6.1f}s] {message}")

    supervisor = Supervisor(work / "logs")
    loop = DemoLoop(options, work, clock, supervisor, result, log)
    try:
        try:
            loop.run()
            result.closed = True
        except EdgeopsError as exc:
            result.reason = " ".join(str(exc).split())
        finally:
            result.seconds = round(clock.elapsed(), 1)
            result.timings = dict(clock.marks)
            result.pids = [c.pid for c in supervisor.children]
        if stop_when_done is not None:
            stop_when_done(result)
    finally:
        # A second Ctrl-C must not cut the teardown short (that is how orphans are made).
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            loop.teardown()
            supervisor.stop_all()
            loop.clean_broker()
        finally:
            signal.signal(signal.SIGINT, previous)
    left = [pid for pid in result.pids if group_alive(pid)]
    if left:  # pragma: no cover - stop_all kills whole groups; this would be a bug worth shouting about
        result.closed = False
        result.reason = f"processes still running after teardown: {left}"
    return result


__all__ = ["prepare_work_dir", "run_demo"]

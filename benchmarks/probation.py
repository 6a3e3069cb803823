"""Probation's false-alarm rate and power, measured on real models in a real agent, idle and busy.

    .venv/bin/python benchmarks/probation.py [--trials 20]

Each trial is one probation as the agent runs it (``Agent.predict`` / ``predict_many``, the agent's own
bookkeeping, default settings: factor 3, floor 1 ms, 5 % errors, at least 20 requests): 100 requests on the
serving model (the baseline), then requests on the new model until probation gives its verdict. The verdict is
asked after *every* request (the agent asks ten times a second), which can only raise the false-alarm rate.
Traffic is mixed: three single rows, then a 50-row batch. Cases:

  healthy     the same kind of model, retrained (its cost is unchanged)      → a rollback is a false alarm
  tiny        a small pipeline of tens of microseconds a row, retrained      → a rollback is a false alarm
  slow        the same model with ~10× the arithmetic per row                 → a rollback is a detection
  failing     a model that fails on one request in five                      → a rollback is a detection

"busy" runs every trial with a busy-loop process on every core. Beside each rate the script prints what the
rule before it (p95 of per-row wall latency against 3× the previous model's, errors counted per row) decides on
the same requests in the same run.
"""

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from probation_load import CpuHog, with_extra_work  # noqa: E402
from releases import Release, agent_config, build_release, new_key, preinstall, with_runtime_trap  # noqa: E402

from edge_agent.agent import Agent  # noqa: E402
from edge_agent.errors import ModelError  # noqa: E402
from edge_agent.inference import ModelRunner  # noqa: E402
from edge_agent.lifecycle import percentile  # noqa: E402
from edge_agent.store import ModelRef  # noqa: E402

ROW = {"age in years": 52.0, "income": 4.5, "plan": "pro"}
TRAPPED = {**ROW, "income": 1000.0}
BASELINE_REQUESTS, MAX_REQUESTS = 100, 400


class OldRule:
    """The verdict before per-request CPU time: p95 of per-row wall latency vs 3× the previous model's p95,
    errors and successes counted per row, judged once 20 rows were seen (kept here as the baseline)."""

    def __init__(self, baseline_rows: list[float]) -> None:
        self.limit = (percentile(baseline_rows, 95) or 0.0) * 3.0
        self.rows: list[float] = []
        self.errors = 0

    def record(self, per_row_ms: float, rows: int, failed: bool) -> None:
        if failed:
            self.errors += 1
        else:
            self.rows.extend([per_row_ms] * rows)

    def failed(self) -> bool:
        n = len(self.rows) + self.errors
        if n < 20:
            return False
        return self.errors / n > 0.05 or (percentile(self.rows, 95) or 0.0) > self.limit


def request(agent: Agent, n: int, fail_every: int) -> tuple[float, int, bool]:
    """Send request ``n`` of the mixed stream; returns (wall ms per row, rows, failed)."""
    record = TRAPPED if fail_every and n % fail_every == 0 else ROW
    rows = 50 if n % 4 == 0 else 1
    start = time.perf_counter()
    failed = False
    try:
        if rows == 1:
            agent.predict(record)
        else:
            agent.predict_many([record] + [ROW] * 49)
    except ModelError:
        failed = True
    return (time.perf_counter() - start) * 1e3 / rows, rows, failed


def trial(agent: Agent, serving: ModelRunner, candidate: ModelRunner, fail_every: int) -> tuple[bool, bool]:
    """One probation through the agent's own bookkeeping; (rolled back now, rolled back by the old rule)."""
    agent.probation = None
    agent.latencies.values.clear()
    agent.swap_runner(serving)
    baseline_rows: list[float] = []
    for n in range(1, BASELINE_REQUESTS + 1):
        per_row, rows, _ = request(agent, n, 0)
        baseline_rows.extend([per_row] * rows)
    probation = agent.installer.new_probation(ModelRef(candidate.manifest.name, candidate.manifest.version),
                                              agent.latencies.baseline(agent.config.probation_min_predictions))
    agent.swap_runner(candidate)
    agent.probation = probation
    old = OldRule(baseline_rows)
    old_failed = False
    for n in range(1, MAX_REQUESTS + 1):
        per_row, rows, failed = request(agent, n, fail_every)
        old.record(per_row, rows, failed)
        old_failed = old_failed or old.failed()
        verdict = probation.verdict(time.monotonic())
        if verdict != "wait":
            return verdict != "pass", old_failed
    return False, old_failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20, help="probations per case and load")
    args = parser.parse_args()
    key = new_key()
    work = with_extra_work(build_release("churn", 1, key, seed=0), key, 2)
    tiny = build_release("churn", 1, key, seed=0)

    def retrained(version: int, rounds: int = 2) -> Release:
        return with_extra_work(build_release("churn", version, key, seed=version), key, rounds)

    cases: dict[str, tuple[Release, Release, int, bool]] = {  # serving, candidate, fail every nth, is a fault
        "healthy": (work, retrained(2), 0, False),
        "tiny": (tiny, build_release("churn", 2, key, seed=2), 0, False),
        "slow": (work, retrained(2, rounds=24), 0, True),
        "failing": (work, with_runtime_trap(retrained(2), key), 5, True),
    }
    with tempfile.TemporaryDirectory() as tmp:
        preinstall(Path(tmp) / "data", work)
        agent = Agent(agent_config(Path(tmp), "mqtt://127.0.0.1:1", "bench", key, "bench",
                                   probation_s=3600.0, probation_min_predictions=20)).load()
        runners = {name: (ModelRunner(s.manifest, s.data), ModelRunner(c.manifest, c.data))
                   for name, (s, c, _, _) in cases.items()}
        cost = {name: statistics.median(cpu_ms(r) for _ in range(3)) for name, (_, r) in runners.items()}
        print(f"CPU ms per single-row call: {', '.join(f'{k} {v:.3f}' for k, v in cost.items())} "
              f"(serving model {cpu_ms(runners['healthy'][0]):.3f}; tiny serving {cpu_ms(runners['tiny'][0]):.3f})")
        print(f"{'case':<10} {'load':<5} {'rolled back':>12} {'old rule':>10}   meaning")
        for load in ("idle", "busy"):
            with CpuHog() if load == "busy" else contextlib.nullcontext():
                for name, (_, _, fail_every, fault) in cases.items():
                    serving, candidate = runners[name]
                    outcomes = [trial(agent, serving, candidate, fail_every) for _ in range(args.trials)]
                    now = sum(o[0] for o in outcomes) / len(outcomes)
                    old = sum(o[1] for o in outcomes) / len(outcomes)
                    meaning = "power (want ≥ 95 %)" if fault else "false-alarm rate (want 0 %)"
                    print(f"{name:<10} {load:<5} {now:>11.0%} {old:>10.0%}   {meaning}", flush=True)
        agent.outbox.close()
    print(f"({args.trials} probations per row; load average {os.getloadavg()[0]:.1f} at the end)")


def cpu_ms(runner: ModelRunner, calls: int = 200) -> float:
    call: Callable[[dict[str, Any]], Any] = runner.predict
    for _ in range(10):
        call(ROW)
    start = time.thread_time()
    for _ in range(calls):
        call(ROW)
    return (time.thread_time() - start) * 1e3 / calls


if __name__ == "__main__":
    main()

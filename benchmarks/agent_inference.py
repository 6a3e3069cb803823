"""In-process inference: the agent's public Python API against the public ``InferenceSession.run`` on the same rows.

Per model (small and forest), interleaved rounds of ``calls`` calls per side (benchmarks/rounds.py), wall and
process CPU (the agent's owner thread included, so bookkeeping moved to a background thread still counts):
- ``Agent.predict(row)`` / ``session.run`` on prebuilt feeds of that row (the least the bare call needs);
- ``Agent.predict_many(100 rows)`` / ``session.run`` on feeds built from the same 100 dicts;
- no target, to see contention: 8 threads each calling ``predict_many(100 rows)``, rows/s of the agent / rows/s
  of 8 threads calling ``session.run`` on the same session object.
"""

import threading
from collections.abc import Callable
from typing import Any

from agent_baseline import feeds_for, session_for
from agent_setup import Bench, records_for, start_agent
from rounds import Ratio, interleaved_cpu

THREADS = 8


def in_threads(call: Callable[[], Any], calls: int) -> Callable[[], None]:
    """One "call" = ``THREADS`` threads each making ``calls`` calls, started together and joined."""
    def run() -> None:
        gate = threading.Barrier(THREADS)

        def worker() -> None:
            gate.wait()
            for _ in range(calls):
                call()
        threads = [threading.Thread(target=worker) for _ in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return run


def measure_model(bench: Bench, name: str) -> list[Ratio]:
    release = bench.models[name]
    agent = start_agent(bench, f"predict-{name}", release, http=False)
    try:
        session = session_for(release.data)
        inputs = [spec.to_json() for spec in release.manifest.inputs]
        outputs = [o.name for o in session.get_outputs()]
        row, batch = records_for(release.manifest, 1)[0], records_for(release.manifest, 100)
        feeds = feeds_for(inputs, [row])
        results = []
        wall, cpu = interleaved_cpu(lambda: session.run(outputs, feeds), lambda: agent.predict(row), bench.rounds,
                                    bench.calls)
        results.append(Ratio(f"Agent.predict / session.run, 1 row ({name})", wall, 1.3, cpu=cpu,
                             detail="public run on prebuilt feeds"))
        print(results[-1].line(), flush=True)
        batches = max(bench.calls // 20, 10)
        wall, cpu = interleaved_cpu(lambda: session.run(outputs, feeds_for(inputs, batch)),
                                    lambda: agent.predict_many(batch), bench.rounds, batches)
        results.append(Ratio(f"predict_many / session.run, 100 rows ({name})", wall, 1.2, cpu=cpu,
                             detail="public run on feeds from the same 100 dicts"))
        print(results[-1].line(), flush=True)
        per_thread = max(batches // THREADS, 2)
        wall, cpu = interleaved_cpu(in_threads(lambda: session.run(outputs, feeds_for(inputs, batch)), per_thread),
                                    in_threads(lambda: agent.predict_many(batch), per_thread), bench.rounds, 1)
        results.append(Ratio(f"{THREADS} threads, predict_many 100 rows, rows/s ({name})", [1 / w for w in wall],
                             None, higher_is_better=True, cpu=cpu,
                             detail=f"/ {THREADS} threads on session.run; CPU: per row, ours / bare"))
        print(results[-1].line(), flush=True)
        return results
    finally:
        agent.stop()


def measure(bench: Bench) -> list[Ratio]:
    return [ratio for name in bench.models for ratio in measure_model(bench, name)]

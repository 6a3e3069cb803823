"""What two of the agent's features add to a prediction: the feedback log and the score counts.

- ``feedback``: Agent.predict and predict_many(100) of an agent that keeps its answers on disk (so a label
  after a restart still finds its prediction) / the same agent keeping them in memory only, wall and process
  CPU (the owner thread's writes included). Target ≤ 1.05×.
- ``scores``: the same release with / without its score calibration (so the agent counts predicted
  probabilities for performance estimation, or not). The target is measured in the calling thread's CPU time:
  a model run plus the telemetry bookkeeping, binning included, compacting every 100 single rows or every 10
  batches (the agent bins once per 0.1 s tick, so under load many calls share a compaction); a compaction after
  every batch is shown beside (a device sending one batch per tick). Then whole agents, wall time.

Both reach into the agent's internals (switching the log off, the telemetry recorder): when a branch has
changed them, the measure reports the error and the rest of the run goes on.
"""

import dataclasses
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any, cast

from agent_setup import Bench, agent_config, records_for, start_agent
from releases import Release, sign
from rounds import Ratio, interleaved_cpu, rotating_rounds, timed

from edge_agent.agent import Agent


def measure_feedback(bench: Bench) -> list[Ratio]:
    """Two agents serving the small model, one without its feedback log; both owner threads run."""
    release = bench.models["small"]
    agents = []
    for name, log in (("log-off", False), ("log-on", True)):
        agent = Agent(agent_config(bench, name, release, http=False))
        if not log:
            agent._recent.log = None   # benchmark only: the memory without its log
        agents.append(agent.start())
    off, on = agents
    row, batch = records_for(release.manifest, 1)[0], records_for(release.manifest, 100)
    results = []
    try:
        for label, (wall, cpu) in (
                ("predict, 1 row", interleaved_cpu(lambda: off.predict(row), lambda: on.predict(row), bench.rounds,
                                                   bench.calls)),
                ("predict_many, 100 rows", interleaved_cpu(lambda: off.predict_many(batch),
                                                           lambda: on.predict_many(batch), bench.rounds,
                                                           max(bench.calls // 10, 30)))):   # rounds of ~20 ms
            results.append(Ratio(f"feedback log on / off: {label}", wall, 1.05, cpu=cpu))
            print(results[-1].line(), flush=True)
    finally:
        for agent in agents:
            agent.stop()
    return results


def without_calibration(release: Release, key: Any) -> Release:
    """The same model and manifest without its calibration: the agent then counts no scores."""
    return Release(sign(dataclasses.replace(release.manifest, calibration=None), key), release.data)


def thread_cpu(fns: dict[str, Callable[[], Any]], rounds: int, calls: int) -> dict[str, list[float]]:
    """Per round, this thread's CPU seconds per call of each function (order rotating): what the work costs,
    whatever else the machine runs."""
    for fn in fns.values():
        for _ in range(min(calls, 100)):
            fn()
    def per_call(fn: Callable[[], Any]) -> float:
        return timed(fn, calls, time.thread_time)[1] / calls

    return rotating_rounds({name: partial(per_call, fn) for name, fn in fns.items()}, rounds)


def recorder_rows(bench: Bench, name: str) -> list[Ratio]:
    """Model run + telemetry bookkeeping with / without score counts, in thread CPU time."""
    from edge_agent.inference import ModelRunner
    from edge_agent.telemetry import TelemetryRecorder

    release = bench.models[name]
    plain = without_calibration(release, bench.key)
    runner = ModelRunner(release.manifest, release.data)
    row, batch = records_for(release.manifest, 1)[0], records_for(release.manifest, 100)
    single, answers = runner.predict(row), cast(Any, runner.predict_many(batch))  # a PredictionBatch
    recorders = {"off": TelemetryRecorder(plain.manifest, "bench", 3600, 10**9),
                 "on": TelemetryRecorder(release.manifest, "bench", 3600, 10**9)}
    counter = {"off": 0, "on": 0}

    def one(side: str, every: int) -> None:
        recorders[side].record(row, single, 0.1)
        counter[side] += 1
        if counter[side] % every == 0:
            recorders[side].compact()

    numeric = getattr(answers, "numeric", None)   # the feed matrix, where the agent hands it to telemetry
    fed = () if numeric is None else (numeric,)

    def many(side: str, every: int) -> None:
        recorders[side].record_many(batch, answers.answers, 0.1, answers.columns, answers.matrix, *fed)
        counter[side] += 1
        if counter[side] % every == 0:
            recorders[side].compact()

    batches = max(bench.calls // 50, 20)
    results = []
    for rows, model, tel, n, every in ((1, lambda: runner.predict(row), one, bench.calls, 100),
                                       (100, lambda: runner.predict_many(batch), many, batches, 10),
                                       (100, lambda: runner.predict_many(batch), many, batches, 1)):
        cpu = thread_cpu({"model": model, "off": partial(tel, "off", every), "on": partial(tel, "on", every)},
                         bench.rounds, n)
        per_round = [(m + a) / (m + b) for m, a, b in zip(cpu["model"], cpu["on"], cpu["off"], strict=True)]
        added = statistics.median(a - b for a, b in zip(cpu["on"], cpu["off"], strict=True)) / rows * 1e6
        run_us = statistics.median(cpu["model"]) / rows * 1e6
        results.append(Ratio(
            f"score counts on/off, {rows}-row calls, compact/{every} ({name})", per_round,
            None if every == 1 else 1.05,
            detail=f"thread CPU; +{added:.2f} µs a row on a model run of {run_us:.1f} µs a row"))
        print(results[-1].line(), flush=True)
    return results


def agent_rows(bench: Bench, name: str) -> list[Ratio]:
    """Whole agents with / without score counts, wall time (a loaded machine makes it noisy: no target)."""
    release = bench.models[name]
    off = start_agent(bench, f"{name}-scores-off", without_calibration(release, bench.key), http=False)
    on = start_agent(bench, f"{name}-scores-on", release, http=False)
    row, batch = records_for(release.manifest, 1)[0], records_for(release.manifest, 100)
    results = []
    try:
        for rows, call_off, call_on, n in (
                (1, lambda: off.predict(row), lambda: on.predict(row), bench.calls),
                (100, lambda: off.predict_many(batch), lambda: on.predict_many(batch), max(bench.calls // 50, 20))):
            wall, cpu = interleaved_cpu(call_off, call_on, bench.rounds, n)
            results.append(Ratio(f"Agent with/without score counts, {rows}-row calls ({name})", wall, None,
                                 cpu=cpu, detail="wall"))
            print(results[-1].line(), flush=True)
    finally:
        on.stop()
        off.stop()
    return results


def measure_scores(bench: Bench) -> list[Ratio]:
    return [ratio for name in bench.models for ratio in (*recorder_rows(bench, name), *agent_rows(bench, name))]

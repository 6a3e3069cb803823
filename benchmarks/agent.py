"""The agent against the bare parts it is made of, every target measured in one run on this machine.

    PYTHONPATH=src:. .venv/bin/python benchmarks/agent.py [--quick] [--rounds 7] [--only predict,http] [--skip rss]
                                                          [--load auto|wrk|python]

Measures (``--only`` / ``--skip`` take their names; each lives in its own module):
  predict   Agent.predict 1 row / public session.run, both models                       ≤ 1.3×   agent_inference.py
            Agent.predict_many 100 rows / session.run on the same 100 rows              ≤ 1.2×
  http      8 concurrent keep-alive clients, rows/s of the agent's HTTP server / a
            minimal stdlib server around the same session, 1-row and 100-row requests   ≥ 0.9×   agent_http.py
  rss       RSS of a running agent / bare onnxruntime+numpy+paho with the same model     ≤ 1.25×  agent_footprint.py
            install size: the wheel / its four dependencies (clean venvs)              ≤ 1.1×
  wire      bytes on the agent's MQTT 5 connection per update / (ONNX + manifest)      ≤ 1.02×  agent_footprint.py
  feedback  the feedback log on / off, 1 row and 100 rows                              ≤ 1.05×  agent_bookkeeping.py
  scores    score counts on / off (thread CPU of model run + telemetry)                ≤ 1.05×  agent_bookkeeping.py

Every timed measure runs baseline and agent in interleaved rounds (benchmarks/rounds.py): the same public call on
both sides, one ratio per round, the median with its min–max spread, the CPU ratio beside the wall ratio. The run
ends with all of them as one table: target, measured ratio, met or missed, and the machine's load average when
each measure ended. ``--quick``: 3 rounds, fewer calls, 1 s load rounds, RSS in this interpreter instead of
clean venvs and no install size: a smoke run, not a measurement. Uses the machine's Mosquitto when it answers
on 127.0.0.1:1883, else starts one on a free port. A measure that fails prints its error; the others still run.
"""

import argparse
import logging
import sys
import traceback
from collections.abc import Callable

import agent_bookkeeping
import agent_footprint
import agent_http
import agent_inference
import numpy as np
import onnxruntime as ort
from agent_setup import Bench, bench_run
from http_load import GENERATORS
from rounds import Ratio, load_average, print_table

import edge_agent

MEASURES: dict[str, Callable[[Bench], list[Ratio]]] = {
    "predict": agent_inference.measure,
    "http": agent_http.measure,
    "rss": agent_footprint.measure_size,
    "wire": agent_footprint.measure_wire,
    "feedback": agent_bookkeeping.measure_feedback,
    "scores": agent_bookkeeping.measure_scores,
}


def names(text: str) -> list[str]:
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    unknown = set(chosen) - set(MEASURES)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown measure(s) {', '.join(sorted(unknown))}; "
                                         f"choose from {', '.join(MEASURES)}")
    return chosen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, help="interleaved rounds per measure (default 7, --quick 3)")
    parser.add_argument("--calls", type=int, help="single-row calls per side and round (default 2000, --quick 300)")
    parser.add_argument("--seconds", type=float, help="length of one HTTP load round (default 3, --quick 1)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer, shorter rounds, no venv builds")
    parser.add_argument("--load", choices=GENERATORS, default="auto",
                        help="HTTP load generator: wrk when installed (auto), or force wrk / the Python one")
    parser.add_argument("--only", type=names, default=list(MEASURES), help=f"comma-separated: {', '.join(MEASURES)}")
    parser.add_argument("--skip", type=names, default=[], help="comma-separated measures to leave out")
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 7)
    calls = args.calls or (300 if args.quick else 2000)
    seconds = args.seconds or (1.0 if args.quick else 3.0)
    chosen = [name for name in args.only if name not in args.skip]
    # as the HTTP agent process (--log-level ERROR): no ingest listens on the run's topics, so the agents'
    # "no matching subscribers" warnings about their telemetry would fill the output
    logging.getLogger("edge_agent").setLevel(logging.ERROR)
    print(f"edge_agent from {edge_agent.__file__}; onnxruntime {ort.__version__}, numpy {np.__version__}, "
          f"Python {sys.version.split()[0]}; {rounds} rounds, {calls} calls, {seconds:g} s load rounds; "
          f"measures: {', '.join(chosen)}", flush=True)
    results: list[Ratio] = []
    failed: dict[str, str] = {}
    with bench_run(rounds, calls, seconds, args.quick, args.load) as bench:
        print(f"broker {bench.broker}; models: " + ", ".join(f"{name} {len(release.data):,} B ONNX + "
                                                             f"{len(release.manifest.to_bytes()):,} B manifest"
                                                             for name, release in bench.models.items()), flush=True)
        load_start = load_average()
        for name in chosen:
            print(f"\n{name}:", flush=True)
            try:
                results += MEASURES[name](bench)
            except Exception as exc:  # one broken measure (an internal API a branch changed) must not hide the rest
                traceback.print_exc()
                failed[name] = f"{type(exc).__name__}: {exc}"
    print_table(results, load_start, "quick smoke run, not a measurement" if args.quick else "")
    for name, error in failed.items():
        print(f"NOT MEASURED: {name} ({error})")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

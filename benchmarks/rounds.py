"""Interleaved A/B rounds and the table every benchmark ends with: the pieces the scripts share.

Rules that keep a ratio honest on a machine other jobs share:
- **Interleaved rounds**: baseline and subject alternate, round after round (who goes first alternates too), and
  each round gives one ratio, so a burst of load elsewhere hits both sides of that ratio. The headline is the
  median ratio over rounds with its min–max spread; a best-of-N figure would pick the luckiest side's best.
- **The baseline in every round**, never measured once before (or after) the subject.
- **CPU beside wall**: process CPU seconds (``time.process_time`` for this process, /proc for other processes
  and their children), so a wall ratio that only looks good because the machine happened to be idle, or because
  one side used more cores, shows up.
- **One table at the end** with each target, the ratio with its spread, the CPU ratio where measured, met or
  missed, and the machine's 1-minute load average when that measure ended (and at the start and end of the run).
- **One loop**: ``rotating_rounds`` runs the sides of every interleaved measure; a script says only what one
  side's turn is (a number of calls, a load round, a pipeline run).
"""

import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
T = TypeVar("T")
M = TypeVar("M")


@dataclass
class Ratio:
    """One measure over interleaved rounds: ours / baseline per round (higher-is-better measures invert).
    ``target`` None: reported for context, nothing promised. ``cpu``: the same ratio of CPU seconds per round,
    shown beside the wall ratio. ``load``: the machine's 1-minute load average when the measure ended."""

    name: str
    rounds: list[float]
    target: float | None
    higher_is_better: bool = False
    detail: str = ""
    cpu: list[float] | None = None
    load: float = field(default_factory=lambda: load_average())

    @property
    def median(self) -> float:
        return statistics.median(self.rounds)

    @property
    def ok(self) -> bool:
        if self.target is None:
            return True
        return self.median >= self.target if self.higher_is_better else self.median <= self.target

    def line(self) -> str:
        sign = "≥" if self.higher_is_better else "≤"
        target = "(no target)" if self.target is None else f"(target {sign} {self.target}×)"
        verdict = "–   " if self.target is None else ("ok  " if self.ok else "MISS")
        cpu = f"CPU {spread(self.cpu)}" if self.cpu else ""
        return (f"  {self.name:<56} {spread(self.rounds):<20}  {cpu:<24}  {target:<17} {verdict} "
                f"load {self.load:4.1f}  {self.detail}")


def spread(values: Sequence[float]) -> str:
    """``median× [min–max]``: how every ratio is shown."""
    return f"{statistics.median(values):6.2f}× [{min(values):.2f}–{max(values):.2f}]"


def in_turn(sides: Sequence[T], r: int) -> list[T]:
    """The order of round ``r``: each side goes first in turn (two sides: they alternate)."""
    k = r % len(sides)
    return [*sides[k:], *sides[:k]]


def rotating_rounds(sides: Mapping[str, Callable[[], M]], rounds: int,
                    after_round: Callable[[int, dict[str, M]], None] | None = None) -> dict[str, list[M]]:
    """Each side once per round, who goes first rotating; every side's results in round order. The one loop
    behind every interleaved measure: a measure only says what one side's turn is. ``after_round(r, results)``
    (e.g. a progress line) runs after each round with that round's results."""
    out: dict[str, list[M]] = {name: [] for name in sides}
    for r in range(rounds):
        for name in in_turn(list(sides), r):
            out[name].append(sides[name]())
        if after_round is not None:
            after_round(r, {name: out[name][-1] for name in sides})
    return out


def ratios(ours: Sequence[float], baseline: Sequence[float]) -> list[float]:
    """Per round ours / baseline (a zero baseline, e.g. CPU too small to see, counts as 1e-9)."""
    return [a / max(b, 1e-9) for a, b in zip(ours, baseline, strict=True)]


def timed(fn: Callable[[], Any], calls: int, clock: Callable[[], float] = time.process_time) -> tuple[float, float]:
    """(wall seconds, ``clock`` CPU seconds) of ``calls`` calls of ``fn``: process CPU by default (all its
    threads, so a side that spreads over cores or leans on a background thread shows), or ``time.thread_time``
    for the calling thread alone."""
    c0, t0 = clock(), time.perf_counter()
    for _ in range(calls):
        fn()
    return time.perf_counter() - t0, clock() - c0


def interleaved_cpu(baseline: Callable[[], Any], ours: Callable[[], Any], rounds: int,
                    calls: int) -> tuple[list[float], list[float]]:
    """Per round: (wall time of ``calls`` of ours) / (the same of the baseline), alternating who goes first;
    and the same ratio of this process's CPU time. Both sides are warmed up first."""
    for fn in (baseline, ours):
        for _ in range(min(calls, 200)):
            fn()
    done = rotating_rounds({"baseline": lambda: timed(baseline, calls), "ours": lambda: timed(ours, calls)}, rounds)
    wall = ratios([w for w, _ in done["ours"]], [w for w, _ in done["baseline"]])
    return wall, ratios([c for _, c in done["ours"]], [c for _, c in done["baseline"]])


def interleaved(baseline: Callable[[], Any], ours: Callable[[], Any], rounds: int, calls: int) -> list[float]:
    """Per round: (time of ``calls`` of ours) / (time of ``calls`` of the baseline), alternating who goes first."""
    return interleaved_cpu(baseline, ours, rounds, calls)[0]


# CPU of other processes (Linux /proc) -------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and every live descendant (an ingest instance and its writer
    process, a Prefect server and its workers). Take it before and after while the tree is alive."""
    parents: dict[int, int] = {}
    spent: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        parents[int(entry.name)] = int(fields[1])
        spent[int(entry.name)] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += spent.get(current, 0.0)
        todo.extend(child for child, parent in parents.items() if parent == current)
    return total


# the final table ---------------------------------------------------------------------------------------------
def load_average() -> float:
    return os.getloadavg()[0]


def print_table(results: Sequence[Ratio], load_start: float, settings: str = "") -> int:
    """Every target as one table with the load at the start and now; returns the number missed."""
    print(f"\nAll targets (median over interleaved rounds [min–max]); load average {load_start:.1f} at the start, "
          f"{load_average():.1f} at the end, {os.cpu_count()} cores" + (f"; {settings}" if settings else "") + ":")
    print(f"  {'measure':<56} {'  ratio [min–max]':<20}  {'CPU ratio (per unit)':<24}  {'target':<17} {'met':<4} "
          f"{'load':<9} detail")
    for result in results:
        print(result.line())
    missed = [result.name for result in results if not result.ok]
    targets = sum(result.target is not None for result in results)
    print(f"\n{targets - len(missed)}/{targets} within target" + (f"; missed: {', '.join(missed)}" if missed else ""),
          flush=True)
    return len(missed)

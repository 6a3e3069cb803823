"""Interleaved A/B rounds and the table every benchmark ends with: the pieces the scripts share.

Rules that keep a ratio honest on a machine other jobs share:
- **Interleaved rounds**: baseline and subject alternate, round after round (who goes first alternates too), and
  each round gives one ratio, so a burst of load elsewhere hits both sides of that ratio. The headline is the
  median ratio over rounds with its min–max spread; a best-of-N figure would pick the luckiest side's best.
- **The baseline in every round**, never measured once before (or after) the subject.
- **CPU beside wall**: process CPU seconds (``time.process_time`` for this process, /proc for other processes
  and their children), so a wall ratio that only looks good because the machine happened to be idle, or because
  one side used more cores, shows up.
- **One table at the end** with each target and the machine's load average at the start and at the end.
"""

import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Ratio:
    """One measure over interleaved rounds: ours / baseline per round (higher-is-better measures invert).
    ``target`` None: reported for context, nothing promised."""

    name: str
    rounds: list[float]
    target: float | None
    higher_is_better: bool = False
    detail: str = ""

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
        target = "(no target)   " if self.target is None else f"(target {sign} {self.target}×)"
        verdict = "–   " if self.target is None else ("ok  " if self.ok else "MISS")
        return (f"  {self.name:<52} {spread(self.rounds)}  {target}  {verdict}  {self.detail}")


def spread(values: Sequence[float]) -> str:
    """``median× [min–max]``: how every ratio is shown."""
    return f"{statistics.median(values):6.2f}× [{min(values):.2f}–{max(values):.2f}]"


def interleaved_cpu(baseline: Callable[[], Any], ours: Callable[[], Any], rounds: int,
                    calls: int) -> tuple[list[float], list[float]]:
    """Per round: (wall time of ``calls`` of ours) / (the same of the baseline), alternating who goes first;
    and the same ratio of this process's CPU time (all its threads: a side that spreads over cores shows)."""
    for fn in (baseline, ours):
        for _ in range(min(calls, 200)):
            fn()
    wall, cpu = [], []
    for r in range(rounds):
        times: dict[Any, tuple[float, float]] = {}
        for side in ((baseline, ours) if r % 2 == 0 else (ours, baseline)):
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(calls):
                side()
            times[side] = (time.perf_counter() - t0, time.process_time() - c0)
        wall.append(times[ours][0] / times[baseline][0])
        cpu.append(times[ours][1] / max(times[baseline][1], 1e-9))
    return wall, cpu


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
    for result in results:
        print(result.line())
    missed = [result.name for result in results if not result.ok]
    targets = sum(result.target is not None for result in results)
    print(f"\n{targets - len(missed)}/{targets} within target" + (f"; missed: {', '.join(missed)}" if missed else ""),
          flush=True)
    return len(missed)

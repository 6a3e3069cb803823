"""Drift over time: a check per telemetry window, on the recent windows, with a false-alarm budget per month.

A 24-hour sum dilutes a shift (an hour of shifted data is 4 % of the sum) and tests so much data that the
training sample's own noise becomes "drift". Instead every window of telemetry is a *check point*: at each one
the two-sample test (drift_stats.drift_pvalues) compares the reference with the last window alone and with the
last ``recent_windows`` windows pooled — the single window catches a large shift at once, the pooled windows
catch a moderate shift when windows are small.

False alarms are budgeted over time, like an online detector's expected run length between false alarms:
``false_alarms`` expected false drift episodes per scope per 30 days, spread (Bonferroni) over the check
points of 30 days (30 d / ``window_s``) and the tests of one check point (features + prediction, times the
scales). Checks overlap and features correlate, so the real rate is below the budget.

An episode opens at the first check point that rejects and closes after ``recovery_windows`` check points in a
row show no evidence even at a lenient level (1 % for the whole check point): a drift that persists stays one
episode, one event.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeops.config.monitor import DriftThresholds
from edgeops.telemetry.drift_stats import drift_pvalues

DEFAULT = DriftThresholds()


@dataclass(frozen=True)
class Checks:
    """p-values of every check point: ``p[t, series, scale]``; the decisions derived from them."""

    names: tuple[str, ...]
    p: np.ndarray
    n: np.ndarray                 # observations per check point and series at the largest scale
    rejected: np.ndarray          # per check point: some test below alpha
    recovered: np.ndarray         # per check point: no test below the lenient level
    alpha: float

    def rejecting(self, t: int) -> list[str]:
        return [name for i, name in enumerate(self.names) if (self.p[t, i] < self.alpha).any()]


def judge(references: Mapping[str, Sequence[float]], counts: Mapping[str, np.ndarray],
          thresholds: DriftThresholds = DEFAULT, numeric: Collection[str] = ()) -> Checks:
    """Test every check point. ``counts[name]`` is (check points, bins), oldest first, on the bins of
    ``references[name]``; every series has the same number of check points; ``numeric`` names the series on
    quantile bins (drift_stats.drift_pvalues)."""
    names = tuple(references)
    length = len(next(iter(counts.values()))) if counts else 0
    scales = thresholds.scales
    p = np.ones((length, len(names), len(scales)))
    n = np.zeros((length, len(names)), dtype=np.int64)
    for i, name in enumerate(names):
        arr = np.asarray(counts[name], dtype=np.int64)
        cum = np.vstack([np.zeros((1, arr.shape[1]), dtype=np.int64), np.cumsum(arr, axis=0)])
        ref = np.asarray(references[name], dtype=float)
        for j, s in enumerate(scales):
            start = np.maximum(np.arange(length) + 1 - s, 0)
            pooled = cum[1:] - cum[start]
            p[:, i, j] = drift_pvalues(ref, pooled, thresholds.min_expected, numeric=name in numeric)[0]
            if j == len(scales) - 1:
                n[:, i] = pooled.sum(axis=1)
    alpha, lenient = thresholds.alpha(len(names)), thresholds.lenient(len(names))
    flat = p.reshape(length, -1)
    return Checks(names, p, n, np.any(flat < alpha, axis=1), ~np.any(flat < lenient, axis=1), alpha)


@dataclass
class EpisodeState:
    """Where a scope's drift episode stands between monitoring runs (kept in the telemetry store)."""

    active: bool = False
    quiet: int = 0
    checked_until: str | None = None       # ISO time of the last judged check point
    extra: dict[str, Any] = field(default_factory=dict)


def step(state: EpisodeState, rejected: Iterable[bool], recovered: Iterable[bool],
         recovery_windows: int) -> list[int]:
    """Advance ``state`` over check points; returns the indices where an episode opened."""
    opened = []
    for t, (bad, calm) in enumerate(zip(rejected, recovered, strict=True)):
        if bad:
            if not state.active:
                opened.append(t)
            state.active, state.quiet = True, 0
        elif state.active:
            state.quiet = state.quiet + 1 if calm else 0
            if state.quiet >= recovery_windows:
                state.active, state.quiet = False, 0
    return opened


__all__ = ["Checks", "EpisodeState", "judge", "step"]

"""Two-sample statistics on binned counts, vectorised: is this telemetry drawn from the training distribution?

The reference in a manifest is itself a *sample* (the training rows, counted on the same bins), so a test that
took its proportions as the truth (goodness of fit) would call every large enough window "drift": the training
sample's own noise is then read as a difference. The chi-square test of homogeneity on the 2 × k table
(reference counts, observed counts) accounts for the noise of both samples; its power is limited by the smaller
one, which is the honest answer when the reference is small.

Bins are pooled before testing so every cell's expected count is large enough for the chi-square approximation
(Cochran), and the pooling looks at both samples together (column totals), never at the reference alone:
selecting bins by the reference's own counts would favour bins where it happened to be high. Values outside
what the reference knows (beyond its range, unseen or rarely seen categories) get their own one-sided test,
because the reference under-represents them by construction (``drift_pvalues``). This is also what makes
high-cardinality categoricals safe: their long tail is judged as one share, not as hundreds of tiny cells.

``homogeneity`` returns Pearson's statistic on the pooled table; scipy.stats.chi2_contingency (without Yates'
correction) gives the same statistic and p-value on the same table (tests/unit/test_drift_stats.py).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import betabinom, chi2


def homogeneity(reference: np.ndarray, observed: np.ndarray,
                min_expected: float = 5.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Chi-square test of homogeneity of ``reference`` (bins) against every row of ``observed`` (rows, bins).

    Pooling, per row, from the column totals c = r + o (both samples together — choosing bins by the reference
    counts alone would favour bins where the reference happened to be high): a column is kept when the smaller
    sample expects ``min_expected`` values in it (c · min(R, n) / N), the others form one pooled column, and a
    pooled column still below that joins the smallest kept column. Pearson's statistic is then
    Σ (r·n − o·R)² / (R·n·c) over the non-empty columns. Returns (statistic, degrees of freedom, p-value) per
    row; a row with fewer than two columns gets (0, 0, 1): nothing to test."""
    ref = np.asarray(reference, dtype=float)
    obs = np.atleast_2d(np.asarray(observed, dtype=float))
    rows = len(obs)
    big_r, n = ref.sum(), obs.sum(axis=1)
    if big_r <= 0 or ref.size == 0:
        return np.zeros(rows), np.zeros(rows, dtype=np.int64), np.ones(rows)
    total = big_r + n
    smaller = np.minimum(big_r, n)
    c = ref + obs
    keep = c * (smaller / total)[:, None] >= min_expected
    pool_r = np.where(keep, 0.0, ref).sum(axis=1)
    pool_o = np.where(keep, 0.0, obs).sum(axis=1)
    pool_ok = (pool_r + pool_o) * smaller / total >= min_expected
    r_eff, o_eff = np.where(keep, ref, 0.0), np.where(keep, obs, 0.0)
    fold = ~pool_ok & keep.any(axis=1)
    target = np.argmin(np.where(keep, c, np.inf), axis=1)
    r_eff[np.flatnonzero(fold), target[fold]] += pool_r[fold]
    o_eff[np.flatnonzero(fold), target[fold]] += pool_o[fold]
    cols_r = np.column_stack([r_eff, np.where(pool_ok, pool_r, 0.0)])
    cols_o = np.column_stack([o_eff, np.where(pool_ok, pool_o, 0.0)])
    cols_c = cols_r + cols_o
    used = cols_c > 0
    n_col = n[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        cell = np.where(used, (cols_r * n_col - cols_o * big_r) ** 2 / (big_r * n_col * np.where(used, cols_c, 1.0)),
                        0.0)
    dof = np.where(n > 0, used.sum(axis=1) - 1, 0).astype(np.int64)
    dof = np.maximum(dof, 0)
    stat = np.where(dof > 0, cell.sum(axis=1), 0.0)
    p = np.where(dof > 0, chi2.sf(stat, np.maximum(dof, 1)), 1.0)
    return stat, dof, p


OUTSIDE = 3          # Counts.vector() ends with underflow, overflow, unseen, missing: the first three are outside
RARE = 10            # categories the reference holds fewer of than this join the outside values (drift_pvalues)


GOOD_TURING_SPREAD = 3.0   # variance of the Good–Turing share relative to a binomial one (≈ 1 + 2·N2/N1, bounded)


def outside_mask(reference: np.ndarray, rare: int = RARE) -> np.ndarray:
    """The bins judged as "outside the reference": underflow, overflow, unseen, and bins the reference holds
    fewer than ``rare`` values of (0 for numeric bins: quantile bins are not chosen by their counts). Missing
    is a bin like any other."""
    ref = np.asarray(reference, dtype=float)
    mask = ref < rare
    mask[-1] = False                      # missing
    mask[-1 - OUTSIDE:-1] = True          # underflow, overflow, unseen
    return mask


def drift_pvalues(reference: np.ndarray, observed: np.ndarray, min_expected: float = 5.0, *, numeric: bool = False,
                  rare: int = RARE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """p-value per row of ``observed`` (rows, bins in Counts.vector() layout) that it comes from the reference's
    distribution; returns (p, chi-square statistic, outside p).

    The reference defines its own bins (quantile edges from its values, categories it has seen), so values
    outside them are rarer in the reference than in the population: beyond a numeric reference's min and max
    lies 2/(R+1) of the population, and categories never or rarely seen in R rows hold a share that Good–Turing
    estimates from the categories seen exactly ``rare`` times. Two tests, combined by Bonferroni:

    * inside: the chi-square test of homogeneity on the other bins (numeric bins, categories the reference
      holds at least ``rare`` values of — rarer ones were kept *because* they were seen, so their counts overstate
      them —, and missing), for the values that fell in them;
    * outside: one-sided, more outside values than the reference's own share allows: the outside count is
      beta-binomial with mean share a / (R + 1), a = outside reference count + 2 + rare · (bins seen exactly
      ``rare`` times), the uncertainty of that share included. For a numeric feature (``numeric``) that is the
      exact law of values beyond a continuous sample's range; for categories the Good–Turing estimate varies
      more than a binomial share, so its concentration is divided by ``GOOD_TURING_SPREAD``."""
    ref = np.asarray(reference, dtype=float)
    obs = np.atleast_2d(np.asarray(observed, dtype=float))
    out = outside_mask(ref, 0 if numeric else rare)
    stat, _dof, p_in = homogeneity(ref[~out], obs[:, ~out], min_expected)
    big_r = ref.sum()
    a = ref[out].sum() + 2.0 + (0.0 if numeric else rare * float((ref[~out][:-1] == rare).sum()))
    b = max(big_r + 1.0 - ref[out].sum(), 1.0)
    if not numeric:
        a, b = a / GOOD_TURING_SPREAD, b / GOOD_TURING_SPREAD
    x = obs[:, out].sum(axis=1)
    n = obs.sum(axis=1)
    p_out = np.where(x > 0, betabinom.sf(x - 1, n.astype(np.int64), a, b), 1.0)
    return np.minimum(1.0, 2.0 * np.minimum(p_in, p_out)), stat, p_out


def noise_levels(columns: int, n: float, reference_n: float) -> tuple[float, float]:
    """The PSI and the Jensen–Shannon distance (base 2) expected between two samples of sizes ``n`` and
    ``reference_n`` of the *same* distribution over ``columns`` bins: both are chi-square-like, so their
    expectation is about (columns − 1)·(1/n + 1/R) for PSI and the square root of that over 8·ln 2 for JS.
    A measured value near its noise level says nothing; the test decides, these give the size."""
    if n <= 0 or reference_n <= 0 or columns < 2:
        return 0.0, 0.0
    base = (columns - 1) * (1.0 / n + 1.0 / reference_n)
    return base, math.sqrt(base / (8.0 * math.log(2.0)))


__all__ = ["drift_pvalues", "homogeneity", "noise_levels", "outside_mask"]

"""Two-sample statistics on binned counts, vectorised: is this telemetry drawn from the training distribution?

The reference in a manifest is itself a *sample* (the training rows, counted on the same bins), so a test that
took its proportions as the truth (goodness of fit) would call every large enough window "drift": the training
sample's own noise is then read as a difference. The chi-square test of homogeneity on the 2 × k table
(reference counts, observed counts) accounts for the noise of both samples; its power is limited by the smaller
one, which is the honest answer when the reference is small.

Bins are pooled before testing so every cell's expected count is large enough for the chi-square approximation
(Cochran), and the pooling looks at both samples together (column totals), never at the reference alone:
selecting bins by the reference's own counts would favour bins where it happened to be high. Values outside
what the reference knows (beyond its range, unseen categories) are under-represented in it by construction
and are handled so that this is not read as drift (``drift_pvalues``). This is also what makes
high-cardinality categoricals safe: their long tail is judged as one share, not as hundreds of tiny cells.

``homogeneity`` returns Cressie and Read's power-divergence statistic (λ = 2/3) on the pooled table, not Pearson's:
the checks run at the far tail (p ≈ 10⁻⁷, a month's false-alarm budget spread over its windows), where the
chi-square law is too thin for Pearson's statistic on tables of a few expected values per cell; λ = 2/3 is the
member of the family whose law is closest to chi-square in small samples (Cressie & Read 1984), and it cut that
excess to near nominal in our measurements (docs/monitoring.md, "Drift quality").
scipy.stats.chi2_contingency(lambda_="cressie-read", correction=False) gives the same statistic and p-value on
the same table (tests/unit/test_drift_stats.py).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import beta, betabinom, chi2


def homogeneity(reference: np.ndarray, observed: np.ndarray, min_expected: float = 5.0,
                pooled: np.ndarray | None = None, lambda_: float | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Chi-square test of homogeneity of ``reference`` (bins) against every row of ``observed`` (rows, bins).

    Pooling, per row, from the column totals c = r + o (both samples together — choosing bins by the reference
    counts alone would favour bins where the reference happened to be high): a column is kept when the smaller
    sample expects ``min_expected`` values in it (c · min(R, n) / N), the others form one pooled column, and a
    pooled column still below that joins the smallest kept column. The statistic is ``power_divergence`` on the
    non-empty columns, referred to chi-square with (columns − 1) degrees of freedom (``lambda_`` = 1: Pearson's,
    which benchmarks/drift_tail.py compares).

    Returns (statistic, degrees of freedom, p-value) per
    row; a row with fewer than two columns gets (0, 0, 1): nothing to test. Bins of the mask ``pooled`` always
    go into the pooled column, whatever their totals (see drift_pvalues)."""
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
    if pooled is not None:
        keep &= ~np.asarray(pooled, dtype=bool)
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
    used = (cols_r + cols_o) > 0
    dof = np.maximum(np.where(n > 0, used.sum(axis=1) - 1, 0), 0).astype(np.int64)
    stat = np.where(dof > 0, power_divergence(cols_r, cols_o, big_r, n, used, lambda_), 0.0)
    p = np.where(dof > 0, chi2.sf(stat, np.maximum(dof, 1)), 1.0)
    return stat, dof, p


CRESSIE_READ = 2.0 / 3.0


def power_divergence(cols_r: np.ndarray, cols_o: np.ndarray, big_r: float, n: np.ndarray, used: np.ndarray,
                     lambda_: float | None = None) -> np.ndarray:
    """The power-divergence statistic (λ = 2/3 unless given) per row of the 2 × k tables (``cols_r`` over
    ``cols_o``): 2/(λ(λ+1)) · Σ O·((O/E)^λ − 1) over both rows' non-empty columns, E from the margins."""
    lam = CRESSIE_READ if lambda_ is None else lambda_
    total = big_r + n
    share = (cols_r + cols_o) / total[:, None]
    expected_r, expected_o = share * big_r, share * n[:, None]
    out = np.zeros(len(n))
    for observed, expected in ((cols_r, expected_r), (cols_o, expected_o)):
        safe = np.where(used & (expected > 0), expected, 1.0)
        out += np.where(used, observed * ((observed / safe) ** lam - 1.0), 0.0).sum(axis=1)
    return out * 2.0 / (lam * (lam + 1.0))


OUTSIDE = 3          # Counts.vector() ends with underflow, overflow, unseen, missing: the first three are outside


def outside_mask(size: int) -> np.ndarray:
    """The entries of a Counts.vector() of ``size`` that lie outside the reference's bins: underflow, overflow,
    unseen. Missing is a bin like any other."""
    mask = np.zeros(size, dtype=bool)
    mask[size - 1 - OUTSIDE:size - 1] = True
    return mask


def drift_pvalues(reference: np.ndarray, observed: np.ndarray, min_expected: float = 5.0, *, numeric: bool = False,
                  lambda_: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """p-value per row of ``observed`` (rows, bins in Counts.vector() layout) that it comes from the reference's
    distribution; returns (p, chi-square statistic, outside p).

    The reference defines its own bins, so what falls outside them is under-represented in it by construction,
    and the test must not read that as drift:

    * categories: the list holds the categories the training sample *saw*, so the unseen bucket is empty in
      the reference while the population has a share there. Unseen values always join the pooled column of
      rare categories (chosen by both samples' totals). Taken together, the reference's rare categories and
      the telemetry's rare and unseen ones estimate the same share, so the chi-square test stays unbiased; a
      flood of new categories still shows as a larger share there.
    * numeric (``numeric``): the outer edges are the training sample's min and max, beyond which lies, for a
      continuous feature, exactly 2/(R+1) of the population on average (a Beta(2, R−1) share). Values inside
      the edges go to the chi-square test; the count beyond them gets a one-sided beta-binomial test (more
      values outside than the reference allows, the uncertainty of its share included), and the two p-values
      are combined by Bonferroni."""
    ref = np.asarray(reference, dtype=float)
    obs = np.atleast_2d(np.asarray(observed, dtype=float))
    out = outside_mask(ref.size)
    if not numeric:
        stat, _dof, p = homogeneity(ref, obs, min_expected, pooled=out, lambda_=lambda_)
        return p, stat, np.ones(len(obs))
    stat, _dof, p_in = homogeneity(ref[~out], obs[:, ~out], min_expected, lambda_=lambda_)
    a = ref[out].sum() + 2.0
    b = max(ref.sum() + 1.0 - ref[out].sum(), 1.0)
    x = obs[:, out].sum(axis=1)
    n = obs.sum(axis=1)
    p_out = np.ones(len(obs))
    exact = (x > 0) & (n <= EXACT_N)
    p_out[exact] = betabinom.sf(x[exact] - 1, n[exact].astype(np.int64), a, b)
    p_out[(x > 0) & ~exact] = _share_sf(x[(x > 0) & ~exact], n[(x > 0) & ~exact], a, b)
    return np.minimum(1.0, 2.0 * np.minimum(p_in, p_out)), stat, p_out


EXACT_N = 1000       # beta-binomial tails are summed exactly up to this n (scipy sums the pmf: slow beyond)


def _share_sf(x: np.ndarray, n: np.ndarray, a: float, b: float) -> np.ndarray:
    """P(X ≥ x) for X ~ beta-binomial(n, a, b) with large n: X/n as a beta law with the same mean and variance
    (the beta share plus the binomial noise around it), with a continuity correction."""
    mean = a / (a + b)
    concentration = n * (a + b + 1.0) / (a + b + n) - 1.0
    return np.asarray(beta.sf((x - 0.5) / n, mean * concentration, (1.0 - mean) * concentration))


def noise_levels(columns: int, n: float, reference_n: float) -> tuple[float, float]:
    """The PSI and the Jensen–Shannon distance (base 2) expected between two samples of sizes ``n`` and
    ``reference_n`` of the *same* distribution over ``columns`` bins: both are chi-square-like, so their
    expectation is about (columns − 1)·(1/n + 1/R) for PSI and the square root of that over 8·ln 2 for JS.
    A measured value near its noise level says nothing; the test decides, these give the size."""
    if n <= 0 or reference_n <= 0 or columns < 2:
        return 0.0, 0.0
    base = (columns - 1) * (1.0 / n + 1.0 / reference_n)
    return base, math.sqrt(base / (8.0 * math.log(2.0)))


__all__ = ["drift_pvalues", "homogeneity", "noise_levels", "outside_mask", "power_divergence"]

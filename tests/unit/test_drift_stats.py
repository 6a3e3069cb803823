"""The two-sample drift statistics against scipy, and the decisions on seeded simulated streams binned by the
product's own code (reference.py for the reference, the agent's add_values for the device)."""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chi2_contingency

from edge_agent.protocol import CountAccumulator, Reference
from edge_agent.telemetry import add_values
from edgeops.config.monitor import DriftThresholds
from edgeops.telemetry.drift import compare_counts, jensen_shannon_distance, population_stability_index
from edgeops.telemetry.drift_checks import EpisodeState, judge, step
from edgeops.telemetry.drift_stats import drift_pvalues, homogeneity, noise_levels, outside_mask
from edgeops.train.reference import categorical_reference, numeric_reference

pytestmark = pytest.mark.unit


def device_counts(ref: Reference, values: list | np.ndarray) -> list[int]:
    acc = CountAccumulator(ref.bins)
    add_values(acc, list(values))
    return acc.freeze().vector()


def pooled_table(ref: np.ndarray, obs: np.ndarray, min_expected: float = 5.0) -> np.ndarray:
    """The pooling rule of drift_stats.homogeneity, written out plainly, one row at a time."""
    big_r, n = ref.sum(), obs.sum()
    c = ref + obs
    expected = c * min(big_r, n) / (big_r + n)
    kept = [j for j in range(len(c)) if expected[j] >= min_expected]
    rest = [j for j in range(len(c)) if expected[j] < min_expected]
    columns = [[ref[j], obs[j]] for j in kept]
    pooled = [ref[rest].sum(), obs[rest].sum()]
    if sum(pooled) * min(big_r, n) / (big_r + n) >= min_expected or not kept:
        columns.append(pooled)
    else:
        smallest = min(range(len(kept)), key=lambda i: c[kept[i]])
        columns[smallest] = [columns[smallest][0] + pooled[0], columns[smallest][1] + pooled[1]]
    table = np.array(columns, dtype=float).T
    return table[:, table.sum(axis=0) > 0]


@pytest.mark.parametrize("seed", range(8))
def test_homogeneity_is_cressie_read_chi2_contingency_on_the_pooled_table(seed: int) -> None:
    rng = np.random.default_rng(seed)
    bins = int(rng.integers(3, 300))
    probs = rng.dirichlet(np.full(bins, 0.3))
    ref = rng.multinomial(int(rng.integers(100, 5000)), probs)
    moved = probs * rng.uniform(0.8, 1.25, bins) if seed % 2 else probs     # odd seeds: some drift
    obs = rng.multinomial(int(rng.integers(50, 20000)), moved / moved.sum(), size=3)
    stat, dof, p = homogeneity(ref, obs)
    for row in range(3):
        want = chi2_contingency(pooled_table(ref, obs[row]),
                            correction=False, lambda_="cressie-read")
        assert stat[row] == pytest.approx(want.statistic, rel=1e-9)
        assert p[row] == pytest.approx(want.pvalue, rel=1e-9, abs=1e-300)
        assert dof[row] == want.dof


def test_values_outside_a_numeric_reference_are_judged_one_sided_with_its_own_share() -> None:
    ref = np.array([*[10] * 10, 0, 0, 0, 0])               # 100 rows in 10 quantile bins: nothing outside
    assert outside_mask(14).tolist() == [False] * 10 + [True] * 3 + [False]
    inside = np.array([[*[50] * 10, 0, 0, 0, 0]])
    assert drift_pvalues(ref, inside, numeric=True)[2][0] == 1.0
    usual = np.array([[*[49] * 10, 5, 5, 0, 0]])            # 2/(R+1) of the population lies outside: no alarm
    assert drift_pvalues(ref, usual, numeric=True)[2][0] > 0.05
    flood = np.array([[*[40] * 10, 50, 50, 0, 0]])          # 20 % outside
    assert drift_pvalues(ref, flood, numeric=True)[0][0] < 1e-6


def test_unseen_categories_join_the_rare_ones_and_a_flood_of_them_is_drift() -> None:
    ref = np.array([400, 300, 200, 50, 3, 2, 1, 0, 0, 0, 0])          # 7 categories, then the 4 extra buckets
    usual = np.array([[4000, 3000, 2000, 500, 20, 30, 10, 0, 0, 40, 0]])
    stat, dof, p = homogeneity(ref, usual, pooled=outside_mask(11))
    want = chi2_contingency(np.array([[400, 300, 200, 50, 6], [4000, 3000, 2000, 500, 100]]),
                            correction=False, lambda_="cressie-read")
    assert (stat[0], p[0], dof[0]) == pytest.approx((want.statistic, want.pvalue, want.dof), rel=1e-9)
    assert drift_pvalues(ref, usual)[0][0] == pytest.approx(want.pvalue, rel=1e-9)
    flood = np.array([[3000, 2000, 2000, 500, 20, 30, 10, 0, 0, 2000, 0]])
    assert drift_pvalues(ref, flood)[0][0] < 1e-12


def test_noise_levels_are_what_two_samples_of_one_distribution_show() -> None:
    rng = np.random.default_rng(3)
    probs = np.full(10, 0.1)
    ref = rng.multinomial(5000, probs)
    obs = rng.multinomial(100, probs, size=400)
    psi_noise, js_noise = noise_levels(10, 100, 5000)
    psi = np.mean([population_stability_index(ref, o) for o in obs])
    js = np.median([jensen_shannon_distance(ref, o) for o in obs])
    assert psi == pytest.approx(psi_noise, rel=0.2)
    assert js == pytest.approx(js_noise, rel=0.15)


@pytest.mark.parametrize(("reference_n", "n"), [(100, 500), (1000, 100), (5000, 100_000)])
def test_stationary_numeric_streams_are_flagged_at_the_nominal_rate(reference_n: int, n: int) -> None:
    """The old goodness-of-fit test flagged 100 % of unshifted streams at n = 100k against 5,000 training rows."""
    rng = np.random.default_rng(reference_n + n)
    flagged = 0
    for _ in range(150):
        ref = numeric_reference(rng.lognormal(size=reference_n), 10)
        obs = np.array([device_counts(ref, rng.lognormal(size=n)) for _ in range(2)])
        flagged += int((drift_pvalues(np.array(ref.counts.vector()), obs, numeric=True)[0] < 0.01).sum())
    assert flagged / 300 < 0.025


def test_high_cardinality_categoricals_stay_quiet() -> None:
    """Zipf over 200 categories, n = 20k: the old verdict flagged 36 % of stationary streams."""
    rng = np.random.default_rng(5)
    cats = np.array([f"c{i}" for i in range(200)])
    probs = 1.0 / np.arange(1, 201)
    probs /= probs.sum()
    verdicts = []
    for _ in range(40):
        ref = categorical_reference(pd.Series(rng.choice(cats, 5000, p=probs)))
        verdicts += [compare_counts("c", ref.counts.vector(), device_counts(ref, rng.choice(cats, 20_000, p=probs)),
                                    alpha=0.01).verdict for _ in range(3)]
    assert verdicts.count("drift") <= 3


def test_a_one_sigma_shift_is_seen_in_one_window_of_100() -> None:
    """The old verdict needed 1,000 observations: a window of 100 never got one."""
    rng = np.random.default_rng(11)
    seen = 0
    for _ in range(40):
        ref = numeric_reference(rng.normal(size=5000), 10)
        seen += compare_counts("x", ref.counts.vector(), device_counts(ref, rng.normal(1.0, size=100)),
                               alpha=DriftThresholds().alpha(11), numeric=True).verdict == "drift"
    assert seen >= 36


def test_missing_categoricals_are_missing_on_the_device_and_in_the_reference() -> None:
    values = ["a", "b", None, np.nan, pd.NA, "a", "__missing__"]
    ref = categorical_reference(pd.Series(values, dtype=object), missing_token="__missing__")
    assert ref.counts.missing == 4 and ref.counts.unseen == 0
    device = device_counts(ref, ["a", None, np.nan, pd.NA, float("nan")])
    assert device[-1] == 4 and device[-2] == 0       # missing, not unseen


def test_a_month_of_stationary_windows_opens_no_episode_and_a_shift_opens_one_within_three() -> None:
    rng = np.random.default_rng(2)
    thresholds = DriftThresholds()
    flat = np.array([*[0.1] * 10, 0, 0, 0, 0])              # 10 bins, then underflow, overflow, unseen, missing
    refs = {f"f{i}": rng.multinomial(1000, flat) for i in range(11)}
    length = 6000
    counts = {name: rng.multinomial(500, flat, size=length) for name in refs}
    shifted = np.array([0.05, 0.06, 0.07, 0.08, 0.09, 0.11, 0.12, 0.13, 0.14, 0.15, 0, 0, 0, 0])
    counts["f3"][-5:] = rng.multinomial(500, shifted, size=5)
    checks = judge(refs, counts, thresholds)
    state = EpisodeState()
    opened = step(state, checks.rejected, checks.recovered, thresholds.recovery_windows)
    assert len(opened) == 1 and opened[0] in (length - 5, length - 4, length - 3)
    assert checks.rejecting(opened[0]) == ["f3"] and state.active


def test_an_episode_closes_after_the_quiet_windows_and_reopens_on_the_next_rejection() -> None:
    state = EpisodeState()
    rejected = [False, True, True, False, *[False] * 3, True, *[False] * 3]
    recovered = [True, False, False, True, True, True, True, False, True, True, True]
    assert step(state, rejected, recovered, recovery_windows=3) == [1, 7]
    assert not state.active                     # three quiet windows after index 7 closed it again


def test_the_far_tail_holds_on_sparse_high_cardinality_tables() -> None:
    """Checks run at p ≈ 1e-7, where the chi-square law is too thin for Pearson's statistic on tables of a few
    expected values per cell (Zipf over 200 categories, windows of 100): Pearson rejected at 2-3x the nominal
    rate at p < 1e-4; the Cressie-Read statistic stays near it. Unconditional over 20 references."""
    rng = np.random.default_rng(11)
    probs = 1.0 / np.arange(1, 201)
    probs /= probs.sum()
    rejected, draws = 0, 0
    for _ in range(20):
        counts = rng.multinomial(2000, probs)
        seen = counts > 0
        ref = np.concatenate([counts[seen], [0, 0, 0, 0]])         # the categories it saw, then the 4 extra buckets
        windows = rng.multinomial(100, probs, size=10_000)
        obs = np.zeros((len(windows), ref.size))
        obs[:, :seen.sum()] = windows[:, seen]
        obs[:, -2] = windows[:, ~seen].sum(axis=1)                 # unseen
        rejected += int((drift_pvalues(ref, obs)[0] < 1e-4).sum())
        draws += len(windows)
    assert rejected / draws < 1.4e-4       # 33 in 200,000 with Pearson (1.65x), 22 with Cressie-Read


def test_lambda_one_is_pearson_as_scipy_computes_it() -> None:
    ref = np.array([400, 300, 200, 50, 6])
    obs = np.array([[4000, 3000, 2000, 500, 100]])
    stat, dof, p = homogeneity(ref, obs, lambda_=1.0)
    want = chi2_contingency(np.array([ref, obs[0]]), correction=False)
    assert (stat[0], p[0], dof[0]) == pytest.approx((want.statistic, want.pvalue, want.dof), rel=1e-9)

"""The far tail of the drift test on sparse tables: how often unshifted windows reject at small p-values.

    PYTHONPATH=src:. .venv/bin/python benchmarks/drift_tail.py [--windows 1e6] [--references 100] [--seed 3]
                                                               [--min-expected 5]

Drift checks run at p ≈ 10⁻⁷ (a month's false-alarm budget spread over its windows), far beyond the 5 % for
which the chi-square approximation's rules of thumb were made. This script draws unshifted windows of n rows
from Zipf laws over many categories, against references of R rows drawn from the same law (a new reference
every windows/references windows, so the rate is the test's unconditional one), and prints the rejection rate
at p < 10⁻³, 10⁻⁴ and 10⁻⁵ as a multiple of the nominal rate, for Pearson's statistic (λ = 1) and the product's
Cressie–Read statistic (λ = 2/3) on the same pooled tables (edgeops.telemetry.drift_stats.drift_pvalues). 1.0× is exact;
the budget's guarantee needs it at the smallest level.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from edgeops.telemetry.drift_stats import CRESSIE_READ, drift_pvalues  # noqa: E402

LEVELS = (1e-3, 1e-4, 1e-5)
CASES = ((200, 1000, 100), (200, 10_000, 100), (1000, 10_000, 100), (1000, 10_000, 300), (200, 1000, 1000),
         (20, 1000, 100))
STATISTICS = (("Pearson", 1.0), ("Cressie-Read", CRESSIE_READ))


def zipf(levels: int) -> np.ndarray:
    weights = 1.0 / np.arange(1, levels + 1)
    return weights / weights.sum()


def rates(rng: np.random.Generator, levels: int, ref_rows: int, n: int, windows: int, references: int,
          min_expected: float) -> dict[str, np.ndarray]:
    """Rejections per statistic and level, as multiples of the level."""
    probs = zipf(levels)
    hits = {name: np.zeros(len(LEVELS)) for name, _ in STATISTICS}
    per = max(1, windows // references)
    for _ in range(references):
        counts = rng.multinomial(ref_rows, probs)
        seen = counts > 0
        ref = np.concatenate([counts[seen], [0, 0, 0, 0]])      # the categories it saw, then the 4 extra buckets
        for start in range(0, per, 50_000):
            drawn = rng.multinomial(n, probs, size=min(50_000, per - start))
            obs = np.zeros((len(drawn), ref.size))
            obs[:, :seen.sum()] = drawn[:, seen]
            obs[:, -2] = drawn[:, ~seen].sum(axis=1)             # unseen
            for name, lam in STATISTICS:
                p = drift_pvalues(ref, obs, min_expected, lambda_=lam)[0]
                hits[name] += [(p < level).sum() for level in LEVELS]
    total = per * references
    return {name: h / total / np.array(LEVELS) for name, h in hits.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=float, default=1e6, help="unshifted windows per case")
    parser.add_argument("--references", type=int, default=100, help="references per case")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--min-expected", type=float, default=5.0, help="pooling minimum (the product's: 5)")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    head = " | ".join(f"{name} p<{level:g}" for name, _ in STATISTICS for level in LEVELS)
    print(f"| levels | R | n | {head} |")
    print("|---:|---:|---:|" + "---:|" * (len(STATISTICS) * len(LEVELS)))
    for levels, ref_rows, n in CASES:
        got = rates(rng, levels, ref_rows, n, int(args.windows), args.references, args.min_expected)
        cells = " | ".join(f"{x:.2f}×" for name, _ in STATISTICS for x in got[name])
        print(f"| {levels} | {ref_rows} | {n} | {cells} |", flush=True)
    print(f"({time.perf_counter() - started:.0f} s; {args.windows:g} windows and {args.references} references "
          f"per case, seed {args.seed}, min_expected {args.min_expected:g}; 1.00× = the nominal rate)")


if __name__ == "__main__":
    main()

"""Drift decisions at every traffic level: false episodes per month, detection within three windows, delay.

    PYTHONPATH=src:. .venv/bin/python benchmarks/drift_quality.py [--streams 1] [--detect 60] [--delay 8]

Streams are generated in the run. Ten features — numeric (normal, uniform, exponential), skewed (lognormal, 2 %
missing), counts (Poisson, geometric) and categoricals of 4, 20 (3 % missing), 200 and 1,000 levels (Zipf) —
plus a two-class prediction. The reference is built from a training sample of R rows by the product's own
code (src/edgeops/train/reference.py); the device counts with the agent's own code (edge_agent/telemetry.py
``add_values`` and protocol/bins.py). Decisions are the product's (drift_checks.judge / step at default
settings; the delay row runs the real monitor: SQLite store, run_monitor, episode_events).

* stationary: 30 days of 1-minute windows per stream, for every window size (100, 1,000, 10,000, and a mix
  of 100-10,000) and reference size (100, 1,000, 10,000 rows). A month of windows is 43,200 windows × 11 series,
  too many to bin row by row, so window counts are drawn from the exact probability of each device bin (the
  device's binning rule applied to the distribution's support, or its CDF at the edges): the same law as the
  device's counts of independent rows. A check on real rows (add_values) is printed beside.
* detection: 10 unshifted windows, then shifted ones, raw rows through add_values, reference of 5,000 rows;
  "within 3 windows" = an episode opens at the first, second or third shifted window.
* delay: the real monitor every 15 minutes (the deployment's schedule) on a device sending 1-minute windows
  of 500 rows, a 0.5 σ shift starting at a random minute; delay = the monitor run that emits
  ``edgeops.drift.detected`` − the end of the first shifted window.

The baseline beside each row is the textbook test per window, written with scipy: two-sample KS for numeric
features, chi-square (chi2_contingency) for categorical ones, Bonferroni over the 11 series at 5 %.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from edge_agent.protocol import CountAccumulator, Reference  # noqa: E402
from edge_agent.protocol.bins import categorical_bin, numeric_bin  # noqa: E402
from edge_agent.telemetry import add_values  # noqa: E402
from edgeops.config.monitor import DriftThresholds  # noqa: E402
from edgeops.telemetry.drift_checks import EpisodeState, judge, step  # noqa: E402
from edgeops.train.reference import categorical_reference, numeric_reference  # noqa: E402

MONTH = 43_200
ALPHA_BASELINE = 0.05


# --- the features --------------------------------------------------------------------------------------------

def zipf(levels: int) -> np.ndarray:
    weights = 1.0 / np.arange(1, levels + 1)
    return weights / weights.sum()


class Feature:
    """One feature: a sampler of raw values and the exact probability of each device bin of a reference."""

    def __init__(self, name: str, kind: str, dist: Any = None, levels: int = 0, probs: np.ndarray | None = None,
                 missing: float = 0.0) -> None:
        self.name, self.kind, self.dist, self.missing = name, kind, dist, missing
        self.categories = [f"{name}-{i}" for i in range(levels)]
        self.probs = probs

    @property
    def numeric(self) -> bool:
        return self.kind != "categorical"

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.kind == "categorical":
            values = rng.choice(np.array(self.categories, dtype=object), n, p=self.probs)
        else:
            values = self.dist.rvs(size=n, random_state=rng).astype(float)
        if self.missing:
            values = values.astype(object) if self.kind == "categorical" else values
            values[rng.random(n) < self.missing] = np.nan
        return values

    def reference(self, values: np.ndarray) -> Reference:
        if self.kind == "categorical":
            return categorical_reference(pd.Series(values, dtype=object))
        return numeric_reference(values, 10)

    def bin_probs(self, ref: Reference) -> np.ndarray:
        """Probability of each entry of Counts.vector() on the device, by the device's own binning rule."""
        size = ref.bins.size
        out = np.zeros(size + 4)
        if self.kind == "categorical":
            index = {c: i for i, c in enumerate(ref.bins.categories)}
            for cat, p in zip(self.categories, self.probs, strict=True):
                out[_slot(categorical_bin(list(ref.bins.categories), cat, index), size)] += p
        elif self.kind == "discrete":
            edges = list(ref.bins.edges)
            support = np.arange(0, int(self.dist.ppf(1 - 1e-15)) + 2)
            for v, p in zip(support, self.dist.pmf(support), strict=True):
                out[_slot(numeric_bin(edges, float(v)), size)] += p
        else:
            edges = np.asarray(ref.bins.edges)
            cdf = self.dist.cdf(edges)
            out[:size] = np.diff(cdf) if size == len(edges) - 1 else [cdf[-1] - cdf[0]]
            out[size], out[size + 1] = cdf[0], 1.0 - cdf[-1]
        out = np.clip(out, 0.0, None) * (1.0 - self.missing)
        out[-1] += self.missing
        return out / out.sum()


def _slot(index: int, size: int) -> int:
    return index if index >= 0 else {-1: size, -2: size + 1, -4: size + 2, -3: size + 3}[index]


FEATURES = [
    Feature("normal", "continuous", stats.norm()),
    Feature("uniform", "continuous", stats.uniform()),
    Feature("exponential", "continuous", stats.expon()),
    Feature("skewed", "continuous", stats.lognorm(1.0), missing=0.02),
    Feature("count", "discrete", stats.poisson(3.0)),
    Feature("geometric", "discrete", stats.geom(0.3, loc=-1)),
    Feature("plan", "categorical", levels=4, probs=np.array([0.4, 0.3, 0.2, 0.1])),
    Feature("city", "categorical", levels=20, probs=zipf(20), missing=0.03),
    Feature("product", "categorical", levels=200, probs=zipf(200)),
    Feature("user", "categorical", levels=1000, probs=zipf(1000)),
    Feature("__prediction__", "categorical", levels=2, probs=np.array([0.7, 0.3])),
]


def build_references(rng: np.random.Generator, rows: int, features: list[Feature] = FEATURES
                     ) -> tuple[dict[str, Reference], dict[str, np.ndarray]]:
    raw = {f.name: f.sample(rng, rows) for f in features}
    return {f.name: f.reference(raw[f.name]) for f in features}, raw


def device_counts(ref: Reference, values: np.ndarray) -> list[int]:
    acc = CountAccumulator(ref.bins)
    add_values(acc, list(values))
    return acc.freeze().vector()


# --- stationary month ----------------------------------------------------------------------------------------

def month_of_counts(rng: np.random.Generator, probs: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    return np.stack([rng.multinomial(int(n), probs) for n in sizes]) if len(np.unique(sizes)) > 1 \
        else rng.multinomial(int(sizes[0]), probs, size=len(sizes))


def stationary_stream(rng: np.random.Generator, rows: int, window: int | None, thresholds: DriftThresholds,
                      chunk: int = 3600) -> int:
    """False episodes in 30 days of one stream (fresh reference of ``rows``); ``window`` None: a mix."""
    refs, _ = build_references(rng, rows)
    probs = {f.name: f.bin_probs(refs[f.name]) for f in FEATURES}
    vectors = {name: ref.counts.vector() for name, ref in refs.items()}
    numeric = {f.name for f in FEATURES if f.numeric}
    sizes = np.full(MONTH, window) if window else np.exp(rng.uniform(np.log(100), np.log(10_000), MONTH)).astype(int)
    state, episodes, carry = EpisodeState(), 0, thresholds.recent_windows - 1
    tail: dict[str, np.ndarray] = {}
    for start in range(0, MONTH, chunk):
        part = sizes[start:start + chunk]
        counts = {}
        for name, p in probs.items():
            fresh = month_of_counts(rng, p, part)
            counts[name] = np.vstack([tail[name], fresh]) if name in tail else fresh
            tail[name] = counts[name][-carry:] if carry else counts[name][:0]
        checks = judge(vectors, counts, thresholds, numeric)
        skip = len(counts[FEATURES[0].name]) - len(part)
        episodes += len(step(state, checks.rejected[skip:], checks.recovered[skip:], thresholds.recovery_windows))
    return episodes


def device_rule_check(rng: np.random.Generator) -> float:
    """Smallest p-value of a goodness-of-fit test of real device counts (add_values on raw rows) against the
    exact bin probabilities the month simulation draws from; a large value means the two agree."""
    refs, _ = build_references(rng, 1000)
    worst = 1.0
    for f in FEATURES:
        probs = f.bin_probs(refs[f.name])
        counts = np.array(device_counts(refs[f.name], f.sample(rng, 200_000)), dtype=float)
        keep = probs * counts.sum() >= 5
        expected = np.append(probs[keep], probs[~keep].sum()) * counts.sum()
        observed = np.append(counts[keep], counts[~keep].sum())
        if expected[-1] < 5:
            expected, observed = expected[:-1], observed[:-1]
        worst = min(worst, float(stats.chisquare(observed, expected * observed.sum() / expected.sum()).pvalue))
    return worst


# --- the textbook baseline -----------------------------------------------------------------------------------

def baseline_flags(refs: dict[str, Reference], raw_ref: dict[str, np.ndarray], window: dict[str, np.ndarray]
                   ) -> bool:
    """KS (numeric) / chi-square (categorical) per series on one window, Bonferroni over the series."""
    level = ALPHA_BASELINE / len(FEATURES)
    for f in FEATURES:
        if f.numeric:
            a, b = raw_ref[f.name].astype(float), window[f.name].astype(float)
            p = stats.ks_2samp(a[~np.isnan(a)], b[~np.isnan(b)]).pvalue
        else:
            table = np.array([refs[f.name].counts.vector(), device_counts(refs[f.name], window[f.name])])
            table = table[:, table.sum(axis=0) > 0]
            p = stats.chi2_contingency(table, correction=False).pvalue if table.shape[1] > 1 else 1.0
        if p < level:
            return True
    return False


def baseline_false_alarms(rng: np.random.Generator, rows: int, window: int, windows: int) -> float:
    refs, raw = build_references(rng, rows)
    flagged = sum(baseline_flags(refs, raw, {f.name: f.sample(rng, window) for f in FEATURES})
                  for _ in range(windows))
    return flagged / windows * MONTH


# --- detection ---------------------------------------------------------------------------------------------

Shift = Callable[[np.random.Generator, int], np.ndarray]


def shifted(feature: str, make: Shift) -> Callable[[Feature, np.random.Generator, int], np.ndarray]:
    def sample(f: Feature, rng: np.random.Generator, n: int) -> np.ndarray:
        return make(rng, n) if f.name == feature else f.sample(rng, n)
    return sample


SCENARIOS: list[tuple[str, int, int, str, Callable[[Feature, np.random.Generator, int], np.ndarray], float]] = [
    ("0.5 σ mean shift, windows of 500", 500, 3, "≥ 95 % within 3 windows",
     shifted("normal", lambda rng, n: rng.normal(0.5, 1.0, n)), 0.95),
    ("0.5 σ mean shift, windows of 100", 100, 3, "≥ 80 % within 3 windows",
     shifted("normal", lambda rng, n: rng.normal(0.5, 1.0, n)), 0.80),
    ("variance × 1.5, windows of 500", 500, 3, "≥ 80 % within 3 windows",
     shifted("normal", lambda rng, n: rng.normal(0.0, np.sqrt(1.5), n)), 0.80),
    ("10-point categorical move, windows of 500", 500, 3, "≥ 80 % within 3 windows",
     shifted("plan", lambda rng, n: rng.choice(np.array(["plan-0", "plan-1", "plan-2", "plan-3"], dtype=object), n,
                                               p=[0.3, 0.3, 0.2, 0.2])), 0.80),
    ("1 σ mean shift, one window of 100", 100, 1, "≥ 95 % in the first window",
     shifted("normal", lambda rng, n: rng.normal(1.0, 1.0, n)), 0.95),
]


def detection(rng: np.random.Generator, streams: int, thresholds: DriftThresholds, before: int = 10
              ) -> list[tuple[str, str, float, float, float, float, bool]]:
    rows = []
    numeric = {f.name for f in FEATURES if f.numeric}
    for label, size, within, target, sample, goal in SCENARIOS:
        ours = base = early = base_early = 0
        for _ in range(streams):
            refs, raw = build_references(rng, 5000)
            vectors = {name: ref.counts.vector() for name, ref in refs.items()}
            windows = [{f.name: f.sample(rng, size) for f in FEATURES} for _ in range(before)]
            windows += [{f.name: sample(f, rng, size) for f in FEATURES} for _ in range(within)]
            counts = {name: np.array([device_counts(refs[name], w[name]) for w in windows]) for name in refs}
            checks = judge(vectors, counts, thresholds, numeric)
            opened = step(EpisodeState(), checks.rejected, checks.recovered, thresholds.recovery_windows)
            early += any(t < before for t in opened)
            ours += any(before <= t < before + within for t in opened)
            base += any(baseline_flags(refs, raw, w) for w in windows[before:])
            base_early += any(baseline_flags(refs, raw, w) for w in windows[before - within:before])
        rate, base_rate = ours / streams, base / streams
        rows.append((label, target, rate, base_rate, early / streams, base_early / streams, rate >= goal))
    return rows


# --- delay through the real monitor ---------------------------------------------------------------------------

def monitor_delay(rng: np.random.Generator, streams: int, period_min: int = 15) -> list[float]:
    """Minutes from the end of the first shifted window to the monitor run that emits the drift event."""
    from edge_agent.protocol import TelemetryWindow
    from edgeops.telemetry.monitor import episode_events, run_monitor
    from edgeops.telemetry.store import TelemetryStore

    delays = []
    for s in range(streams):
        refs, _ = build_references(rng, 5000)
        manifest = _manifest(refs)
        with tempfile.TemporaryDirectory() as tmp:
            store = TelemetryStore(f"sqlite:///{tmp}/t.db")
            t0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=3)
            shift_at = 45 + int(rng.integers(0, period_min))
            emitted = None
            for minute in range(0, 150):
                end = t0 + timedelta(minutes=minute + 1) - timedelta(seconds=1)
                move = minute >= shift_at
                values = {f.name: (rng.normal(0.5, 1.0, 500) if move and f.name == "normal" else f.sample(rng, 500))
                          for f in FEATURES}
                counts = {name: device_counts(refs[name], values[name]) for name in refs}
                store.write([TelemetryWindow(
                    device="dev", seq=minute, model="bench", version=1, start=(end - timedelta(seconds=59)).isoformat(),
                    end=end.isoformat(), count=500, errors={}, latency_ms={"p95": 1.0},
                    features={n: _counts(c) for n, c in counts.items() if n != "__prediction__"},
                    predictions=_counts(counts["__prediction__"]), feedback={})])
                now = t0 + timedelta(minutes=minute + 1)
                if (minute + 1) % period_min == 0:
                    report = run_monitor(store, manifest.lookup, now=now, per_device=True)
                    events = [e for e in episode_events(store, report) if e.event == "edgeops.drift.detected"
                              and e.resource["prefect.resource.id"] == "edgeops.device.dev"]
                    if events and minute >= shift_at:
                        emitted = now
                        break
                    if events:
                        break       # a false alarm before the shift: counted as a miss
            store.close()
        first_end = t0 + timedelta(minutes=shift_at + 1)
        delays.append((emitted - first_end).total_seconds() / 60 if emitted else float("inf"))
        del s
    return delays


def _counts(vec: list[int]) -> Any:
    from edge_agent.protocol import Counts

    return Counts(tuple(vec[:-4]), *vec[-4:])


class _Manifest:
    """A stand-in with what run_monitor reads of a release manifest: its name, version, task, test metrics,
    reference bins, and no calibration table (no performance estimate)."""

    def __init__(self, refs: dict[str, Reference]) -> None:
        from types import SimpleNamespace

        self.name, self.version = "bench", 1
        self.outputs, self.metrics, self.calibration = SimpleNamespace(task="classification"), {}, None
        self.reference = {n: r for n, r in refs.items() if n != "__prediction__"}
        self.prediction_reference = refs["__prediction__"]

    def lookup(self, model: str, version: int) -> Any:
        return self if (model, version) == (self.name, self.version) else None


def _manifest(refs: dict[str, Reference]) -> _Manifest:
    return _Manifest(refs)


# --- main ----------------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=1, help="stationary months per (window, reference) size")
    parser.add_argument("--detect", type=int, default=60, help="streams per detection scenario")
    parser.add_argument("--delay", type=int, default=8, help="streams through the real monitor")
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="ks_2samp: Exact calculation unsuccessful")
    rng = np.random.default_rng(args.seed)
    thresholds = DriftThresholds()
    started = time.perf_counter()
    print(f"settings: {thresholds.describe(len(FEATURES))}")
    print(f"device binning check (add_values on 200k rows vs the exact bin law): min p = {device_rule_check(rng):.3f}")

    episodes, months, per_combo, worst = 0, 0, [], 0.0
    for rows in (100, 1000, 10_000):
        for window in (100, 1000, 10_000, None):
            found = sum(stationary_stream(rng, rows, window, thresholds) for _ in range(args.streams))
            episodes, months = episodes + found, months + args.streams
            per_combo.append(f"R={rows} n={window or 'mix'}: {found}/{args.streams}")
            worst = max(worst, found / args.streams)
    base_rate = np.mean([baseline_false_alarms(rng, rows, window, 25) for rows in (100, 10_000)
                         for window in (100, 10_000)])
    print("stationary months, false episodes per stream:", "; ".join(per_combo))

    rows = detection(rng, args.detect, thresholds)
    delays = monitor_delay(rng, args.delay)
    limit = 3 + 15
    finite = [d for d in delays if np.isfinite(d)]

    table = [("measure", "target", "edgeops", "textbook baseline", "met"),
             ("stationary, 10 features + prediction, windows 100-10,000, reference 100-10,000 rows",
              "≤ 1 false episode / 30 days", f"{episodes / months:.2f} / 30 days ({episodes} in {months} months; "
              f"worst size: {worst:.2f})",
              f"{base_rate:.0f} flagged windows / 30 days ({base_rate / MONTH:.0%} of windows)",
              "yes" if worst <= 1 else "NO")]
    for label, target, rate, base, early, base_early, ok in rows:
        table.append((label, target, f"{rate:.0%} (unshifted streams: {early:.0%} flagged in 10 windows)",
                      f"{base:.0%} (unshifted: {base_early:.0%} flagged in as many windows)", "yes" if ok else "NO"))
    table.append(("delay first shifted window → edgeops.drift.detected (monitor every 15 min, 1-min windows "
                  "of 500, 0.5 σ)", f"≤ 3 windows + 15 min = {limit} min",
                  f"median {np.median(delays):.0f} min, max {max(delays):.0f} min ({len(finite)}/{len(delays)} found)",
                  "–", "yes" if max(delays) <= limit else "NO"))
    widths = [max(len(str(r[i])) for r in table) for i in range(5)]
    for i, r in enumerate(table):
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    print(f"({time.perf_counter() - started:.0f} s; --streams {args.streams} --detect {args.detect} "
          f"--delay {args.delay} --seed {args.seed})")


if __name__ == "__main__":
    main()

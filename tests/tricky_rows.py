"""Rows for the telemetry equivalence tests (the recorder alone, and a real agent): every kind of value the
batch and single-row paths must count alike, on a release built by tests/releases.py."""

import math
import random
from typing import Any


def tricky_rows(manifest: Any, n: int, seed: int) -> list[dict[str, Any]]:
    """Rows the model accepts, with every kind of value telemetry tells apart: each bin, both edges, below and
    above the edges, missing (null and NaN), ints and floats, unseen and missing categories."""
    rng = random.Random(seed)
    edges = manifest.reference["age in years"].bins.edges
    income = manifest.reference["income"].bins.edges

    def age() -> Any:
        return rng.choice([None, math.nan, edges[0], edges[-1], edges[0] - 1, edges[-1] + 1e6, 40, -3,
                           rng.uniform(edges[0], edges[-1]), 10**30, -(10**30), 3.0e38])

    return [{"age in years": age(), "income": rng.choice([income[0], income[-1] * 10, 7, rng.uniform(0, 9), -1e9]),
             "plan": rng.choice([None, "pro", "basic", "max", "gold", "", "ünïcode"]), "extra": rng.random()}
            for _ in range(n)]

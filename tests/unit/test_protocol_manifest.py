import math
import random

import pytest
from manifests import fake_manifest

from edge_agent.protocol import (
    MISSING,
    OVERFLOW,
    UNDERFLOW,
    UNSEEN,
    CategoricalBins,
    CountAccumulator,
    Counts,
    GoldenSamples,
    ProtocolError,
    ReleaseManifest,
    Signature,
    categorical_bin,
    numeric_bin,
    parse_manifest,
)

pytestmark = pytest.mark.unit


def make_manifest(**changes: object) -> ReleaseManifest:
    fields: dict[str, object] = {"name": "churn", "version": 3, **changes}
    return fake_manifest(onnx=b"onnx-bytes" * 10, chunk_size=64, **fields)  # type: ignore[arg-type]


def test_manifest_round_trips_and_signature_covers_everything_else() -> None:
    manifest = make_manifest().with_signature(Signature(key_id="ab" * 8, value=b"\x01" * 64))
    parsed = parse_manifest(manifest.to_bytes())
    assert parsed == manifest
    assert parsed.signing_bytes() == make_manifest().signing_bytes()
    assert b"signature" not in manifest.signing_bytes()
    assert make_manifest(metrics={"accuracy": 0.92}).signing_bytes() != manifest.signing_bytes()


def test_manifest_rejects_inconsistent_parts() -> None:
    with pytest.raises(ProtocolError, match="golden"):
        make_manifest(golden=GoldenSamples(inputs={"monthly charges": [1.0]}, tolerance=1e-5, labels=[0],
                                           probabilities=[[1.0, 0.0]]))
    with pytest.raises(ProtocolError, match="name"):
        make_manifest(name="../x")
    obj = make_manifest().to_json()
    obj["artifact"]["chunk_sha256"] = obj["artifact"]["chunk_sha256"][:1]
    with pytest.raises(ProtocolError, match="chunk_sha256"):
        parse_manifest(__import__("json").dumps(obj))


def test_numeric_bin_rule_is_closed_on_the_last_edge() -> None:
    edges = [0.0, 1.0, 2.0]
    assert [numeric_bin(edges, v) for v in (-0.1, 0.0, 0.5, 1.0, 2.0, 2.1)] == [UNDERFLOW, 0, 0, 1, 1, OVERFLOW]
    assert numeric_bin(edges, None) == MISSING and numeric_bin(edges, math.nan) == MISSING
    assert numeric_bin([5.0], 5.0) == 0 and numeric_bin([5.0], 5.1) == OVERFLOW


def test_every_training_value_lands_in_a_bin() -> None:
    rng = random.Random(7)
    values = [rng.gauss(0, 1) for _ in range(500)]
    edges = sorted({min(values), *(sorted(values)[i * 50] for i in range(1, 10)), max(values)})
    assert all(numeric_bin(edges, v) >= 0 for v in values)


def test_accumulator_counts_out_of_bin_values_separately() -> None:
    acc = CountAccumulator(CategoricalBins(("a", "b")))
    for value in ["a", "a", "b", "zzz", None]:
        acc.add(value)
    assert acc.freeze() == Counts((2, 1), unseen=1, missing=1)
    assert categorical_bin(["a"], "q") == UNSEEN

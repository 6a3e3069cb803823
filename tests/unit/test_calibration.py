"""The calibration reference a release carries: measured on the holdout with the ONNX model's own outputs, equal
to a direct count row by row, signed with the rest of the manifest, refused when touched."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sklearn.datasets import load_diabetes, load_iris

from edge_agent.errors import VerificationError
from edge_agent.protocol import ErrorCalibration, Lineage, ScoreCalibration, numeric_bin, parse_manifest, score_bin
from edge_agent.verify import KeyRing, verify_manifest
from edgeops.config import load_config
from edgeops.release.signing import sign_manifest
from edgeops.train.export import ExportResult, build_manifest, export_model, run_onnx
from edgeops.train.training import TrainedModel, train_model

pytestmark = pytest.mark.unit


def exported(df: pd.DataFrame, target: str) -> tuple[TrainedModel, ExportResult]:
    cfg = load_config(None, {})
    trained = train_model(df, target, cfg)
    return trained, export_model(trained, cfg.export)


def iris() -> pd.DataFrame:
    df = load_iris(as_frame=True).frame
    df["target"] = np.array(["setosa", "versicolor", "virginica"])[df["target"]]
    return df


def test_a_classifier_calibration_is_the_holdout_counted_cell_by_cell() -> None:
    trained, result = exported(iris(), "target")
    cal = result.calibration
    assert isinstance(cal, ScoreCalibration) and cal.classes == 3
    probabilities = np.asarray(run_onnx(result.onnx_bytes, result.inputs, trained.X_test)[1], dtype=float)
    truth = [trained.classes.index(y) for y in trained.y_test]   # type: ignore[union-attr]
    shape = (3, cal.bins)
    rows = {"predicted": np.zeros(shape, int), "other": np.zeros(shape, int)}
    hits = {"predicted": np.zeros(shape, int), "other": np.zeros(shape, int)}
    sums = {"predicted": np.zeros(shape), "other": np.zeros(shape)}
    for row, y in zip(probabilities, truth, strict=True):
        top = int(np.argmax(row))
        for c, p in enumerate(row):
            side, b = ("predicted" if c == top else "other"), score_bin(float(p), cal.bins)
            rows[side][c, b] += 1
            hits[side][c, b] += c == y
            sums[side][c, b] += p
    for side, cells in (("predicted", cal.predicted), ("other", cal.other)):
        assert np.array_equal(cells.rows, rows[side]) and np.array_equal(cells.hits, hits[side])
        filled = rows[side] > 0
        assert np.allclose(np.asarray(cells.mean)[filled], (sums[side] / np.maximum(rows[side], 1))[filled],
                           rtol=1e-5)
    assert int(np.sum(cal.predicted.rows)) == len(trained.X_test)


def test_a_regressor_calibration_is_the_holdout_error_per_prediction_bin() -> None:
    df = load_diabetes(as_frame=True).frame
    trained, result = exported(df, "target")
    cal = result.calibration
    assert isinstance(cal, ErrorCalibration)
    edges = list(result.prediction_reference.bins.edges)   # type: ignore[union-attr]
    values = np.asarray(run_onnx(result.onnx_bytes, result.inputs, trained.X_test)[0], dtype=float).reshape(-1)
    errors = np.abs(trained.y_test.to_numpy(dtype=float) - values)
    size = result.prediction_reference.bins.size
    where = [numeric_bin(edges, float(v)) for v in values]
    where = [size if b == -1 else size + 1 if b == -2 else b for b in where]
    for b in range(size + 2):
        mine = errors[np.asarray(where) == b]
        assert cal.rows[b] == len(mine)
        if len(mine):
            assert cal.mean[b] == pytest.approx(mine.mean(), rel=1e-5)
            assert cal.sd[b] == pytest.approx(mine.std(), rel=1e-4, abs=1e-6)


def test_the_calibration_is_signed_with_the_manifest_and_refused_when_touched() -> None:
    trained, result = exported(iris(), "target")
    key = Ed25519PrivateKey.generate()
    manifest = sign_manifest(build_manifest("iris", 1, result, Lineage("a" * 64, "b" * 64), trained.metrics, 4096),
                             key)
    payload = manifest.to_bytes()
    parsed = parse_manifest(payload)
    assert parsed.calibration == result.calibration
    keyring = KeyRing.from_public_keys([key.public_key()])
    verify_manifest(parsed, keyring, payload)
    obj = json.loads(payload)
    obj["calibration"]["predicted"]["hits"][0][-1] -= 1   # one hit fewer: the estimate would move
    touched = json.dumps(obj).encode()
    with pytest.raises(VerificationError):
        verify_manifest(parse_manifest(touched), keyring, touched)


def test_a_release_without_a_holdout_or_with_too_many_classes_has_no_score_calibration() -> None:
    from edgeops.train.calibration import score_calibration

    probabilities = np.full((4, 65), 1 / 65)
    assert score_calibration(probabilities, np.zeros(4, dtype=int)) is None
    trained, result = exported(iris(), "target")
    manifest = build_manifest("iris", 1, dataclasses.replace(result, calibration=None),
                              Lineage("a" * 64, "b" * 64), trained.metrics, 4096)
    assert parse_manifest(manifest.to_bytes()).calibration is None

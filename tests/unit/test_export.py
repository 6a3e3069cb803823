"""Export: every model is run through onnxruntime here (with the test's own feeding code, as a device would) and
compared with scikit-learn; plus parity gate, golden samples, reference bins against the protocol's rule, and
the manifest."""

import itertools
import math
import re
from collections.abc import Callable

import google.protobuf
import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
from sklearn.datasets import load_diabetes, load_iris

from edge_agent.protocol import Lineage, numeric_bin, parse_manifest, sha256_hex
from edgeops.config import ExportConfig, ProjectConfig, load_config
from edgeops.errors import ExportError, ParityError, one_line
from edgeops.train.export import (
    ExportResult,
    build_manifest,
    convert,
    export_model,
    input_specs,
    model_opset,
    safe_input_names,
)
from edgeops.train.reference import categorical_reference, numeric_bin_indices, numeric_counts, quantile_edges
from edgeops.train.training import TrainedModel, train_model

pytestmark = pytest.mark.unit

ODD = ["engine temp (°C)", "site/zone", "v1.2 score", "naïve count", "operator name"]
SAFE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def binary_frame(n: int = 300) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    temp = rng.normal(80, 10, n)
    zone = rng.choice(["north", "south", "east"], n).astype(object)
    score = rng.uniform(0, 1, n)
    operator = rng.choice(["ana", "bo", "chen", "dé"], n).astype(object)
    logit = 0.15 * (temp - 80) + np.where(zone == "north", 1.5, -0.5) + 2 * (score - 0.5)
    label = np.where(logit + rng.normal(0, 0.5, n) > 0, "fail", "ok")
    zone[rng.random(n) < 0.1] = None
    operator[rng.random(n) < 0.05] = None
    temp[rng.random(n) < 0.05] = np.nan
    return pd.DataFrame({ODD[0]: temp, ODD[1]: zone, ODD[2]: score, ODD[3]: rng.integers(0, 9, n).astype(float),
                         ODD[4]: operator, "status": label})


def iris_frame() -> pd.DataFrame:
    df = load_iris(as_frame=True).frame
    df.columns = ["sepal.length", "sepal width", "petal/length", "petal width", "species"]
    df["batch"] = np.random.default_rng(1).choice(["a", "b", None], len(df))
    return df


def diabetes_frame() -> pd.DataFrame:
    df = load_diabetes(as_frame=True).frame.iloc[:300].copy()
    df["sex"] = np.where(df["sex"] > 0, "m", "f")
    return df


def trained_and_exported(df: pd.DataFrame, target: str, **overrides: object) -> tuple[TrainedModel, ExportResult]:
    cfg = load_config(None, overrides)
    trained = train_model(df, target, cfg)
    return trained, export_model(trained, cfg.export)


def device_run(result: ExportResult, rows: dict[str, list]) -> list[np.ndarray]:
    """Feed raw values the way a device does: by InputSpec, missing text as the token, numbers as float32."""
    feeds = {}
    for spec in result.inputs:
        values = rows[spec.column]
        if spec.dtype == "float32":
            arr = np.array([np.nan if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in values],
                           dtype=np.float32)
        else:
            arr = np.array([spec.missing_token if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
                            for v in values], dtype=object)
        feeds[spec.name] = arr.reshape(-1, 1)
    session = ort.InferenceSession(result.onnx_bytes, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def raw_rows(df: pd.DataFrame, columns: list[str]) -> dict[str, list]:
    return {c: [None if pd.isna(v) else v for v in df[c].tolist()] for c in columns}


@pytest.fixture(scope="module")
def binary() -> tuple[TrainedModel, ExportResult]:
    return trained_and_exported(binary_frame(), "status")


def test_safe_input_names_are_distinct_and_safe() -> None:
    columns = ["a b", "a/b", "a.b", "A_B", "", "名前", "2nd", "x" * 200, "label", "probabilities"]
    names = safe_input_names(columns)
    assert list(names) == columns
    assert all(SAFE.match(n) for n in names.values())
    assert len({n.lower() for n in names.values()}) == len(columns)
    assert names["a b"] == "in_a_b" and names["a/b"] == "in_a_b_2" and names["a.b"] == "in_a_b_3"
    assert names["label"] != "label" and len(names["x" * 200]) <= 51
    assert safe_input_names(columns) == names  # deterministic


def test_binary_onnx_matches_sklearn_row_by_row(binary: tuple[TrainedModel, ExportResult]) -> None:
    trained, result = binary
    holdout = binary_frame().loc[trained.X_test.index]
    label, proba = device_run(result, raw_rows(holdout, trained.feature_columns))
    expected = trained.pipeline.predict_proba(trained.X_test)
    np.testing.assert_allclose(proba, expected, atol=1e-5)
    assert list(np.asarray(label).reshape(-1)) == list(trained.pipeline.predict(trained.X_test))
    assert result.parity.passed and result.parity.label_agreement == 1.0 and result.parity.rows == 75
    assert result.parity.max_abs_diff < 1e-5


def test_binary_inputs_outputs_and_unseen_categories(binary: tuple[TrainedModel, ExportResult]) -> None:
    trained, result = binary
    assert [s.column for s in result.inputs] == ODD
    assert all(SAFE.match(s.name) for s in result.inputs)
    by_col = {s.column: s for s in result.inputs}
    assert by_col[ODD[0]].dtype == "float32" and by_col[ODD[0]].minimum is not None
    assert by_col[ODD[1]].dtype == "string" and by_col[ODD[1]].categories == ("east", "north", "south")
    assert by_col[ODD[1]].missing_token == "__missing__"
    assert result.outputs.task == "binary" and result.outputs.classes == ("fail", "ok")
    # a category never seen in training: ONNX ignores it exactly like scikit-learn does
    rows = raw_rows(binary_frame().head(5).assign(**{ODD[1]: "west", ODD[4]: "zoë"}), trained.feature_columns)
    _, proba = device_run(result, rows)
    expected = trained.pipeline.predict_proba(trained.prepare(pd.DataFrame(rows)))
    np.testing.assert_allclose(proba, expected, atol=1e-5)


def test_multiclass_hist_gradient_boosting_with_text_column() -> None:
    df = iris_frame()
    trained, result = trained_and_exported(df, "species", **{
        "model.estimator": "sklearn.ensemble.HistGradientBoostingClassifier", "model.params.max_iter": 30})
    label, proba = device_run(result, raw_rows(df.loc[trained.X_test.index], trained.feature_columns))
    np.testing.assert_allclose(proba, trained.pipeline.predict_proba(trained.X_test), atol=1e-5)
    assert list(np.asarray(label).reshape(-1)) == list(trained.pipeline.predict(trained.X_test))
    assert result.outputs.classes == (0, 1, 2) and result.parity.label_agreement == 1.0
    assert result.prediction_reference.bins.categories == ("0", "1", "2")  # classes as str()


@pytest.mark.parametrize(("estimator", "params"), [(None, {}),
                                                   ("sklearn.ensemble.RandomForestRegressor", {"n_estimators": 10})])
def test_regression_onnx_matches_sklearn(estimator: str | None, params: dict) -> None:
    df = diabetes_frame()
    trained, result = trained_and_exported(df, "target", **{"model.estimator": estimator, "model.params": params})
    (value,) = device_run(result, raw_rows(df.loc[trained.X_test.index], trained.feature_columns))
    expected = trained.pipeline.predict(trained.X_test)
    np.testing.assert_allclose(np.asarray(value).reshape(-1), expected, rtol=1e-5, atol=1e-3)
    assert result.outputs.task == "regression" and result.outputs.value
    assert result.parity.label_agreement is None and result.parity.passed
    span = trained.y_train.max() - trained.y_train.min()
    assert result.parity.tolerance == pytest.approx(1e-4 * span)  # documented: scaled by the target range
    assert result.prediction_reference.bins.kind == "numeric"


def test_hist_gradient_boosting_converts_with_protobuf_below_7() -> None:
    """skl2onnx 1.20 + protobuf 7 fails converting HistGradientBoosting with "Field onnx.AttributeProto.ints:
    Expected an int, got a boolean" (~850 KB of error text). pyproject pins protobuf<7; if this test fails on
    the version assert, someone lifted the pin: restore it (or check that skl2onnx has fixed the bug)."""
    major = int(google.protobuf.__version__.split(".")[0])
    assert major < 7, (f"protobuf {google.protobuf.__version__} breaks skl2onnx's HistGradientBoosting "
                       "converter; keep protobuf<7 in pyproject.toml")
    trained = train_model(binary_frame(), "status", load_config(None, {
        "model.estimator": "sklearn.ensemble.HistGradientBoostingClassifier", "model.params.max_iter": 10}))
    specs = input_specs(trained)
    model = convert(trained, specs, None)
    assert any(n.op_type.startswith("TreeEnsemble") for n in model.graph.node)
    feeds = {s.name: (trained.X_test[s.column].to_numpy(dtype=np.float32) if s.dtype == "float32"
                      else trained.X_test[s.column].to_numpy(dtype=object)).reshape(-1, 1) for s in specs}
    _, proba = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    np.testing.assert_allclose(proba, trained.pipeline.predict_proba(trained.X_test), atol=1e-5)


def test_converter_errors_become_one_short_line() -> None:
    huge = "Field onnx.AttributeProto.ints: Expected an int, got a boolean.\n" + "ints: true\n" * 80_000
    message = str(ExportError(f"skl2onnx cannot convert X: {one_line(huge, 200)}"))
    assert "\n" not in message and len(message) <= 300 and message.endswith("…")
    df = binary_frame()[[ODD[0], ODD[2], "status"]]
    with pytest.raises(ExportError) as info:
        trained_and_exported(df, "status", **{"model.estimator": "sklearn.neighbors.NearestCentroid"})
    assert str(info.value).startswith("skl2onnx cannot convert sklearn.neighbors.NearestCentroid")
    assert "\n" not in str(info.value) and len(str(info.value)) <= 300


def test_parity_outside_the_tolerance_is_a_parity_error() -> None:
    df = diabetes_frame()
    with pytest.raises(ParityError) as info:
        trained_and_exported(df, "target", **{"export.parity_tolerance": 1e-15})
    assert "disagree on the holdout" in str(info.value)
    assert info.value.parity is not None and not info.value.parity.passed


def test_golden_samples_replay_on_the_device(binary: tuple[TrainedModel, ExportResult]) -> None:
    _, result = binary
    golden = result.golden
    assert golden.rows == 20 and set(golden.inputs) == set(ODD)
    assert all(v is None or isinstance(v, str) for v in golden.inputs[ODD[1]])
    assert golden.tolerance >= 1e-5
    label, proba = device_run(result, golden.inputs)
    assert list(np.asarray(label).reshape(-1)) == golden.labels
    assert np.abs(np.asarray(proba) - np.asarray(golden.probabilities)).max() <= golden.tolerance


def test_golden_samples_carry_missing_values_as_none() -> None:
    df = binary_frame()
    df.loc[df.index[::3], ODD[4]] = None
    _, result = trained_and_exported(df, "status", **{"export.golden_rows": 30})
    assert None in result.golden.inputs[ODD[4]]
    assert "__missing__" not in result.golden.inputs[ODD[4]]
    label, _ = device_run(result, result.golden.inputs)
    assert list(np.asarray(label).reshape(-1)) == result.golden.labels


def test_vectorised_binning_equals_the_protocol_rule() -> None:
    rng = np.random.default_rng(3)
    for bins in (1, 2, 5, 10, 17):
        train = np.round(rng.normal(0, 3, 400), 1)  # ties on purpose
        edges = quantile_edges(train, bins)
        assert all(b > a for a, b in itertools.pairwise(edges))
        probe = np.concatenate([rng.normal(0, 5, 300), np.array(edges), [np.nan, -1e9, 1e9, edges[0] - 1e-9]])
        got = numeric_bin_indices(edges, probe)
        want = [numeric_bin(list(edges), None if math.isnan(v) else float(v)) for v in probe]
        assert got.tolist() == want
    single = quantile_edges(np.array([2.5, 2.5, np.nan]), 10)
    assert single == (2.5,)
    probe = np.array([2.5, 2.4, 2.6, np.nan])
    assert numeric_bin_indices(single, probe).tolist() == [numeric_bin([2.5], v) for v in [2.5, 2.4, 2.6, None]]


def test_counts_follow_the_bins() -> None:
    values = np.array([0.0, 1.0, 2.0, 3.0, 4.0, np.nan, -1.0, 9.0])
    counts = numeric_counts((0.0, 2.0, 4.0), values)
    assert counts.counts == (2, 3) and counts.underflow == 1 and counts.overflow == 1 and counts.missing == 1
    ref = categorical_reference(pd.Series(["a", "b", "a", None, "__missing__", "c"]), "__missing__",
                                categories=["a", "b"])
    assert ref.bins.categories == ("a", "b")
    assert ref.counts.counts == (2, 1) and ref.counts.missing == 2 and ref.counts.unseen == 1


def test_feature_and_prediction_references(binary: tuple[TrainedModel, ExportResult]) -> None:
    trained, result = binary
    n = len(trained.X_train)
    assert set(result.reference) == set(ODD)
    assert all(ref.counts.total == n for ref in result.reference.values())
    temp = result.reference[ODD[0]]
    assert temp.bins.kind == "numeric" and temp.bins.size <= 10 and temp.counts.missing > 0
    zone = result.reference[ODD[1]]
    assert set(zone.bins.categories) == {"north", "south", "east"}
    assert zone.counts.missing == int((trained.X_train[ODD[1]] == "__missing__").sum())
    pred = result.prediction_reference
    assert pred.bins.categories == ("fail", "ok") and pred.counts.total == n


def test_manifest_hashes_chunks_opset_and_round_trip(binary: tuple[TrainedModel, ExportResult]) -> None:
    trained, result = binary
    lineage = Lineage(data_sha256="a" * 64, config_sha256="b" * 64, code_revision="abc123")
    manifest = build_manifest("pump-failure", 3, result, lineage, trained.metrics, chunk_size=1000,
                              created="2026-01-01T00:00:00.000Z")
    data = result.onnx_bytes
    assert manifest.artifact.sha256 == sha256_hex(data) and manifest.artifact.size == len(data)
    assert manifest.artifact.chunks == math.ceil(len(data) / 1000)
    assert manifest.artifact.chunk_sha256[-1] == sha256_hex(data[(manifest.artifact.chunks - 1) * 1000:])
    assert manifest.artifact.opset == result.opset == model_opset(onnx.load_from_string(data))
    assert manifest.signature is None and manifest.metrics == trained.metrics
    assert parse_manifest(manifest.to_bytes()) == manifest
    assert manifest.input_spec(ODD[1]).name == safe_input_names(ODD)[ODD[1]]


def test_export_config_defaults_are_used() -> None:
    assert ProjectConfig().export == ExportConfig()
    assert ExportConfig().golden_rows == 20 and ExportConfig().numeric_bins == 10


def test_random_forest_ties_are_not_label_disagreements() -> None:
    """An even number of trees voting 50/50: sklearn and ONNX may pick different labels by float rounding."""
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"x": rng.normal(size=400), "z": rng.normal(size=400), "y": rng.choice(["a", "b"], 400)})
    trained, result = trained_and_exported(df, "y", **{"model.estimator": "sklearn.ensemble.RandomForestClassifier",
                                                        "model.params.n_estimators": 4})
    expected = trained.pipeline.predict_proba(trained.X_test)
    assert (np.abs(expected[:, 0] - 0.5) < 1e-9).sum() > 10  # the data does produce ties
    label, proba = device_run(result, raw_rows(df.loc[trained.X_test.index], ["x", "z"]))
    np.testing.assert_allclose(proba, expected, atol=1e-5)
    decided = np.abs(expected[:, 0] - 0.5) > 1e-3
    assert list(np.asarray(label)[decided]) == list(trained.pipeline.predict(trained.X_test)[decided])
    assert result.parity.passed and result.parity.label_agreement == 1.0
    assert all(abs(p[0] - 0.5) > 1e-3 for p in result.golden.probabilities)  # ties never become golden rows
    golden_label, _ = device_run(result, result.golden.inputs)
    assert list(np.asarray(golden_label).reshape(-1)) == result.golden.labels


@pytest.mark.parametrize(("frame", "target", "estimator"), [
    (binary_frame, "status", None),
    (iris_frame, "species", "sklearn.ensemble.HistGradientBoostingClassifier"),
    (diabetes_frame, "target", "sklearn.ensemble.RandomForestRegressor"),
])
def test_the_agent_reproduces_the_golden_samples(frame: Callable[[], pd.DataFrame], target: str,
                                                  estimator: str | None) -> None:
    """The contract with the device: the agent's ModelRunner, fed the golden inputs from the parsed manifest,
    gives scikit-learn's labels exactly and its numbers within the golden tolerance."""
    from edge_agent.inference import ModelRunner

    params = {"RandomForestRegressor": {"n_estimators": 10}, "HistGradientBoostingClassifier": {"max_iter": 20}}.get(
        (estimator or "").rpartition(".")[2], {})
    trained, result = trained_and_exported(frame(), target, **{"model.estimator": estimator, "model.params": params})
    manifest = parse_manifest(build_manifest("golden-check", 1, result, Lineage("a" * 64, "b" * 64),
                                             trained.metrics, 4096).to_bytes())
    golden = manifest.golden
    records = [{col: golden.inputs[col][i] for col in golden.inputs} for i in range(golden.rows)]
    predictions = ModelRunner(manifest, result.onnx_bytes).predict_many(records)
    if trained.task == "regression":
        assert max(abs(p.value - v) for p, v in zip(predictions, golden.values, strict=True)) <= golden.tolerance
        return
    assert [p.label for p in predictions] == golden.labels
    for p, want in zip(predictions, golden.probabilities, strict=True):
        got = [p.probabilities[c] for c in manifest.outputs.classes]
        assert max(abs(a - b) for a, b in zip(got, want, strict=True)) <= golden.tolerance


def test_a_manifest_too_big_for_devices_is_an_export_error() -> None:
    rng = np.random.default_rng(0)
    n = 400
    df = pd.DataFrame({"x": rng.normal(size=n), "y": rng.choice(["a", "b"], n),
                       "serial number": [f"SN-{i:06d}-" + "x" * 3000 for i in range(n)]})
    trained, result = trained_and_exported(df, "y")
    with pytest.raises(ExportError) as info:
        build_manifest("big", 1, result, Lineage("a" * 64, "b" * 64), trained.metrics, 4096)
    assert "over the 1048576 a device accepts" in str(info.value)
    assert "'serial number' with 300 categories" in str(info.value)


def test_a_bad_model_name_is_an_export_error(binary: tuple[TrainedModel, ExportResult]) -> None:
    trained, result = binary
    with pytest.raises(ExportError, match="cannot build the release manifest: name"):
        build_manifest("no/slash", 1, result, Lineage("a" * 64, "b" * 64), trained.metrics, 4096)


def test_same_inputs_give_byte_identical_releases() -> None:
    """Reproducible releases: same data + config + seed → the same ONNX bytes and manifest bytes."""
    def release() -> bytes:
        trained, result = trained_and_exported(binary_frame(), "status")
        return build_manifest("same", 1, result, Lineage("a" * 64, "b" * 64), trained.metrics, 4096,
                              created="2026-01-01T00:00:00.000Z").to_bytes()

    assert release() == release()


@pytest.mark.parametrize(("estimator", "params"), [
    ("sklearn.tree.DecisionTreeClassifier", {"max_depth": 5}),
    ("sklearn.ensemble.ExtraTreesClassifier", {"n_estimators": 10}),
    ("sklearn.ensemble.GradientBoostingClassifier", {"n_estimators": 10}),
    ("sklearn.neighbors.KNeighborsClassifier", {}),
    ("sklearn.naive_bayes.GaussianNB", {}),
    ("sklearn.tree.DecisionTreeRegressor", {"max_depth": 5}),
    ("sklearn.ensemble.HistGradientBoostingRegressor", {"max_iter": 20}),
    ("sklearn.svm.SVR", {}),
])
def test_other_estimators_export_with_parity(estimator: str, params: dict) -> None:
    rng = np.random.default_rng(0)
    n = 200
    df = pd.DataFrame({"x 1": rng.normal(size=n), "x/2": rng.normal(size=n),
                       "kind.name": rng.choice(["a", "b", "c", None], n)})
    signal = df["x 1"] + np.where(df["kind.name"] == "a", 1.0, 0.0)
    df["y"] = signal + rng.normal(0, 0.3, n) if "Regressor" in estimator or "SVR" in estimator else \
        np.where(signal > 0.3, "hi", "lo")
    trained, result = trained_and_exported(df, "y", **{"model.estimator": estimator, "model.params": params})
    outputs = device_run(result, raw_rows(df.loc[trained.X_test.index], trained.feature_columns))
    if trained.task == "regression":
        np.testing.assert_allclose(np.asarray(outputs[0]).reshape(-1), trained.pipeline.predict(trained.X_test),
                                   rtol=1e-4, atol=1e-4)
    else:
        np.testing.assert_allclose(outputs[1], trained.pipeline.predict_proba(trained.X_test), atol=1e-5)
    assert result.parity.passed

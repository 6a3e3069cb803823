import dataclasses
import math

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from releases import build_release, new_key, trained, with_bytes

from edge_agent.errors import InputError, ModelError
from edge_agent.inference import ModelRunner
from edge_agent.protocol import InputSpec

pytestmark = pytest.mark.unit

ROW = {"age in years": 52.0, "income": 4.5, "plan": "pro"}


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return new_key()


@pytest.fixture(scope="module")
def classifier(key: Ed25519PrivateKey) -> ModelRunner:
    release = build_release("churn", 1, key)
    return ModelRunner(release.manifest, release.data)


@pytest.fixture(scope="module")
def regressor(key: Ed25519PrivateKey) -> ModelRunner:
    release = build_release("yield", 1, key, task="regression")
    return ModelRunner(release.manifest, release.data)


def test_classifier_returns_label_probabilities_by_class_and_an_id(classifier: ModelRunner) -> None:
    p = classifier.predict(ROW)
    assert p.label in (0, 1) and set(p.probabilities) == {0, 1}
    assert math.isclose(sum(p.probabilities.values()), 1.0, abs_tol=1e-5)
    assert p.label == max(p.probabilities, key=p.probabilities.get)
    assert p.value is None and p.id


def test_predictions_match_scikit_learn(classifier: ModelRunner) -> None:
    pipe, _, frame = trained("binary", 0)
    rows = frame.iloc[40:60]
    records = [{"age in years": None if np.isnan(r.age_in_years) else float(r.age_in_years),
                "income": float(r.income), "plan": r.plan} for r in rows.itertuples()]
    got = classifier.predict_many(records)
    want = pipe.predict_proba(rows)
    for pred, row in zip(got, want, strict=True):
        assert abs(pred.probabilities[1] - row[1]) < 1e-4


def test_regressor_returns_a_value(regressor: ModelRunner) -> None:
    p = regressor.predict(ROW)
    assert isinstance(p.value, float) and p.label is None and p.probabilities is None


def test_batch_equals_single_rows_and_ids_are_unique(classifier: ModelRunner) -> None:
    records = [dict(ROW, income=float(i)) for i in range(5)]
    batch = classifier.predict_many(records)
    singles = [classifier.predict(r) for r in records]
    for b, s in zip(batch, singles, strict=True):
        assert b.label == s.label and b.probabilities == pytest.approx(s.probabilities)
    assert len({p.id for p in [*batch, *singles]}) == 10
    assert classifier.predict_many([]) == []


@pytest.mark.parametrize("model", ["classifier", "regressor"])
def test_a_batch_answers_as_its_predictions_would(model: str, request: pytest.FixtureRequest) -> None:
    """The batch keeps arrays and makes objects on demand: every view of it must agree with the objects."""
    runner: ModelRunner = request.getfixturevalue(model)
    batch = runner.predict_many([dict(ROW, income=float(i)) for i in range(7)])
    objects = list(batch)
    assert batch.to_json() == [p.to_json() for p in objects]  # type: ignore[union-attr]
    assert [p.id for p in objects] == [batch[i].id for i in range(7)] == [p.id for p in batch[:]]
    assert batch[-1].id == objects[6].id and len(batch) == 7
    with pytest.raises(IndexError):
        batch[7]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"income": "4.5"}, "income: expected a number, got a string"),
        ({"income": True}, "income: expected a number, got bool"),
        ({"plan": 3}, "plan: expected a string, got a number"),
        ({"income": None}, "income: is null but the model does not accept missing values"),
        ({"income": float("nan")}, "income: is NaN but the model does not accept missing values"),
        ({"age in years": float("inf")}, "age in years: must be a finite number within float32 range"),
        ({"age in years": 1e300}, "age in years: must be a finite number within float32 range"),
        ({"plan": ["pro"]}, "plan: expected a string, got list"),
    ],
)
def test_bad_values_name_the_field_and_problem(classifier: ModelRunner, change: dict, message: str) -> None:
    with pytest.raises(InputError) as info:
        classifier.predict({**ROW, **change})
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"plan": "\ud800"}, "plan: is not valid Unicode (a lone surrogate at character 0)"),
        ({"plan": "café \udfff"}, "plan: is not valid Unicode (a lone surrogate at character 5)"),
        ({"income": 10 ** 400}, "income: must be a finite number within float32 range"),
        ({"age in years": -(10 ** 400)}, "age in years: must be a finite number within float32 range"),
        ({"age in years": 10 ** 39}, "age in years: must be a finite number within float32 range"),
    ],
)
def test_values_onnxruntime_cannot_take_are_the_callers_error_in_both_paths(
        classifier: ModelRunner, change: dict, message: str) -> None:
    """A lone surrogate failed inside onnxruntime's UTF-8 encode (a ModelError, counted against the model), a
    400-digit integer in float() (an OverflowError nobody counted); both are the caller's."""
    with pytest.raises(InputError) as info:
        classifier.predict({**ROW, **change})
    assert str(info.value) == message
    with pytest.raises(InputError) as info:
        classifier.predict_many([ROW, {**ROW, **change}])
    assert str(info.value) == f"records[1].{message}"


def test_valid_non_ascii_text_and_big_integers_within_range_are_accepted(classifier: ModelRunner) -> None:
    assert classifier.predict({**ROW, "plan": "pro ☃ 𝄞"}).label in (0, 1)
    assert classifier.predict({**ROW, "income": 10 ** 30}).label in (0, 1)
    assert len(classifier.predict_many([{**ROW, "plan": "ünï"}, {**ROW, "income": 7}])) == 2


def test_missing_field_is_named(classifier: ModelRunner) -> None:
    record = {k: v for k, v in ROW.items() if k != "plan"}
    with pytest.raises(InputError, match=r"^plan: is missing$"):
        classifier.predict(record)


def test_batch_errors_name_the_record_index(classifier: ModelRunner) -> None:
    with pytest.raises(InputError, match=r"^records\[2\]\.income: expected a number"):
        classifier.predict_many([ROW, ROW, {**ROW, "income": "x"}])
    with pytest.raises(InputError, match=r"^records\[1\]: must be an object"):
        classifier.predict_many([ROW, 7])
    with pytest.raises(InputError, match=r"^records: must be a list"):
        classifier.predict_many("abc")
    with pytest.raises(InputError, match=r"^record: must be an object"):
        classifier.predict(["not", "a", "mapping"])


def test_nullable_missing_values_and_unseen_categories_are_accepted(classifier: ModelRunner) -> None:
    assert classifier.predict({**ROW, "age in years": None}).label in (0, 1)
    assert classifier.predict({**ROW, "age in years": float("nan")}).label in (0, 1)
    assert classifier.predict({**ROW, "plan": None}).label in (0, 1)
    assert classifier.predict({**ROW, "plan": "enterprise"}).label in (0, 1)


def test_extra_fields_are_ignored(classifier: ModelRunner) -> None:
    assert classifier.predict({**ROW, "customer_id": "c-17"}).probabilities == \
        pytest.approx(classifier.predict(ROW).probabilities)


def test_bytes_that_are_not_onnx_fail_to_load(key: Ed25519PrivateKey) -> None:
    release = with_bytes(build_release("churn", 1, key), b"definitely not onnx" * 20, key)
    with pytest.raises(ModelError, match="onnxruntime cannot load the model"):
        ModelRunner(release.manifest, release.data)


def test_manifest_that_disagrees_with_the_graph_is_refused(key: Ed25519PrivateKey) -> None:
    release = build_release("churn", 1, key)
    spec = release.manifest.inputs[0]
    renamed = dataclasses.replace(spec, name="something_else")
    manifest = dataclasses.replace(release.manifest, inputs=(renamed, *release.manifest.inputs[1:]))
    with pytest.raises(ModelError, match="ONNX inputs"):
        ModelRunner(manifest, release.data)
    retyped = InputSpec(spec.column, spec.name, "string")
    manifest = dataclasses.replace(release.manifest, inputs=(retyped, *release.manifest.inputs[1:]))
    with pytest.raises(ModelError, match="has type tensor\\(float\\), the manifest says string"):
        ModelRunner(manifest, release.data)

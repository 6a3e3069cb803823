"""Training: task inference, preprocessing by dtype, metrics per task, reproducibility, one-line errors."""

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_diabetes, load_iris

from edgeops.config import ProjectConfig, load_config
from edgeops.errors import ConfigError, DataError
from edgeops.train.training import infer_task, round_thresholds_to_float32, train_model

pytestmark = pytest.mark.unit

ODD_NAMES = ["engine temp (°C)", "site/zone", "v1.2 score", "naïve count"]


def binary_frame(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """Numbers and text, missing values in both, column names with spaces, slashes, dots and unicode."""
    rng = np.random.default_rng(seed)
    temp = rng.normal(80, 10, n)
    zone = rng.choice(["north", "south", "east"], n).astype(object)
    score = rng.uniform(0, 1, n)
    count = rng.integers(0, 20, n).astype(float)
    logit = 0.15 * (temp - 80) + np.where(zone == "north", 1.5, -0.5) + 2 * (score - 0.5)
    label = np.where(logit + rng.normal(0, 0.5, n) > 0, "fail", "ok")
    zone[rng.random(n) < 0.1] = None
    temp[rng.random(n) < 0.05] = np.nan
    return pd.DataFrame({ODD_NAMES[0]: temp, ODD_NAMES[1]: zone, ODD_NAMES[2]: score, ODD_NAMES[3]: count,
                         "status": label})


def iris_frame() -> pd.DataFrame:
    df = load_iris(as_frame=True).frame
    df["target"] = df["target"].map({0: "setosa", 1: "versicolor", 2: "virginica"})
    df["batch"] = np.random.default_rng(1).choice(["a", "b", None], len(df))
    return df


def diabetes_frame() -> pd.DataFrame:
    df = load_diabetes(as_frame=True).frame.iloc[:300].copy()
    df["sex"] = np.where(df["sex"] > 0, "m", "f")
    return df


def cfg(**overrides: object) -> ProjectConfig:
    return load_config(None, overrides)


@pytest.mark.parametrize(("values", "task"), [
    (["a", "b", "a"], "binary"),
    (["a", "b", "c"], "multiclass"),
    ([True, False, True], "binary"),
    ([0, 1, 1, 0], "binary"),
    ([0.0, 1.0, 2.0, 1.0], "multiclass"),
    ([1.5, 2.25, 3.0], "regression"),
    (list(range(50)), "regression"),  # whole numbers, but more than 20 distinct values
])
def test_infer_task(values: list, task: str) -> None:
    assert infer_task(pd.Series(values)) == task


def test_binary_with_text_columns_and_odd_names() -> None:
    df = binary_frame()
    trained = train_model(df, "status", cfg())
    assert trained.task == "binary" and trained.classes == ["fail", "ok"]
    assert trained.feature_columns == ODD_NAMES
    assert set(trained.metrics) == {"accuracy", "f1", "roc_auc", "log_loss"}
    assert trained.metrics["accuracy"] > 0.75 and trained.metrics["roc_auc"] > 0.8
    assert trained.estimator == "sklearn.linear_model.LogisticRegression"
    assert len(trained.X_test) == 75  # 25 % holdout


def test_missing_text_becomes_the_token_and_numbers_float32() -> None:
    df = binary_frame()
    trained = train_model(df, "status", cfg(**{"model.missing_token": "<none>"}))
    zone = pd.concat([trained.X_train, trained.X_test])[ODD_NAMES[1]]
    assert zone.map(type).eq(str).all()
    assert (zone == "<none>").sum() == df[ODD_NAMES[1]].isna().sum()
    assert trained.X_train[ODD_NAMES[0]].dtype == np.float32
    assert trained.X_train[ODD_NAMES[0]].isna().any()  # NaN is kept for the model's imputer
    encoder = trained.pipeline.named_steps["preprocess"].named_transformers_["categorical"]
    assert "<none>" in list(encoder.categories_[0])
    # a category never seen in training does not break prediction (handle_unknown='ignore')
    unseen = trained.prepare(df.head(3).assign(**{ODD_NAMES[1]: "west"}))
    assert trained.pipeline.predict(unseen).shape == (3,)


def test_multiclass_metrics() -> None:
    trained = train_model(iris_frame(), "target", cfg())
    assert trained.task == "multiclass" and trained.classes == ["setosa", "versicolor", "virginica"]
    assert set(trained.metrics) == {"accuracy", "f1", "roc_auc", "log_loss"}
    assert trained.metrics["accuracy"] > 0.85


def test_regression_metrics_and_default_estimator() -> None:
    trained = train_model(diabetes_frame(), "target", cfg())
    assert trained.task == "regression" and trained.classes is None
    assert trained.estimator == "sklearn.linear_model.Ridge"
    assert set(trained.metrics) == {"rmse", "mae", "r2"}
    assert trained.metrics["r2"] > 0.2 and trained.metrics["rmse"] > trained.metrics["mae"] > 0


def test_explicit_task_overrides_inference() -> None:
    df = pd.DataFrame({"x": np.arange(100.0), "y": np.arange(100) % 3})
    assert train_model(df, "y", cfg()).task == "multiclass"
    assert train_model(df, "y", cfg(**{"model.task": "regression"})).task == "regression"


@pytest.mark.parametrize(("estimator", "params"), [
    (None, {}),
    ("sklearn.ensemble.RandomForestClassifier", {"n_estimators": 20}),
    ("sklearn.ensemble.HistGradientBoostingClassifier", {"max_iter": 20}),
])
def test_same_data_config_and_seed_give_the_same_metrics(estimator: str | None, params: dict) -> None:
    overrides = {"model.estimator": estimator, "model.params": params}
    first = train_model(binary_frame(), "status", cfg(**overrides))
    second = train_model(binary_frame(), "status", cfg(**overrides))
    assert first.metrics == second.metrics
    assert list(first.X_test.index) == list(second.X_test.index)
    np.testing.assert_array_equal(first.pipeline.predict_proba(first.X_test),
                                  second.pipeline.predict_proba(second.X_test))
    other = train_model(binary_frame(), "status", cfg(**overrides, seed=7))
    assert list(other.X_test.index) != list(first.X_test.index)


def test_configured_estimator_and_params_are_used() -> None:
    trained = train_model(binary_frame(), "status", cfg(**{
        "model.estimator": "sklearn.ensemble.RandomForestClassifier", "model.params.n_estimators": 7}))
    model = trained.pipeline.named_steps["model"]
    assert type(model).__name__ == "RandomForestClassifier" and model.n_estimators == 7
    assert model.random_state == 42  # seeded from the config
    numeric = trained.pipeline.named_steps["preprocess"].named_transformers_["numeric"]
    assert "scale" not in numeric.named_steps  # trees are not scaled (see ModelSpec.scale_numeric)


def test_wrong_kind_of_estimator_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"model\.estimator: sklearn\.linear_model\.Ridge is not a classifier"):
        train_model(binary_frame(), "status", cfg(**{"model.estimator": "sklearn.linear_model.Ridge"}))


def test_invalid_parameter_value_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"model\.params"):
        train_model(binary_frame(), "status", cfg(**{"model.params.C": -1.0}))


def test_unknown_estimator_path_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"unknown estimator 'sklearn\.linear_model\.Nope'"):
        train_model(binary_frame(), "status", cfg(**{"model.estimator": "sklearn.linear_model.Nope"}))


@pytest.mark.parametrize(("change", "target", "words"), [
    (lambda df: df, "nope", "target column 'nope' is not in the data"),
    (lambda df: df.assign(status="ok"), "status", "target column 'status' has a single value"),
    (lambda df: df.assign(empty=np.nan), "status", "column 'empty' is entirely missing"),
    (lambda df: df.assign(**{"v1.2 score": df["v1.2 score"].astype(str).where(df.index != 5, "#REF!")}),
     "status", "column 'v1.2 score' is numeric but holds 1 non-numeric value(s), e.g. '#REF!'"),
])
def test_bad_data_gives_one_line_data_errors(change: Callable[[pd.DataFrame], pd.DataFrame], target: str,
                                             words: str) -> None:
    with pytest.raises(DataError) as info:
        train_model(change(binary_frame()), target, cfg())
    assert words in str(info.value) and "\n" not in str(info.value)


def test_float32_threshold_rounding_keeps_every_prediction() -> None:
    from sklearn.base import clone
    from sklearn.ensemble import HistGradientBoostingClassifier

    df = iris_frame()
    X = df.iloc[:, :4].to_numpy(dtype="float32")
    model = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(X, df["target"])
    before = clone(model).fit(X, df["target"]).predict_proba(X)
    round_thresholds_to_float32(model)
    np.testing.assert_array_equal(model.predict_proba(X), before)
    thresholds = np.concatenate([p.nodes["num_threshold"] for per in model._predictors for p in per])
    assert np.all(thresholds.astype("float32").astype("float64") == thresholds)


def test_numeric_column_names_from_code_are_used_as_text() -> None:
    rng = np.random.default_rng(0)
    df = pd.DataFrame({0: rng.normal(size=200), 1: rng.choice(["a", "b"], 200)})
    df[2] = np.where(df[0] > 0, "yes", "no")
    trained = train_model(df, 2, cfg())  # type: ignore[arg-type]
    assert trained.feature_columns == ["0", "1"] and trained.target == "2"


def test_classifiers_without_probabilities_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"RidgeClassifier has no predict_proba"):
        train_model(binary_frame(), "status", cfg(**{"model.estimator": "sklearn.linear_model.RidgeClassifier"}))

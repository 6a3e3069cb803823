"""Training: a scikit-learn pipeline (preprocessing inferred from dtypes + the configured estimator).

Preprocessing, chosen so that skl2onnx converts it and the device can feed it:
- numeric columns: median imputation + standard scaling (not for tree models, see ModelSpec.scale_numeric);
  values are cast to float32 *before* fitting, because the ONNX model receives float32, so the model is
  trained and scored on exactly what the device sends;
- text columns: missing values become ``model.missing_token`` before fitting (skl2onnx cannot convert an
  imputer of NaN on strings), then one-hot encoding with ``handle_unknown='ignore'`` so that a category never
  seen in training gives all zeros instead of an error on the device.
The ColumnTransformer selects columns by position, so the exporter can give each ONNX input a safe name
(column names are arbitrary text) while position i still means column i.
"""

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from sklearn.base import BaseEstimator, is_classifier, is_regressor
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from edgeops.config import ProjectConfig, import_estimator
from edgeops.errors import ConfigError, DataError
from edgeops.train.data import ColumnKind, as_numeric, as_text, check_columns, column_kind, with_text_columns

DEFAULT_ESTIMATORS: dict[str, tuple[str, dict[str, Any]]] = {
    # Linear models are the defaults because their ONNX conversion is exact up to float32 rounding (no tree
    # thresholds a rounding can flip), they are tiny on the device (kilobytes), and skl2onnx has supported
    # them for years. Trees (RandomForest*, HistGradientBoosting*) are one config line away.
    "binary": ("sklearn.linear_model.LogisticRegression", {"max_iter": 1000}),
    "multiclass": ("sklearn.linear_model.LogisticRegression", {"max_iter": 1000}),
    "regression": ("sklearn.linear_model.Ridge", {}),
}
MAX_CLASSES_FOR_INTEGER_TARGET = 20


@dataclass
class TrainedModel:
    """A fitted pipeline with its holdout split and scores.

    ``X_train``/``X_test`` are model inputs (the original column names, numbers as float32, missing text as
    ``missing_token``); ``prepare`` turns any raw frame into that form."""

    pipeline: Pipeline
    task: str
    target: str
    feature_columns: list[str]
    X_train: pd.DataFrame
    X_test: pd.DataFrame
    y_train: pd.Series
    y_test: pd.Series
    metrics: dict[str, float]
    classes: list[Any] | None
    kinds: dict[str, ColumnKind] = field(default_factory=dict)
    missing_token: str = "__missing__"
    estimator: str = ""

    def prepare(self, df: pd.DataFrame) -> pd.DataFrame:
        return prepare_features(df, self.feature_columns, self.kinds, self.missing_token)


def infer_task(y: pd.Series) -> str:
    """The task a target asks for, when the config does not say.

    Rule: text, boolean or categorical targets are classification; numbers are classification only when they
    are all whole numbers with at most 20 distinct values; otherwise regression. Two classes → binary, more
    → multiclass. Set ``model.task`` when the rule guesses wrong (e.g. a count target with few values)."""
    present = y.dropna()
    n_classes = present.nunique()
    if pd.api.types.is_bool_dtype(present) or not pd.api.types.is_numeric_dtype(present):
        return "binary" if n_classes <= 2 else "multiclass"
    values = present.to_numpy(dtype="float64")
    whole = bool(np.all(np.isfinite(values)) and np.all(values == np.round(values)))
    if whole and n_classes <= MAX_CLASSES_FOR_INTEGER_TARGET:
        return "binary" if n_classes <= 2 else "multiclass"
    return "regression"


def prepare_features(df: pd.DataFrame, columns: list[str], kinds: dict[str, ColumnKind],
                     missing_token: str) -> pd.DataFrame:
    """Raw columns → model inputs: numbers as float32 (NaN for missing), text as str with the missing token."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"the data lacks the model's column(s) {missing}", column=missing[0])
    out = {}
    for col in columns:
        if kinds[col] == "numeric":
            out[col] = as_numeric(df[col]).astype("float32")
        else:
            out[col] = as_text(df[col]).map(lambda v: missing_token if v is None else v).astype(object)
    return pd.DataFrame(out, index=df.index)


def build_pipeline(feature_columns: list[str], kinds: dict[str, ColumnKind], estimator: BaseEstimator,
                   scale_numeric: bool | None = None) -> Pipeline:
    """Preprocessing by column position (see module docstring) followed by ``estimator``."""
    numeric = [i for i, c in enumerate(feature_columns) if kinds[c] == "numeric"]
    text = [i for i, c in enumerate(feature_columns) if kinds[c] == "categorical"]
    if scale_numeric is None:
        scale_numeric = not is_tree_model(estimator)
    parts: list[tuple[str, Any, list[int]]] = []
    if numeric:
        steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy="median"))]
        if scale_numeric:
            steps.append(("scale", StandardScaler()))
        parts.append(("numeric", Pipeline(steps), numeric))
    if text:
        parts.append(("categorical", OneHotEncoder(handle_unknown="ignore", sparse_output=False), text))
    return Pipeline([("preprocess", ColumnTransformer(parts, sparse_threshold=0.0)), ("model", estimator)])


def is_tree_model(estimator: BaseEstimator) -> bool:
    """Trees split on thresholds and ignore feature scale; see ModelSpec.scale_numeric."""
    return type(estimator).__module__.startswith(("sklearn.tree", "sklearn.ensemble"))


def make_estimator(cfg: ProjectConfig, task: str) -> tuple[str, BaseEstimator]:
    """Instantiate the configured (or default) estimator; checks it fits the task and seeds it."""
    path, params = (cfg.model.estimator, dict(cfg.model.params)) if cfg.model.estimator else (
        DEFAULT_ESTIMATORS[task][0], {**DEFAULT_ESTIMATORS[task][1], **cfg.model.params})
    cls = import_estimator(path)
    try:
        estimator = cls(**params)
    except TypeError as exc:
        raise ConfigError("model.params", f"not accepted by {path}: {exc}") from exc
    wanted = is_regressor if task == "regression" else is_classifier
    if not wanted(estimator):
        kind = "regressor" if task == "regression" else "classifier"
        raise ConfigError("model.estimator", f"{path} is not a {kind}, but the task is {task}")
    if task != "regression" and not hasattr(estimator, "predict_proba"):
        raise ConfigError("model.estimator", f"{path} has no predict_proba: releases carry class probabilities, "
                          "so pick a probabilistic classifier")
    if "random_state" in estimator.get_params() and "random_state" not in params:
        estimator.set_params(random_state=cfg.seed)
    return path, estimator


def train_model(df: pd.DataFrame, target: str, cfg: ProjectConfig) -> TrainedModel:
    """Split, fit and score. Same data + config + seed → same model and metrics."""
    df, target = with_text_columns(df), str(target)
    check_columns(df, target, cfg.data.numeric_parse_ratio)
    task = cfg.model.task or infer_task(df[target])
    path, estimator = make_estimator(cfg, task)
    features = [c for c in df.columns if c != target]
    kinds = {c: column_kind(df[c]) for c in features}
    X = prepare_features(df, features, kinds, cfg.model.missing_token)
    y = _target(df[target], task)
    X_train, X_test, y_train, y_test = _split(X, y, task, cfg)
    pipeline = build_pipeline(features, kinds, estimator, cfg.model.scale_numeric)
    try:
        pipeline.fit(X_train, y_train)
    except ValueError as exc:
        if type(exc).__name__ == "InvalidParameterError":
            raise ConfigError("model.params", str(exc)) from exc
        raise DataError(f"training {path} failed: {exc}") from exc
    round_thresholds_to_float32(estimator)
    classes = [_scalar(c) for c in pipeline.classes_] if task != "regression" else None
    return TrainedModel(pipeline=pipeline, task=task, target=target, feature_columns=features, X_train=X_train,
                        X_test=X_test, y_train=y_train, y_test=y_test,
                        metrics=score(pipeline, X_test, y_test, task), classes=classes, kinds=kinds,
                        missing_token=cfg.model.missing_token, estimator=path)


def round_thresholds_to_float32(estimator: BaseEstimator) -> None:
    """Make a fitted tree model's split thresholds float32 numbers, without changing a single prediction on
    float32 inputs (HistGradientBoosting, and decision trees alone or in forests/boosting).

    scikit-learn keeps float64 thresholds; ONNX trees store float32 ones, and rounding a threshold to the
    nearest float32 can land on a data value and send it down the other branch (measured on iris with HGB: a
    0.75 jump in a probability). For a float32 x, ``x <= t`` equals ``x <= t'`` where t' is the largest
    float32 ≤ t, so t' is stored instead. HGB's arrays are private: when they change shape in a future
    scikit-learn this does nothing for them and the export parity gate is the safety net."""
    for predictors in getattr(estimator, "_predictors", None) or []:
        for predictor in predictors:
            nodes = getattr(predictor, "nodes", None)
            if nodes is not None and nodes.dtype.names and "num_threshold" in nodes.dtype.names:
                nodes["num_threshold"] = _float32_below(nodes["num_threshold"])
    members = getattr(estimator, "estimators_", None)
    trees = [estimator, *(np.ravel(np.asarray(members, dtype=object)) if members is not None else [])]
    for tree in trees:
        threshold = getattr(getattr(tree, "tree_", None), "threshold", None)
        if isinstance(threshold, np.ndarray) and threshold.flags.writeable:
            threshold[:] = _float32_below(threshold)


def _float32_below(values: np.ndarray) -> np.ndarray:
    """The largest float32 ≤ each value, as float64."""
    with np.errstate(over="ignore"):  # HGB clips +inf thresholds to 1e300, beyond float32
        as32 = values.astype("float32")
    return np.where(as32.astype("float64") > values, np.nextafter(as32, np.float32(-np.inf)), as32).astype("float64")


def score(pipeline: Pipeline, X: pd.DataFrame, y: pd.Series, task: str) -> dict[str, float]:
    """Holdout metrics. Binary: accuracy, f1, roc_auc, log_loss; multiclass: accuracy, f1 (macro average),
    roc_auc (one-vs-rest, only when every class occurs in the holdout), log_loss; regression: rmse, mae, r2."""
    if task == "regression":
        pred = pipeline.predict(X)
        return {"rmse": float(skm.root_mean_squared_error(y, pred)),
                "mae": float(skm.mean_absolute_error(y, pred)), "r2": float(skm.r2_score(y, pred))}
    classes = list(pipeline.classes_)
    pred = pipeline.predict(X)
    proba = pipeline.predict_proba(X)
    out = {"accuracy": float(skm.accuracy_score(y, pred)), "log_loss": float(skm.log_loss(y, proba, labels=classes))}
    if task == "binary":
        out["f1"] = float(skm.f1_score(y, pred, pos_label=classes[1]))
        out["roc_auc"] = float(skm.roc_auc_score(y == classes[1], proba[:, 1]))
    else:
        out["f1"] = float(skm.f1_score(y, pred, average="macro"))
        if set(classes) <= set(y):
            out["roc_auc"] = float(skm.roc_auc_score(y, proba, multi_class="ovr", labels=classes))
    return {k: v for k, v in out.items() if math.isfinite(v)}


def _target(y: pd.Series, task: str) -> pd.Series:
    """Regression: float64. Classification: whole numbers as int64 (ONNX then outputs int64 labels), anything
    else as text, so that class labels are plain scalars on the wire."""
    if task == "regression":
        values = as_numeric(y)
        if values.isna().any():
            raise DataError(f"target column {y.name!r} is not numeric, but the task is regression",
                            column=str(y.name))
        return values
    if pd.api.types.is_numeric_dtype(y) and not pd.api.types.is_bool_dtype(y):
        floats = y.to_numpy(dtype="float64")
        if np.all(floats == np.round(floats)):
            return y.astype("int64")
    return as_text(y).astype(object)


def _split(X: pd.DataFrame, y: pd.Series, task: str, cfg: ProjectConfig
           ) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.Series]:
    stratify = None
    if task != "regression" and cfg.split.stratify and y.value_counts().min() >= 2:
        stratify = y
    try:
        X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=cfg.split.test_size,
                                                            random_state=cfg.seed, stratify=stratify)
    except ValueError as exc:
        raise DataError(f"cannot split {len(X)} rows into train and holdout: {exc}") from exc
    return X_train, X_test, y_train, y_test


def _scalar(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


__all__ = ["DEFAULT_ESTIMATORS", "TrainedModel", "build_pipeline", "infer_task", "make_estimator",
           "prepare_features", "score", "train_model"]

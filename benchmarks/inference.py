"""Inference latency: onnxruntime (what devices run) against scikit-learn (what we trained), same inputs.

For each exported model type, times one row (the device's usual call) and a batch of 1000 rows, median of
repeated calls, and prints the ratio sklearn / onnxruntime measured in this run (> 1 means ONNX is faster).
Both sides get model-ready inputs (scikit-learn a prepared DataFrame, onnxruntime the per-column arrays),
so the numbers compare the models, not the input plumbing.

    .venv/bin/python benchmarks/inference.py [--rows 4000] [--repeat 200]
"""

import argparse
import dataclasses
import statistics
import time
from collections.abc import Callable

import onnxruntime as ort

from edgeops.config import ProjectConfig, load_config
from edgeops.export import export_model, onnx_feeds
from edgeops.samples import TARGETS, make_sample
from edgeops.training import train_model

MODELS: list[tuple[str, str, str]] = [
    ("LogisticRegression", "binary", "sklearn.linear_model.LogisticRegression"),
    ("RandomForest", "binary", "sklearn.ensemble.RandomForestClassifier"),
    ("HistGradientBoosting", "binary", "sklearn.ensemble.HistGradientBoostingClassifier"),
    ("Ridge (regressor)", "regression", "sklearn.linear_model.Ridge"),
    ("RandomForestRegressor", "regression", "sklearn.ensemble.RandomForestRegressor"),
]
PARAMS = {"sklearn.ensemble.RandomForestClassifier": {"n_estimators": 100, "max_depth": 10},
          "sklearn.ensemble.RandomForestRegressor": {"n_estimators": 100, "max_depth": 10},
          "sklearn.linear_model.LogisticRegression": {"max_iter": 1000}}


def median_seconds(call: Callable[[], object], repeat: int) -> float:
    call()  # warm-up: first calls allocate
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def measure(kind: str, estimator: str, rows: int, repeat: int) -> tuple[float, float, float, float]:
    cfg: ProjectConfig = load_config(None, {"model.estimator": estimator, "data.target": TARGETS[kind]})
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, params=PARAMS.get(estimator, {})))
    df = make_sample(kind, rows, seed=1)  # type: ignore[arg-type]
    trained = train_model(df, TARGETS[kind], cfg)
    export = export_model(trained, cfg.export)
    session = ort.InferenceSession(export.onnx_bytes, providers=["CPUExecutionProvider"])
    predict = trained.pipeline.predict if kind == "regression" else trained.pipeline.predict_proba
    batch = trained.prepare(make_sample(kind, 1000, seed=2))
    one = batch.iloc[:1]
    feeds_one, feeds_batch = onnx_feeds(export.inputs, one), onnx_feeds(export.inputs, batch)
    return (median_seconds(lambda: predict(one), repeat), median_seconds(lambda: session.run(None, feeds_one), repeat),
            median_seconds(lambda: predict(batch), max(repeat // 10, 5)),
            median_seconds(lambda: session.run(None, feeds_batch), max(repeat // 10, 5)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4000, help="training rows")
    parser.add_argument("--repeat", type=int, default=200, help="timed calls per single-row measurement")
    args = parser.parse_args()
    print(f"{'model':<24}{'1 row sklearn':>15}{'1 row onnx':>13}{'ratio':>8}"
          f"{'1000 sklearn':>15}{'1000 onnx':>13}{'ratio':>8}")
    for label, kind, estimator in MODELS:
        sk1, ox1, sk1000, ox1000 = measure(kind, estimator, args.rows, args.repeat)
        print(f"{label:<24}{sk1 * 1e3:>12.3f} ms{ox1 * 1e3:>10.3f} ms{sk1 / ox1:>7.1f}x"
              f"{sk1000 * 1e3:>12.3f} ms{ox1000 * 1e3:>10.3f} ms{sk1000 / ox1000:>7.1f}x")
    print("ratio = scikit-learn time / onnxruntime time, medians measured in this run on this machine")


if __name__ == "__main__":
    main()

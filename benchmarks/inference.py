"""Inference latency: onnxruntime (what devices run) against scikit-learn (what we trained), same inputs.

    .venv/bin/python benchmarks/inference.py [--rows 4000] [--rounds 7] [--calls 50] [--threads 1]

For each exported model type, one row (the device's usual call) and a batch of 1000 rows, in interleaved
rounds (benchmarks/rounds.py): per round, ``calls`` of scikit-learn and ``calls`` of onnxruntime, alternating
who goes first; the ratio is scikit-learn time / onnxruntime time (> 1: ONNX is faster), shown as the median over
rounds with its spread, and the same ratio of process CPU time beside it.

Both sides get the same number of threads (``--threads``, default 1, as the agent's session): onnxruntime's
intra-op and inter-op pools, and scikit-learn's OpenMP/BLAS pools through threadpoolctl (HistGradientBoosting
would otherwise use every core) with ``n_jobs`` set where the estimator has one. Both get model-ready inputs
(scikit-learn a prepared DataFrame, onnxruntime the per-column arrays), so the numbers compare the models, not
the input plumbing.
"""

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any

import onnxruntime as ort
from rounds import Ratio, interleaved_cpu, load_average, print_table
from threadpoolctl import threadpool_limits

from edgeops.config import ProjectConfig, load_config
from edgeops.train.export import export_model, onnx_feeds
from edgeops.train.samples import TARGETS, make_sample
from edgeops.train.training import train_model

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


def session_for(onnx_bytes: bytes, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = threads
    return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


def limited(call: Callable[[], Any], threads: int) -> Callable[[], Any]:
    """``call`` with scikit-learn's native pools (OpenMP, BLAS) held to ``threads``."""
    def run() -> Any:
        with threadpool_limits(limits=threads):
            return call()
    return run


def measure(label: str, kind: str, estimator: str, args: argparse.Namespace) -> list[Ratio]:
    cfg: ProjectConfig = load_config(None, {"model.estimator": estimator, "data.target": TARGETS[kind]})
    params = dict(PARAMS.get(estimator, {}))
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, params=params))
    df = make_sample(kind, args.rows, seed=1)  # type: ignore[arg-type]
    trained = train_model(df, TARGETS[kind], cfg)
    if "n_jobs" in trained.pipeline.get_params():  # training may use any pool; inference gets ``threads``
        trained.pipeline.set_params(**{key: args.threads for key in trained.pipeline.get_params()
                                       if key.endswith("n_jobs")})
    export = export_model(trained, cfg.export)
    session = session_for(export.onnx_bytes, args.threads)
    predict = trained.pipeline.predict if kind == "regression" else trained.pipeline.predict_proba
    batch = trained.prepare(make_sample(kind, 1000, seed=2))
    one = batch.iloc[:1]
    feeds_one, feeds_batch = onnx_feeds(export.inputs, one), onnx_feeds(export.inputs, batch)
    results = []
    for rows, frame, feeds, calls in ((1, one, feeds_one, args.calls),
                                      (1000, batch, feeds_batch, max(args.calls // 5, 5))):
        wall, cpu = interleaved_cpu(lambda f=feeds: session.run(None, f),  # type: ignore[misc]
                                    limited(lambda f=frame: predict(f), args.threads),  # type: ignore[misc]
                                    args.rounds, calls)
        results.append(Ratio(f"{label}, {rows} row{'s' * (rows > 1)}: sklearn / onnxruntime", wall, 1.0,
                             higher_is_better=True, cpu=cpu))
        print(results[-1].line(), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4000, help="training rows")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds per measure")
    parser.add_argument("--calls", type=int, default=50, help="single-row calls per side and round (batches: / 5)")
    parser.add_argument("--threads", type=int, default=1, help="threads for both sides (the agent uses 1)")
    args = parser.parse_args()
    settings = (f"threads: onnxruntime intra-op {args.threads} + inter-op {args.threads}, scikit-learn OpenMP/BLAS "
                f"{args.threads} (threadpoolctl) and n_jobs {args.threads}")
    print(f"onnxruntime {ort.__version__}; {settings}; ratio = scikit-learn time / onnxruntime time", flush=True)
    load_start = load_average()
    results: list[Ratio] = []
    for label, kind, estimator in MODELS:
        results += measure(label, kind, estimator, args)
    print_table(results, load_start, settings)


if __name__ == "__main__":
    main()

"""``edgeops up`` / ``edgeops down`` times, and what a CLI pipeline run costs with the stack up.

    .venv/bin/python benchmarks/stack.py [--cycles 2] [--rounds 5] [--rows 2000]

Everything runs in a fresh temporary project directory, with ``EDGEOPS_MQTT_URL`` and ``PREFECT_API_URL`` unset,
through the real console scripts (each command a process of its own, as a user runs it):

1. ``--cycles`` times: ``edgeops up`` wall time (the command returns only once every service answers: broker
   CONNACK, Prefect /api/health, ingest subscribed, monitor deployment READY), then ``edgeops down`` wall time,
   then a scan of /proc for any live process whose command line or environment names the project (there must
   be none). The first cycle starts on a fresh Prefect database (migrations), later ones on the existing one.
2. With the stack up: ``edgeops pipeline run`` on the quickstart's sample (``--rows`` rows, seed 0: the same
   file ``edgeops quickstart`` writes) against a plain script doing the same fit + skl2onnx conversion + parity
   check (``python benchmarks/stack.py --plain FILE``, below), each a fresh process, in interleaved rounds after
   one untimed warm-up of each (benchmarks/rounds.py); target ≤ 2×. CPU beside wall: the command's process plus
   the stack's Prefect server (which works only for the pipeline run).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rounds import Ratio, load_average, print_table, tree_cpu_seconds

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the test helpers: the scan for processes left behind
from services import processes_mentioning  # noqa: E402

BIN = Path(sys.executable).parent
TARGET = "churned"


def plain_pipeline(path: Path) -> None:
    """The baseline: what the pipeline does at its core, as a data scientist would script it: read, split, fit
    the same preprocessing + LogisticRegression, convert with skl2onnx, run onnxruntime on the holdout and
    compare the probabilities (no validation, gates, references, signing, registry or Prefect)."""
    import numpy as np
    import onnxruntime as ort
    import pandas as pd
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    df = pd.read_csv(path)
    y = df.pop(TARGET)
    numeric = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c])]
    for col in df.columns:
        df[col] = df[col].astype("float32") if col in numeric else df[col].fillna("__missing__").astype(str)
    X_train, X_test, y_train, y_test = train_test_split(df, y, test_size=0.25, random_state=0, stratify=y)
    columns = list(df.columns)
    model = LogisticRegression(max_iter=1000)
    pipeline = Pipeline([("preprocess", ColumnTransformer([
        ("numeric", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]),
         [columns.index(c) for c in numeric]),
        ("categorical", OneHotEncoder(handle_unknown="ignore", sparse_output=False),
         [i for i, c in enumerate(columns) if c not in numeric])], sparse_threshold=0.0)), ("model", model)])
    pipeline.fit(X_train, y_train)
    types = [(f"x{i}", FloatTensorType([None, 1]) if c in numeric else StringTensorType([None, 1]))
             for i, c in enumerate(columns)]
    onx = convert_sklearn(pipeline, initial_types=types, options={id(model): {"zipmap": False}})
    session = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {f"x{i}": (X_test[c].to_numpy(dtype="float32") if c in numeric else
                       np.asarray(X_test[c].to_numpy(), dtype=object)).reshape(-1, 1) for i, c in enumerate(columns)}
    _, proba = session.run(None, feeds)
    diff = float(np.abs(proba - pipeline.predict_proba(X_test)).max())
    assert diff < 1e-4, f"ONNX differs from scikit-learn by {diff}"
    print(f"accuracy {pipeline.score(X_test, y_test):.3f}; onnx parity max |diff| {diff:.1e}")


def user_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("EDGEOPS_MQTT_URL", "PREFECT_API_URL", "PREFECT_HOME")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, str]:
    """(wall s, CPU s of the process, stdout); a failure ends the benchmark with the command's stderr."""
    c0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    wall, c1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:3])} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime), proc.stdout


def up_down_cycles(project: Path, env: dict[str, str], cycles: int) -> None:
    edgeops = str(BIN / "edgeops")
    for i in range(cycles):
        up, _, _ = timed([edgeops, "up"], project, env)
        down, _, _ = timed([edgeops, "down"], project, env)
        left = processes_mentioning(str(project))
        print(f"  cycle {i + 1} ({'fresh' if i == 0 else 'existing'} Prefect database): edgeops up {up:.1f} s "
              f"until every service answers, edgeops down {down:.1f} s; processes left: {len(left)}", flush=True)
        if left:
            raise SystemExit("left running after edgeops down:\n" + "\n".join(left))


def pipeline_rounds(project: Path, env: dict[str, str], rounds: int, rows: int) -> Ratio:
    sys.path.insert(0, str(ROOT / "src"))
    from edgeops.train.samples import write_sample

    edgeops = str(BIN / "edgeops")
    data = write_sample(project / ".edgeops" / "sample" / "churn.csv", "binary", rows, seed=0)
    timed([edgeops, "keys", "init"], project, env)
    timed([edgeops, "up"], project, env)
    try:
        status = json.loads(subprocess.run([edgeops, "status", "--json"], cwd=project, env=env, capture_output=True,
                                           text=True, check=True).stdout)
        server = next(s["pid"] for s in status["services"] if s["name"] == "prefect-server")
        ours = [edgeops, "pipeline", "run", "--data", str(data), "--target", TARGET, "--model", "churn"]
        plain = [sys.executable, str(Path(__file__).resolve()), "--plain", str(data)]
        print(f"{rows} rows; warm-up runs (untimed) ...", flush=True)
        timed(plain, project, env)
        timed(ours, project, env)
        wall: list[float] = []
        cpu: list[float] = []
        for i in range(rounds):
            times: dict[str, tuple[float, float]] = {}
            for name, argv in (("plain", plain), ("ours", ours)) if i % 2 == 0 else (("ours", ours), ("plain", plain)):
                s0 = tree_cpu_seconds(server)
                seconds, spent, _ = timed(argv, project, env)
                times[name] = seconds, spent + (tree_cpu_seconds(server) - s0 if name == "ours" else 0.0)
            wall.append(times["ours"][0] / times["plain"][0])
            cpu.append(times["ours"][1] / times["plain"][1])
            print(f"  round {i + 1}: plain script {times['plain'][0]:.2f} s ({times['plain'][1]:.2f} s CPU), "
                  f"edgeops pipeline run {times['ours'][0]:.2f} s ({times['ours'][1]:.2f} s CPU incl. the "
                  f"Prefect server): {wall[-1]:.2f}× wall, {cpu[-1]:.2f}× CPU", flush=True)
    finally:
        timed([edgeops, "down"], project, env)
    return Ratio(f"pipeline run with `edgeops up` / plain script, {rows} rows", wall, 2.0,
                 cpu=cpu, detail="CPU: the command + the Prefect server")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=2, help="up/down cycles (the first on a fresh database)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved pipeline rounds (each: one of each)")
    parser.add_argument("--rows", type=int, default=2000, help="rows of the quickstart sample")
    parser.add_argument("--plain", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain is not None:
        plain_pipeline(args.plain)
        return
    load_start = load_average()
    with tempfile.TemporaryDirectory(prefix="edgeops-bench-stack-") as tmp:
        project = Path(tmp) / "project"
        project.mkdir()
        env = user_env()
        print("edgeops up / edgeops down:", flush=True)
        up_down_cycles(project, env, args.cycles)
        result = pipeline_rounds(project, env, args.rounds, args.rows)
    print_table([result], load_start, "each command a fresh process; the stack's Prefect server on SQLite")


if __name__ == "__main__":
    main()

"""Size and cost of the monitor's ``edgeops-performance`` artifact for a week of telemetry and labels.

    PYTHONPATH=src:. .venv/bin/python benchmarks/performance_report_size.py [--versions 5] [--days 7] [--devices 3]

``--versions`` calibrated releases of one model (tests/releases.build_release), each served by ``--devices``
devices for the whole span, one 200-prediction window per device and hour, its probabilities drawn so that the
estimate moves (confident for a while, then unsure), each window carrying the labels of the previous hour's
predictions (about 60 a device: enough for hourly realized points, the busiest chart). The windows go through a
real SQLite store; the monitor pass is the product's ``run_monitor`` over ``--days`` days of telemetry and labels,
the artifact ``performance_markdown``. Printed: the markdown's size, how much of it is images, the largest chart,
and the time to render it beside the time of the monitor pass it renders (the baseline, same run).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))   # a signed release with a calibration table

from releases import build_release, new_key  # noqa: E402

from edge_agent.protocol import FeedbackCredit, TelemetryWindow  # noqa: E402
from edge_agent.scoring import freeze_scores, score_cells  # noqa: E402
from edgeops.telemetry.monitor import run_monitor  # noqa: E402
from edgeops.telemetry.performance_report import performance_markdown  # noqa: E402
from edgeops.telemetry.store import TelemetryStore  # noqa: E402


def iso(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def windows(rng: np.random.Generator, version: int, device: str, hours: int, now: datetime) -> list[TelemetryWindow]:
    out = []
    for h in range(hours):
        start = now - timedelta(hours=hours - h)
        unsure = (h // 24 + version) % 3 == 0          # a day of unsure traffic every three days
        p_one = rng.uniform(0.35, 0.65, 200) if unsure else rng.beta(0.3, 0.3, 200)
        labelled = int(rng.integers(40, 80))
        credit = () if h == 0 else (FeedbackCredit("bench", version, iso(start - timedelta(hours=1)), labelled,
                                                   correct=int(rng.binomial(labelled, 0.6 if unsure else 0.85))),)
        out.append(TelemetryWindow(device=device, seq=h, model="bench", version=version, start=iso(start),
                                   end=iso(start + timedelta(minutes=1)), count=200, epoch="e",
                                   scores=freeze_scores(score_cells(np.column_stack([1 - p_one, p_one]), 20), 20),
                                   feedback_for=credit))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=5)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--devices", type=int, default=3)
    args = parser.parse_args()
    hours = int(args.days * 24)
    key, rng = new_key(), np.random.default_rng(3)
    manifests = {v: build_release("bench", v, key, calibrated=True).manifest for v in range(1, args.versions + 1)}
    now = datetime.now(UTC).replace(minute=30, second=0, microsecond=0)
    with tempfile.TemporaryDirectory() as tmp:
        store = TelemetryStore(f"sqlite:///{Path(tmp) / 'telemetry.db'}")
        for v in manifests:
            for d in range(args.devices):
                store.write([TelemetryWindow.parse(w.to_bytes())
                             for w in windows(rng, v, f"dev-{v}-{d}", hours, now)])
        span = timedelta(hours=hours)
        t0 = time.perf_counter()
        report = run_monitor(store, lambda m, v: manifests.get(v) if m == "bench" else None, window=span,
                             label_window=span, now=now + timedelta(minutes=5), per_device=False)
        t1 = time.perf_counter()
        markdown = performance_markdown(report)
        t2 = time.perf_counter()
        store.close()
    images = [len(m) for m in re.findall(r"base64,([A-Za-z0-9+/=]+)", markdown)]
    size = len(markdown.encode())
    print(f"{args.versions} versions × {args.days:g} days ({hours} hours), {args.devices} devices each, "
          f"{len(images)} charts")
    print(f"edgeops-performance: {size / 1024:.1f} KB ({sum(images) / 1024:.1f} KB of base64 PNG in {len(images)} "
          f"charts, the largest {max(images, default=0) / 1024:.1f} KB; {(size - sum(images)) / 1024:.1f} KB of text)")
    steps = sorted({c.step_hours for c in report.performance_chart.values()})
    points = max((len(c.estimated) + len(c.realized) for c in report.performance_chart.values()), default=0)
    print(f"realized step(s): {steps} h; at most {points} points in one chart")
    print(f"render {t2 - t1:.2f} s vs monitor pass {t1 - t0:.2f} s: {(t2 - t1) / (t1 - t0):.2f}×")


if __name__ == "__main__":
    main()

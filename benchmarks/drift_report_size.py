"""Size and cost of the monitor's Prefect artifacts for a day of telemetry.

    PYTHONPATH=src:. .venv/bin/python benchmarks/drift_report_size.py [--devices 20] [--hours 24] [--drifting 2]

One model version; ``--devices`` devices each send a 1-minute window of 500 predictions for ``--hours`` hours,
with the ten features and the prediction of benchmarks/drift_quality.py (reference of 5,000 rows, counts
drawn from the exact law of each device bin). ``--drifting`` devices shift one feature for the last two hours,
so the report has an open episode and rows in the device × feature view. The windows go through a real SQLite
store; the monitor pass is the product's ``run_monitor`` (per device), the artifacts ``drift_markdown`` and
``fleet_rows``. Printed: the markdown's size (and how much of it is images), the fleet table's size, and the
time to render the report beside the time of the monitor pass it renders (the baseline, same run).
"""

from __future__ import annotations

import argparse
import json
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
sys.path.insert(0, str(ROOT / "benchmarks"))

from drift_quality import FEATURES, _counts, _manifest, build_references  # noqa: E402

from edge_agent.protocol import Reported, TelemetryWindow  # noqa: E402
from edgeops.telemetry.monitor import run_monitor  # noqa: E402
from edgeops.telemetry.report import drift_markdown, fleet_rows  # noqa: E402
from edgeops.telemetry.store import TelemetryStore  # noqa: E402


def day_of_windows(rng: np.random.Generator, refs: dict, device: str, minutes: int, now: datetime,
                   shifted: str | None) -> list[TelemetryWindow]:
    probs = {f.name: f.bin_probs(refs[f.name]) for f in FEATURES}
    counts = {name: rng.multinomial(500, p, size=minutes) for name, p in probs.items()}
    if shifted is not None:            # the last two hours: half of the values in the first bin
        moved = 0.5 * probs[shifted] + 0.5 * np.eye(len(probs[shifted]))[0]
        counts[shifted][-120:] = rng.multinomial(500, moved, size=min(120, minutes))
    out = []
    for i in range(minutes):
        end = (now - timedelta(minutes=minutes - i) + timedelta(seconds=59)).isoformat()
        p50 = float(rng.gamma(20, 0.1))
        out.append(TelemetryWindow(
            device=device, seq=i, model="bench", version=1, start=end, end=end, count=500,
            errors={"input": int(rng.poisson(2))}, latency_ms={"p50": p50, "p95": p50 * 2.1, "p99": p50 * 3.4,
                                                                "max": p50 * 6},
            features={n: _counts(c[i].tolist()) for n, c in counts.items() if n != "__prediction__"},
            predictions=_counts(counts["__prediction__"][i].tolist())))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--drifting", type=int, default=2)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    refs, _ = build_references(rng, 5000)
    manifest = _manifest(refs)
    minutes = int(args.hours * 60)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    with tempfile.TemporaryDirectory() as tmp:
        store = TelemetryStore(f"sqlite:///{tmp}/telemetry.db")
        for d in range(args.devices):
            device = f"dev-{d:03d}"
            shifted = ("normal", "city")[d % 2] if d < args.drifting else None
            store.write(day_of_windows(rng, refs, device, minutes, now, shifted))
            store.write([Reported(device=device, state="serving", model="bench", version=1)])
        started = time.perf_counter()
        report = run_monitor(store, manifest.lookup, now=now + timedelta(seconds=1),
                             window=timedelta(hours=args.hours))
        monitored = time.perf_counter() - started
        started = time.perf_counter()
        markdown = drift_markdown(report)
        rendered = time.perf_counter() - started
        table = json.dumps(fleet_rows(report))
        store.close()
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", markdown)
    image_bytes = sum(len(i) for i in images)
    windows = args.devices * minutes
    print(f"{args.devices} devices × {minutes} one-minute windows ({windows:,}), 10 features + prediction, "
          f"{args.drifting} drifting")
    print(f"edgeops-drift-report markdown: {len(markdown.encode()):,} bytes ({len(images)} PNG charts, "
          f"{image_bytes:,} bytes of base64; text {len(markdown.encode()) - image_bytes:,} bytes), chart step "
          f"{report.buckets.width:g} s")
    print(f"edgeops-fleet-status table: {len(table.encode()):,} bytes of JSON, {len(fleet_rows(report))} rows")
    print(f"monitor pass (run_monitor, baseline): {monitored:.2f} s; report (drift_markdown): {rendered:.2f} s "
          f"= {rendered / monitored:.2f}× the pass")


if __name__ == "__main__":
    main()

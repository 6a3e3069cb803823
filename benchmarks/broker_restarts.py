"""Telemetry through broker restarts: windows lost and counted twice, with the real agent and the real ingest.

    .venv/bin/python benchmarks/broker_restarts.py [--restarts 20] [--kill] [--ingest-away 0] [--runs 1]

Runs tests/broker_restarts.py's scenario: one in-process agent making predictions all the time (a window every
0.1 s), the ingest storing to SQLite, and a Mosquitto of its own (persistence on, default autosave) restarted
``--restarts`` times, with SIGTERM, or with SIGKILL (``--kill``). Prints one line of figures per run: windows
sent, stored, lost, stored twice, predictions made and counted. SIGTERM must lose nothing
(tests/integration/test_telemetry_broker_restarts.py asserts it); SIGKILL shows what a broker crash can still
lose (docs/monitoring.md says why). ``--ingest-away S`` stops the ingest S seconds before each restart, so the
broker goes down holding the windows queued for the ingest's session.
"""

import argparse
import logging
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from broker_restarts import run_restarts  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--restarts", type=int, default=20)
    parser.add_argument("--kill", action="store_true", help="SIGKILL the broker instead of SIGTERM")
    parser.add_argument("--ingest-away", type=float, default=0.0, metavar="S",
                        help="stop the ingest S seconds before each restart (the broker holds its queue)")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the warnings of every restart would bury the figures
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="edgeops-restarts-") as tmp:
            print(run_restarts(Path(tmp), args.restarts, kill=args.kill,
                               ingest_away_s=args.ingest_away), flush=True)


if __name__ == "__main__":
    main()

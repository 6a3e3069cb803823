"""Serve the ``demo-monitor`` and ``demo-retrain`` deployments of ``edgeops demo`` from one process (flows/serve.py).

    python -m edgeops.flows.serve_demo '{"monitor": {...parameters}, "retrain": {...parameters}}'

The retrain deployment carries the trigger of deployments/prefect.yaml (flows/serve.py's RETRAIN_TRIGGER); the
monitor has no schedule: the demo starts its runs, one after the other.
"""

import json
import sys
from collections.abc import Mapping
from typing import Any

from edgeops.flows.serve import RETRAIN_TRIGGER, serve_all


def demo_deployments(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {"flow": "monitor", "name": "demo-monitor", "parameters": spec["monitor"], "tags": ["edgeops", "demo"],
         "description": "Drift and health of the demo fleet (started by the demo loop)."},
        {"flow": "retrain", "name": "demo-retrain", "parameters": spec["retrain"], "triggers": [RETRAIN_TRIGGER],
         "tags": ["edgeops", "demo", "continuous-training"],
         "description": "Retrain on the newest data when a drift episode opens."},
    ]


def main(argv: list[str]) -> None:
    serve_all(demo_deployments(json.loads(argv[1])))


if __name__ == "__main__":
    main(sys.argv)

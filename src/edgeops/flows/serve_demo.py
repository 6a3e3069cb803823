"""Serve the ``demo-monitor`` and ``demo-retrain`` deployments of ``edgeops demo`` from one process (flows/serve.py).

    python -m edgeops.flows.serve_demo '{"monitor": {...parameters}, "retrain": {...parameters}}'

The retrain deployment carries the same trigger as deployments/prefect.yaml (tests/e2e/test_demo_loop.py checks
that they are equal); the monitor has no schedule: the demo starts its runs, one after the other.
"""

import json
import sys
from collections.abc import Mapping
from typing import Any

from edgeops.event_names import MODEL_RESOURCE, RETRAIN_TRIGGERS
from edgeops.flows.serve import serve_all

RETRAIN_TRIGGER: dict[str, Any] = {
    "type": "event",
    "enabled": True,
    "description": "Every drift or degraded-performance event of a model starts a retrain run; the run applies "
                   "the cooldown.",
    "match": {"prefect.resource.id": f"{MODEL_RESOURCE}*"},
    "expect": list(RETRAIN_TRIGGERS),
    "for_each": ["prefect.resource.id"],
    "posture": "Reactive",
    "threshold": 1,
    "within": 0,
    "parameters": {
        "model": "{{ event.resource.id }}",
        "drift": "{{ event.payload }}",
        "event_id": "{{ event.id | string }}",
    },
}


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

"""Serve the ``demo-monitor`` and ``demo-retrain`` deployments of ``edgeops demo`` from one process (``prefect.serve``).

    python -m flows.serve_demo '{"monitor": {...parameters}, "retrain": {...parameters}}'

Why serve and not a work pool: the demo must run without a worker setup, and ``serve`` runs each flow run in
a subprocess of this process, so the demo stops all of them by stopping this process's group. The retrain
deployment carries the same trigger as deployments/prefect.yaml (tests/e2e/test_demo_loop.py checks that
they are equal); the monitor has no schedule: the demo starts its runs, one after the other.
"""

import json
import sys
from typing import Any

RETRAIN_TRIGGER: dict[str, Any] = {
    "type": "event",
    "enabled": True,
    "description": "One retrain per drift or degraded-performance episode of a model.",
    "match": {"prefect.resource.id": "edgeops.model.*"},
    "expect": ["edgeops.drift.detected", "edgeops.performance.degraded"],
    "for_each": ["prefect.resource.id"],
    "posture": "Reactive",
    "threshold": 1,
    "within": 3600,
    "parameters": {
        "model": "{{ event.resource.id }}",
        "drift": "{{ event.payload }}",
        "event_id": "{{ event.id | string }}",
    },
}
MONITOR_DEPLOYMENT = "monitor/demo-monitor"
RETRAIN_DEPLOYMENT = "edgeops-retrain/demo-retrain"


def main(argv: list[str]) -> None:
    from prefect import serve
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    from flows.monitor import monitor_flow
    from flows.retrain import retrain_flow

    spec = json.loads(argv[1])
    trigger = DeploymentEventTrigger(**RETRAIN_TRIGGER)
    serve(
        monitor_flow.to_deployment(name="demo-monitor", parameters=spec["monitor"], tags=["edgeops", "demo"],
                                   description="Drift and health of the demo fleet (started by the demo loop)."),
        retrain_flow.to_deployment(name="demo-retrain", parameters=spec["retrain"], triggers=[trigger],
                                   tags=["edgeops", "demo", "continuous-training"],
                                   description="Retrain on the newest data when a drift episode opens."),
    )


if __name__ == "__main__":
    main(sys.argv)

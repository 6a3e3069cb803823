"""Serve edgeops deployments from one long-lived process (``prefect.serve``): the monitor of ``edgeops up`` on a
schedule, and the monitor and retrain deployments of ``edgeops demo`` (flows/serve_demo.py).

    python -m edgeops.flows.serve \
        '[{"flow": "monitor", "name": "local-monitor", "parameters": {...}, "interval_s": 900}]'

Why serve and not a work pool: it needs no worker setup, and every flow run is a subprocess of this process, so
stopping this process's group stops them all. The process is started while the Prefect server still boots: it
imports Prefect and the flows meanwhile, and waits for the server's /health before registering anything.
Each deployment: ``flow`` (a key of FLOWS), ``name``, and optionally ``parameters``, ``interval_s`` (a
schedule), ``triggers`` (deployment event triggers as in deployments/prefect.yaml), ``tags``, ``description``.
"""

import importlib
import json
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

FLOWS = {"monitor": ("edgeops.flows.monitor", "monitor_flow"), "retrain": ("edgeops.flows.retrain", "retrain_flow")}
API_WAIT_S = 180.0


def to_deployment(spec: Mapping[str, Any]) -> Any:
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger
    from prefect.types.entrypoint import EntrypointType

    module, attr = FLOWS[spec["flow"]]
    flow = getattr(importlib.import_module(module), attr)
    triggers = [DeploymentEventTrigger(**t) for t in spec.get("triggers", [])]
    # A module path, not a file path: the serving process runs in the project directory, not the checkout.
    return flow.to_deployment(name=spec["name"], parameters=dict(spec.get("parameters", {})),
                              interval=spec.get("interval_s"), triggers=triggers or None,
                              tags=list(spec.get("tags", ["edgeops"])), description=spec.get("description"),
                              entrypoint_type=EntrypointType.MODULE_PATH)


def wait_for_api(timeout_s: float) -> None:
    import httpx
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"the Prefect API at {url} did not answer within {timeout_s:.0f} s")
        time.sleep(0.2)


def serve_all(specs: Sequence[Mapping[str, Any]], api_wait_s: float = API_WAIT_S) -> None:
    from prefect import serve

    deployments = [to_deployment(spec) for spec in specs]
    wait_for_api(api_wait_s)
    serve(*deployments)


def main(argv: list[str]) -> None:
    serve_all(json.loads(argv[1]))


if __name__ == "__main__":
    main(sys.argv)

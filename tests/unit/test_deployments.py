"""deployments/prefect.yaml stays true to the code: every entrypoint is a flow that accepts the parameters the
deployment passes, and every trigger is one Prefect can load (prefect deploy would otherwise fail late)."""

import importlib
import inspect
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect import Flow
from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

pytestmark = pytest.mark.unit

SPEC = yaml.safe_load((Path(__file__).parents[2] / "deployments" / "prefect.yaml").read_text())
DEPLOYMENTS = {d["name"]: d for d in SPEC["deployments"]}


def load_flow(entrypoint: str) -> Flow[..., Any]:
    path, _, name = entrypoint.partition(":")
    return getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)


def test_the_loop_has_its_deployments_on_the_process_pool() -> None:
    assert {"pipeline", "rollout", "monitor", "retrain"} <= set(DEPLOYMENTS)
    assert {d["work_pool"]["name"] for d in DEPLOYMENTS.values()} == {"edgeops-process"}


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_entrypoint_is_a_flow_that_takes_the_parameters(name: str) -> None:
    deployment = DEPLOYMENTS[name]
    flow = load_flow(deployment["entrypoint"])
    assert isinstance(flow, Flow)
    accepted = set(inspect.signature(flow.fn).parameters)
    passed = set(deployment.get("parameters", {}))
    for trigger in deployment.get("triggers", []):
        passed |= set(trigger.get("parameters", {}))
        DeploymentEventTrigger.model_validate(trigger)
    assert passed <= accepted, f"{name}: {sorted(passed - accepted)} are not parameters of {flow.name}"


def test_rollout_policy_defaults_parse() -> None:
    from edgeops.rollout.plan import RolloutPolicy

    for name in ("rollout", "retrain"):
        RolloutPolicy.from_json(DEPLOYMENTS[name]["parameters"]["policy"])

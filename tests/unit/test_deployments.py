"""deployments/prefect.yaml stays true to the code and portable: every entrypoint is a flow that accepts the
parameters the deployment passes and describes each of them for the UI, every trigger is one Prefect can load,
and nothing in it ties a run to the deploying checkout or carries a broker, a key or a password."""

import inspect
import json
import re
from pathlib import Path
from typing import Any

import prefect
import pytest
import yaml
from prefect import Flow
from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger
from prefect.utilities.callables import parameter_schema
from prefect.utilities.importtools import import_object

pytestmark = pytest.mark.unit

DEPLOY_DIR = Path(__file__).parents[2] / "deployments"
SPEC = yaml.safe_load((DEPLOY_DIR / "prefect.yaml").read_text())
DEPLOYMENTS = {d["name"]: d for d in SPEC["deployments"]}
FLOWS = ("edgeops.flows.pipeline:pipeline_flow", "edgeops.flows.rollout:rollout_flow",
         "edgeops.flows.retrain:retrain_flow", "edgeops.flows.monitor:monitor_flow")
SECRET_WORDS = re.compile(r"pass(word)?|secret|token|username|(^|_)key(s|_dir)?$")
"""Parameter names that would put a credential (or where one lives) into Prefect's stored parameters."""


def load_flow(entrypoint: str) -> Flow[..., Any]:
    """The way a worker loads it: a module path of the installed package, no checkout needed."""
    return import_object(entrypoint)


def test_the_loop_has_its_deployments_on_the_process_pool() -> None:
    assert {"pipeline", "rollout", "monitor", "retrain"} <= set(DEPLOYMENTS)
    assert {d["work_pool"]["name"] for d in DEPLOYMENTS.values()} == {"edgeops-process"}
    assert {d["entrypoint"] for d in DEPLOYMENTS.values()} == set(FLOWS)


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


@pytest.mark.parametrize("entrypoint", FLOWS)
def test_every_parameter_has_a_description_the_ui_shows(entrypoint: str) -> None:
    schema = parameter_schema(load_flow(entrypoint)).model_dump()
    missing = [name for name, prop in schema["properties"].items() if not prop.get("description")]
    assert not missing, f"{entrypoint}: no docstring Args entry for {missing}"


@pytest.mark.parametrize("entrypoint", FLOWS)
def test_no_flow_takes_a_credential_as_a_parameter(entrypoint: str) -> None:
    """Prefect stores every parameter with the flow run and shows it in the UI (the MQTT password once was one)."""
    names = list(inspect.signature(load_flow(entrypoint).fn).parameters)
    assert not [n for n in names if SECRET_WORDS.search(n)], names


def test_no_deployment_names_a_broker_a_store_or_a_key() -> None:
    """One config source: rollout, retrain and monitor read the broker and the stores from edgeops.yaml and the
    worker's environment; a broker URL in one deployment (the rollout's mqtt://127.0.0.1:1883) made them
    disagree."""
    for name, deployment in DEPLOYMENTS.items():
        assert not {"broker_url", "prefix", "db_path", "db", "keys_dir", "health_db", "registry_root"} \
            & set(deployment.get("parameters", {})), name


def test_code_comes_from_git_not_from_the_deploying_checkout() -> None:
    (step,) = SPEC["pull"]
    (name, inputs), = step.items()
    assert name == "prefect.deployments.steps.git_clone"
    assert inputs == {"repository": "{{ prefect.variables.edgeops_git_repository }}",
                      "branch": "{{ prefect.variables.edgeops_git_branch }}"}
    assert not any("pull" in d for d in DEPLOYMENTS.values())  # no deployment goes back to a local directory
    text = (DEPLOY_DIR / "prefect.yaml").read_text()
    assert "set_working_directory" not in text and not re.search(r"^\s*[^#]*\s/(home|work|root|Users)/", text, re.M)


def test_prefect_version_is_the_installed_minor_release() -> None:
    assert SPEC["prefect-version"].split(".")[:2] == prefect.__version__.split(".")[:2]


def test_the_retrain_trigger_has_no_window_that_swallows_events() -> None:
    """Reactive, one run per event: a counting window dropped every event in the hour after a failed retrain.
    The cooldown lives in the flow, which defers instead (edgeops.retrain.cooldown)."""
    (trigger,) = DEPLOYMENTS["retrain"]["triggers"]
    parsed = DeploymentEventTrigger.model_validate(trigger)
    assert parsed.posture == "Reactive" and parsed.threshold == 1 and parsed.within.total_seconds() == 0
    assert set(trigger["parameters"]) == {"model", "drift", "event_id"}
    assert "data" not in DEPLOYMENTS["retrain"]["parameters"]  # each model's own source, from edgeops.yaml


def test_rollout_policy_defaults_parse() -> None:
    from edgeops.rollout.plan import RolloutPolicy

    for name in ("rollout", "retrain"):
        RolloutPolicy.from_json(DEPLOYMENTS[name]["parameters"]["policy"])


@pytest.mark.parametrize("kind", ["docker", "kubernetes"])
def test_container_work_pool_templates_use_only_declared_variables(kind: str) -> None:
    template = json.loads((DEPLOY_DIR / "work-pools" / f"{kind}.json").read_text())
    declared = set(template["variables"]["properties"])
    used = set(re.findall(r"\{\{\s*([a-z_]+)\s*\}\}", json.dumps(template["job_configuration"])))
    assert used <= declared, sorted(used - declared)
    assert template["variables"]["properties"]["image"]["default"].startswith("edgeops-control:")


def test_the_control_plane_image_has_what_a_flow_run_needs() -> None:
    """No Docker engine here to build it; what can be checked without one: the extra, git for the pull step,
    a non-root user, the wheel it installs."""
    text = (DEPLOY_DIR / "Dockerfile.control-plane").read_text()
    instructions = [line.split()[0] for line in text.splitlines() if line.strip() and not line.startswith(("#", " "))]
    assert instructions[0] == "FROM" and "USER" in instructions
    assert "[control]" in text and re.search(r"apt-get install .*\bgit\b", text)
    assert re.search(r"^USER (?!root)\w+", text, re.M)


def test_the_container_file_deploys_the_same_deployments_onto_the_pool_and_image_it_is_given() -> None:
    containers = yaml.safe_load((DEPLOY_DIR / "prefect.containers.yaml").read_text())
    assert containers["pull"] == SPEC["pull"] and containers["prefect-version"] == SPEC["prefect-version"]
    pool = {"name": "{{ $EDGEOPS_WORK_POOL }}", "job_variables": {"image": "{{ $EDGEOPS_IMAGE }}"}}
    assert [{**d, "work_pool": pool} for d in SPEC["deployments"]] == containers["deployments"]


def test_the_retrain_trigger_speaks_the_event_vocabulary() -> None:
    """The YAML cannot import edgeops.event_names, so this keeps its trigger's names and the code's in step."""
    from edgeops.event_names import MODEL_RESOURCE, RETRAIN_TRIGGERS

    for spec in (SPEC, yaml.safe_load((DEPLOY_DIR / "prefect.containers.yaml").read_text())):
        (trigger,) = next(d for d in spec["deployments"] if d["name"] == "retrain")["triggers"]
        assert trigger["match"] == {"prefect.resource.id": f"{MODEL_RESOURCE}*"}
        assert tuple(trigger["expect"]) == RETRAIN_TRIGGERS

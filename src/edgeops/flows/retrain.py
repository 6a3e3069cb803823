"""Continuous training as a Prefect flow: the ``retrain`` deployment that a drift event starts.

    edgeops.drift.detected (resource edgeops.model.churn)  →  deployment trigger  →  retrain_flow(model=...)
      → the champion's recipe: target, task, estimator, data source (edgeops.retrain.recipe)
      → the cooldown: retrain now, or defer to a scheduled run (flows/retrain_defer.py)
      → pipeline subflow on the model's newest data (gated against the champion; registered as candidate)
      → publish + canary rollout subflow to the devices that run the model (helper F's controller)
      → champion on a completed rollout (edgeops.retrain.steps: the order and why)

Outcomes: ``promoted`` and ``no_devices`` and ``rejected`` (gates failed: no rollout) end the run Completed
with the reason as the state message; ``aborted`` (the canary or a wave failed, devices restored) fails the
run, like `edgeops rollout start` exits non-zero. Every outcome leaves a markdown artifact (what was
retrained and why: the drift event's payload) and an ``edgeops.retrain.<outcome>`` event for automations.
A run that does not retrain ends Completed named ``Deferred`` (the cooldown) or ``Skipped`` (the drift was about
a version that is no longer the champion). Parameters are plain JSON so the deployment trigger can template
them from the event (deployments/prefect.yaml); none of them is a secret (edgeops.credentials).
"""

from pathlib import Path
from typing import Any

from prefect import State, flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.states import Completed

from edgeops.errors import RolloutError
from edgeops.event_names import model_resource, retrain_event
from edgeops.flows import retrain_defer
from edgeops.flows.pipeline import artifact_key, pipeline_flow
from edgeops.flows.rollout import rollout_flow
from edgeops.release.registry import ReleaseRecord
from edgeops.retrain import steps
from edgeops.retrain.cooldown import superseded


@task(name="plan-rollout", cache_policy=NO_CACHE)
def plan_rollout_task(request: steps.RetrainRequest, record: ReleaseRecord) -> str | None:
    """Publish the release and record the staged rollout; the rollout id, or None when no device runs the model."""
    with request.target.client() as client:
        rollout = steps.plan_rollout(client, request, record)
    return None if rollout is None else rollout.id


@task(name="promote", cache_policy=NO_CACHE)
def conclude_task(request: steps.RetrainRequest, record: ReleaseRecord, rollout_id: str) -> ReleaseRecord:
    return steps.conclude(request, record, steps.rollout_store(request.config).get(rollout_id))


def run_rollout(request: steps.RetrainRequest, rollout_id: str, config_path: str | None) -> None:
    """The rollout flow of edgeops as a subflow: its progress/device artifacts and events appear as usual. It
    looks the broker's credentials and the signing key up itself: they are never parameters."""
    rollout_flow(rollout_id=rollout_id, config_path=config_path, broker_url=request.target.broker_url,
                 prefix=request.target.prefix, db_path=steps.rollout_store(request.config).url)


def report(result: steps.RetrainResult) -> None:
    """Artifact + event + log line for every outcome."""
    model = result.request.model
    create_markdown_artifact(markdown=steps.summary_markdown(result), key=artifact_key(model, "retrain"),
                             description=result.headline())
    emit_event(event=retrain_event(result.outcome), resource=model_resource(model),
               payload={k: v for k, v in result.to_json().items() if k != "rollout"})
    get_run_logger().info(result.headline())


@flow(name="edgeops-retrain",
      description="Retrain a drifted model with its champion's recipe on its newest data, gate it, canary-roll it "
                  "out, promote on success.")
def retrain_flow(model: str, data: str | None = None, target: str | None = None, config_path: str | None = None,
                 overrides: dict[str, Any] | None = None, selector: dict[str, str] | None = None,
                 policy: dict[str, Any] | None = None, broker_url: str | None = None, prefix: str | None = None,
                 drift: dict[str, Any] | None = None, event_id: str | None = None) -> State:
    """Retrain ``model`` the way its champion was trained, on the model's own newest data.

    Args:
        model: The model: churn, or edgeops.model.churn (what the drift trigger passes).
        data: Training data instead of the model's own source: a file, a folder (its newest .csv/.parquet) or a
            glob (default: models.<model> in edgeops.yaml, else the source the champion was trained from).
        target: Target column (default: models.<model>.target, else the champion's, else data.target).
        config_path: edgeops.yaml to read (default: $EDGEOPS_CONFIG, else ./edgeops.yaml on the worker).
        overrides: Config keys by dotted name; they win over the champion's recipe, e.g.
            {"retrain.cooldown_s": 0} to skip the cooldown once.
        selector: Device labels the rollout is limited to, e.g. {"site": "berlin"} (only devices running the
            model are updated).
        policy: Rollout policy: canary ("10%" or 0.1), waves, max_failure ("5%"), device_timeout_s.
        broker_url: MQTT broker (default: $EDGEOPS_MQTT_URL, else mqtt.url). Credentials come from the worker's
            environment or Prefect Secret blocks, never from a parameter.
        prefix: Topic prefix (default: mqtt.prefix).
        drift: The drift event's payload (filled by the trigger), shown in the summary.
        event_id: The drift event's id (filled by the trigger).
    """
    trigger = {**(drift or {}), **({"event_id": event_id} if event_id else {})}
    plan = steps.plan_retrain(
        model, data, target=target, config_path=None if config_path is None else Path(config_path),
        overrides=overrides, selector=selector, policy=policy, broker_url=broker_url, prefix=prefix, trigger=trigger)
    before = steps.champion_version(plan)
    if (stale := superseded(drift, before)) is not None:
        return retrain_defer.skip(plan.model, stale, event_id)
    decision = retrain_defer.check_cooldown(plan.model, plan.config.retrain.cooldown_s)
    if decision.action != "run":
        return retrain_defer.defer(plan.model, decision, event_id)
    get_run_logger().info("retraining %s (champion %s; trigger %s): %s; data %s", plan.model, before,
                          event_id or "manual", plan.recipe.describe(), plan.recipe.source.describe())
    with steps.retrain_request(plan) as request:
        return retrain_on(request, plan, before, config_path)


def retrain_on(request: steps.RetrainRequest, plan: steps.RetrainPlan, before: int | None,
               config_path: str | None) -> State:
    """Pipeline subflow, then (gates passed, devices run the model) publish, rollout subflow, promotion."""
    recipe = plan.recipe
    pipeline = pipeline_flow(data=str(request.pipeline.data), model=request.model, target=recipe.target,
                             config_path=config_path, overrides=recipe.overrides, source=recipe.source.to_json())
    record, rollout = pipeline.record, None
    if pipeline.passed:
        rollout_id = plan_rollout_task(request, record)
        if rollout_id is not None:
            run_rollout(request, rollout_id, config_path)
            record = conclude_task(request, record, rollout_id)
            rollout = steps.rollout_store(request.config).get(rollout_id)
    result = steps.RetrainResult(request, steps.outcome_of(pipeline, rollout), pipeline, record, before, rollout)
    report(result)
    if result.outcome == "aborted":
        raise RolloutError(result.headline())
    return Completed(message=result.headline(), data=result.to_json())

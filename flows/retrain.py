"""Continuous training as a Prefect flow: the ``retrain`` deployment that a drift event starts.

    edgeops.drift.detected (resource edgeops.model.churn)  →  deployment trigger  →  retrain_flow(model=...)
      → pipeline subflow on the newest data (gated against the champion; registered as candidate)
      → publish + canary rollout subflow to the devices that run the model (helper F's controller)
      → champion on a completed rollout (edgeops.retrain: the order and why)

Outcomes: ``promoted`` and ``no_devices`` and ``rejected`` (gates failed: no rollout) end the run Completed
with the reason as the state message; ``aborted`` (the canary or a wave failed, devices restored) fails the
run, like `edgeops rollout start` exits non-zero. Every outcome leaves a markdown artifact (what was
retrained and why: the drift event's payload) and an ``edgeops.retrain.<outcome>`` event for automations.
Parameters are plain JSON so the deployment trigger can template them from the event (deployments/prefect.yaml).
"""

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.states import Completed, State

from edgeops import retrain as steps
from edgeops.errors import RolloutError
from edgeops.registry import ReleaseRecord
from flows.pipeline import artifact_key, pipeline_flow
from flows.rollout import rollout_flow


@task(name="plan-rollout", cache_policy=NO_CACHE)
def plan_rollout_task(request: steps.RetrainRequest, record: ReleaseRecord) -> str | None:
    """Publish the release and record the staged rollout; the rollout id, or None when no device runs the model."""
    with request.target.client() as client:
        rollout = steps.plan_rollout(client, request, record)
    return None if rollout is None else rollout.id


@task(name="promote", cache_policy=NO_CACHE)
def conclude_task(request: steps.RetrainRequest, record: ReleaseRecord, rollout_id: str) -> ReleaseRecord:
    return steps.conclude(request, record, steps.rollout_store(request.config).get(rollout_id))


def run_rollout(request: steps.RetrainRequest, rollout_id: str) -> None:
    """The rollout flow of edgeops as a subflow: its progress/device artifacts and events appear as usual."""
    target = request.target
    rollout_flow(broker_url=target.broker_url, db_path=str(steps.rollout_store(request.config).path),
                 prefix=target.prefix, rollout_id=rollout_id, username=target.username, password=target.password,
                 keys_dir=str(request.config.registry.keys_dir),
                 desired_lifetime_days=request.config.rollout.desired_lifetime_days,
                 ca_file=None if target.ca_file is None else str(target.ca_file))


def report(result: steps.RetrainResult) -> None:
    """Artifact + event + log line for every outcome."""
    model = result.request.model
    create_markdown_artifact(markdown=steps.summary_markdown(result), key=artifact_key(model, "retrain"),
                             description=result.headline())
    emit_event(event=f"edgeops.retrain.{result.outcome}",
               resource={"prefect.resource.id": f"{steps.MODEL_RESOURCE}{model}", "prefect.resource.name": model},
               payload={k: v for k, v in result.to_json().items() if k != "rollout"})
    get_run_logger().info(result.headline())


@flow(name="edgeops-retrain", description="Retrain on the newest data, gate, canary-roll out, promote on success.")
def retrain_flow(model: str, data: str = "data", target: str | None = None, config_path: str | None = None,
                 overrides: dict[str, Any] | None = None, selector: dict[str, str] | None = None,
                 policy: dict[str, Any] | None = None, broker_url: str | None = None, prefix: str | None = None,
                 drift: dict[str, Any] | None = None, event_id: str | None = None) -> State:
    """Retrain ``model`` (a name or ``edgeops.model.<name>``) on ``data`` (a file, or a directory: its newest
    .csv/.parquet). ``drift`` is the triggering event's payload, kept for the summary."""
    trigger = {**(drift or {}), **({"event_id": event_id} if event_id else {})}
    request = steps.make_retrain_request(
        model, Path(data), target=target, config_path=None if config_path is None else Path(config_path),
        overrides=overrides, selector=selector, policy=policy, broker_url=broker_url, prefix=prefix, trigger=trigger)
    before = steps.champion_version(request)
    get_run_logger().info("retraining %s on %s (champion %s; trigger %s)", request.model, request.pipeline.data,
                          before, event_id or "manual")
    pipeline = pipeline_flow(data=str(request.pipeline.data), model=request.model, target=target,
                             config_path=config_path, overrides=overrides)
    record, rollout = pipeline.record, None
    if pipeline.passed:
        rollout_id = plan_rollout_task(request, record)
        if rollout_id is not None:
            run_rollout(request, rollout_id)
            record = conclude_task(request, record, rollout_id)
            rollout = steps.rollout_store(request.config).get(rollout_id)
    result = steps.RetrainResult(request, steps.outcome_of(pipeline, rollout), pipeline, record, before, rollout)
    report(result)
    if result.outcome == "aborted":
        raise RolloutError(result.headline())
    return Completed(message=result.headline(), data=result.to_json())

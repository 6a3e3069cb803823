"""The retrain's cooldown against Prefect: read the model's other retrain runs, decide with
edgeops.retrain.cooldown, and when the answer is "later" schedule a run of the same deployment with the same
parameters for the end of the cooldown — so a drift event is deferred, never dropped — and say so in the UI:
the run ends Completed with the state name ``Deferred`` and a message naming the scheduled run, a markdown
artifact ``<model>-retrain-deferred``, an ``edgeops.retrain.deferred`` event, and a warning in the log.

Only deployment runs have a cooldown: a run started in-process (``retrain_flow(...)`` in Python) was asked for
by a person, and there is no deployment to schedule a deferred run of.
"""

from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import State, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.deployments import run_deployment
from prefect.events import emit_event
from prefect.runtime import deployment as deployment_ctx
from prefect.runtime import flow_run as flow_run_ctx
from prefect.states import Completed

from edgeops.errors import ConfigError
from edgeops.event_names import RETRAIN_DEFERRED, RETRAIN_SKIPPED, model_resource
from edgeops.flows.pipeline import artifact_key
from edgeops.retrain.cooldown import STALE_S, Decision, RetrainRun, RunStatus, decide, decision_time
from edgeops.retrain.steps import model_name

FLOW_NAME = "edgeops-retrain"
DEFERRED, SKIPPED = "Deferred", "Skipped"
"""State names of runs that ended without retraining; they do not count for the cooldown."""
ACTIVE = {StateType.PENDING, StateType.RUNNING, StateType.PAUSED, StateType.CANCELLING}


def run_status(run: FlowRun) -> RunStatus:
    state = run.state
    if state is None:
        return "other"
    if state.type == StateType.SCHEDULED:
        return "scheduled"
    if state.type in ACTIVE:
        return "active"
    if state.type == StateType.COMPLETED and state.name not in (DEFERRED, SKIPPED):
        return "retrained"
    return "other"


def runs_of(model: str, runs: list[FlowRun]) -> list[RetrainRun]:
    """The runs whose ``model`` parameter names ``model`` (``churn`` or ``edgeops.model.churn``)."""
    out = []
    for run in runs:
        try:
            same = model_name(str(run.parameters.get("model", ""))) == model
        except ConfigError:
            same = False
        if same:
            out.append(RetrainRun(id=str(run.id), created=run.created or datetime.now(UTC), status=run_status(run),
                                  ended=run.end_time, scheduled_for=run.expected_start_time))
    return out


def check_cooldown(model: str, cooldown_s: float) -> Decision:
    """The decision for this flow run; "run" outside a deployment (module doc)."""
    if deployment_ctx.id is None:
        return Decision("run")
    with get_client(sync_client=True) as client:
        me = client.read_flow_run(flow_run_ctx.id)
        now = decision_time(datetime.now(UTC), me.expected_start_time)
        since = now - timedelta(seconds=STALE_S + cooldown_s)
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME])),
            # pydantic takes the datetime; the field names Prefect's DateTime subclass of it
            flow_run_filter=FlowRunFilter(expected_start_time=FlowRunFilterExpectedStartTime(
                after_=since)),  # type: ignore[arg-type]
            sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=200)
    return decide(str(me.id), me.created or now, runs_of(model, runs), cooldown_s, now)


def defer(model: str, decision: Decision, event_id: str | None) -> State:
    """Schedule the deferred run (unless one is already scheduled) and report the deferral."""
    scheduled: str | None = None
    if decision.action == "defer":
        assert decision.until is not None and decision.because is not None
        run = run_deployment(
            name=deployment_ctx.id, parameters=dict(flow_run_ctx.parameters), scheduled_time=decision.until,
            timeout=0, as_subflow=False, tags=["edgeops", "deferred"],
            flow_run_name=f"{model}-deferred-{decision.until:%Y%m%d-%H%M%S}",
            idempotency_key=f"edgeops-retrain-{model}-after-{decision.because.id}-from-{flow_run_ctx.id}")
        assert isinstance(run, FlowRun)   # sync code: async_dispatch returned the run, not a coroutine
        scheduled = str(run.id)
    elif decision.because is not None:
        scheduled = decision.because.id
    reason = decision.reason(model)
    message = f"{reason}; the retrain runs in flow run {scheduled}" if scheduled else reason
    until = decision.until or (decision.because.scheduled_for if decision.because else None)
    payload: dict[str, Any] = {"model": model, "reason": reason, "scheduled_flow_run": scheduled,
                               "until": None if until is None else until.isoformat(timespec="seconds"),
                               "because_flow_run": None if decision.because is None else decision.because.id,
                               "event_id": event_id}
    emit_event(event=RETRAIN_DEFERRED, payload=payload, resource=model_resource(model))
    create_markdown_artifact(key=artifact_key(model, "retrain-deferred"), description=message, markdown="\n".join(
        [f"# Retrain {model}: deferred", "", message, "", *[f"- **{k}**: {v}" for k, v in payload.items()]]))
    get_run_logger().warning("retrain of %s %s", model, message)
    return Completed(name=DEFERRED, message=message, data=payload)


def skip(model: str, reason: str, event_id: str | None) -> State:
    """A drift event that no longer asks for a retrain (edgeops.retrain.cooldown.superseded)."""
    message = f"nothing to retrain: {reason}"
    emit_event(event=RETRAIN_SKIPPED, payload={"model": model, "reason": reason, "event_id": event_id},
               resource=model_resource(model))
    get_run_logger().info("retrain of %s: %s", model, message)
    return Completed(name=SKIPPED, message=message, data={"model": model, "outcome": "skipped", "reason": reason})

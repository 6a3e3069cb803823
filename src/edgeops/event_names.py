"""The Prefect event vocabulary of edgeops: every event name and resource id the control plane emits or
matches, in one place. Automations, triggers and docs/monitoring.md name these; a rename starts here.

Resources: ``edgeops.model.{name}``, ``edgeops.device.{id}``, ``edgeops.rollout.{id}``. Events are
``edgeops.{subject}.{what}``. No Prefect import: the names are plain strings that the telemetry store, the
flows and the demo share (deployments/prefect.yaml spells the trigger's names too; tests/unit/test_deployments.py
keeps it true to these).
"""

MODEL_RESOURCE = "edgeops.model."
"""Prefix of a model's resource id (``edgeops.model.churn``); a drift event about a model names one."""
DEVICE_RESOURCE = "edgeops.device."
ROLLOUT_RESOURCE = "edgeops.rollout."

DRIFT_DETECTED = "edgeops.drift.detected"
HEALTH_DEGRADED = "edgeops.health.degraded"
PERFORMANCE_DEGRADED = "edgeops.performance.degraded"
RETRAIN_DEFERRED = "edgeops.retrain.deferred"
RETRAIN_SKIPPED = "edgeops.retrain.skipped"
RETRAIN_TRIGGERS: tuple[str, ...] = (DRIFT_DETECTED, PERFORMANCE_DEGRADED)
"""The events a retrain deployment's trigger expects (about a model: ``edgeops.model.*``)."""


def device_event(status: str) -> str:
    """``edgeops.device.online`` / ``offline``."""
    return f"{DEVICE_RESOURCE}{status}"


def model_event(event: str) -> str:
    """``edgeops.model.installed`` / ``rejected`` / ``rolled_back`` (what an agent reported)."""
    return f"{MODEL_RESOURCE}{event}"


def release_event(status: str) -> str:
    """``edgeops.release.registered`` / ``rejected``."""
    return f"edgeops.release.{status}"


def retrain_event(outcome: str) -> str:
    """``edgeops.retrain.promoted`` / ``rejected`` / ``no_devices`` / ``aborted``."""
    return f"edgeops.retrain.{outcome}"


def rollout_event(kind: str) -> str:
    """``edgeops.rollout.started`` / ``wave.completed`` / ``completed`` / ``aborted``."""
    return f"{ROLLOUT_RESOURCE}{kind}"


def model_resource(model: str, role: str | None = None) -> dict[str, str]:
    """The model as a Prefect resource, or as a related resource when it has a ``role``."""
    resource = {"prefect.resource.id": f"{MODEL_RESOURCE}{model}"}
    if role is not None:
        resource["prefect.resource.role"] = role
    resource["prefect.resource.name"] = model
    return resource


def device_resource(device: str) -> dict[str, str]:
    return {"prefect.resource.id": f"{DEVICE_RESOURCE}{device}", "prefect.resource.name": device}


def rollout_resource(rollout_id: str) -> dict[str, str]:
    return {"prefect.resource.id": f"{ROLLOUT_RESOURCE}{rollout_id}", "prefect.resource.name": rollout_id}


__all__ = ["DEVICE_RESOURCE", "DRIFT_DETECTED", "HEALTH_DEGRADED", "MODEL_RESOURCE", "PERFORMANCE_DEGRADED",
           "RETRAIN_DEFERRED", "RETRAIN_SKIPPED", "RETRAIN_TRIGGERS", "ROLLOUT_RESOURCE", "device_event",
           "device_resource", "model_event", "model_resource", "release_event", "retrain_event", "rollout_event",
           "rollout_resource"]

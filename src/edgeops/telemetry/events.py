"""Prefect events the telemetry side raises: device presence, model lifecycle, drift, health and performance.

The store and the ingest service only *describe* events (``EventSpec``) and hand them to an injectable
``Emitter`` callable, so they can be tested without Prefect. ``emit_to_prefect`` is the production emitter; it
imports Prefect lazily so ``edgeops.telemetry`` stays importable where Prefect is absent.

Resources follow docs/monitoring.md: the resource is ``edgeops.device.{id}`` (or ``edgeops.model.{name}``
for fleet-wide drift), related resources carry a ``prefect.resource.role``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from edge_agent.protocol import AgentEvent
from edgeops import event_names as names
from edgeops.event_names import device_resource, model_resource

log = logging.getLogger("edgeops.telemetry")


@dataclass(frozen=True)
class EventSpec:
    event: str
    resource: dict[str, str]
    related: tuple[dict[str, str], ...] = ()
    payload: dict[str, Any] = field(default_factory=dict)
    occurred: datetime | None = None


Emitter = Callable[[EventSpec], object]


def presence_event(device: str, status: str, ts: str, occurred: datetime | None = None) -> EventSpec:
    """``edgeops.device.online`` / ``edgeops.device.offline`` when a device's presence changes."""
    return EventSpec(names.device_event(status), device_resource(device), payload={"ts": ts}, occurred=occurred)


def model_event(event: AgentEvent, occurred: datetime | None = None) -> EventSpec:
    """``edgeops.model.installed|rejected|rolled_back`` about a device, related to the model."""
    return EventSpec(names.model_event(event.event), device_resource(event.device),
                     related=(model_resource(event.model, role="model"),),
                     payload={"model": event.model, "version": event.version, "reason": event.reason,
                              "rollout_id": event.rollout_id, "ts": event.ts},
                     occurred=occurred)


def scope_resource(model: str, device: str | None) -> tuple[dict[str, str], tuple[dict[str, str], ...]]:
    """Fleet-wide findings are about the model; per-device ones about the device, related to the model."""
    if device is None:
        return model_resource(model), ()
    return device_resource(device), (model_resource(model, role="model"),)


def drift_event(model: str, version: int, device: str | None, payload: dict[str, Any]) -> EventSpec:
    resource, related = scope_resource(model, device)
    return EventSpec(names.DRIFT_DETECTED, resource, related, {"model": model, "version": version, **payload})


def health_event(model: str, version: int, device: str | None, payload: dict[str, Any]) -> EventSpec:
    resource, related = scope_resource(model, device)
    return EventSpec(names.HEALTH_DEGRADED, resource, related, {"model": model, "version": version, **payload})


def performance_event(model: str, version: int, device: str | None, payload: dict[str, Any]) -> EventSpec:
    """``edgeops.performance.degraded``: performance (estimated without labels) fell below the release's own."""
    resource, related = scope_resource(model, device)
    return EventSpec(names.PERFORMANCE_DEGRADED, resource, related,
                     {"model": model, "version": version, **payload})


def emit_to_prefect(spec: EventSpec) -> object:
    """Emit through Prefect's events client (buffered; sent by Prefect's worker thread). Returns the Event, or
    None when Prefect has no events backend configured."""
    from prefect.events import emit_event

    return emit_event(event=spec.event, resource=spec.resource, related=list(spec.related), payload=spec.payload,
                      occurred=spec.occurred)


def discard(spec: EventSpec) -> None:
    """An emitter that drops events (ingest without Prefect)."""
    log.debug("event %s for %s not emitted (no emitter)", spec.event, spec.resource["prefect.resource.id"])

"""Does each service of the stack answer? The broker with a CONNACK, the Prefect server on /api/health, the ingest
by its own word (subscribed, ``telemetry serve --ready-file``), the monitor by Prefect's (its deployment is
``READY`` while the serving process polls for runs). ``edgeops up`` waits for these; ``edgeops status`` shows them.
"""

import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from edgeops.config import MqttConfig
from edgeops.errors import EdgeopsError
from edgeops.stack.services import api_healthy, deployment_status, ingest_subscribed
from edgeops.stack.state import BROKER, INGEST, MONITOR, PREFECT, Service, StackState

PROBE_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    pid: int | None
    running: bool | None
    """The process the stack started still runs; None for a broker the stack did not start."""
    url: str | None
    answering: bool
    detail: str = ""
    log: str | None = None

    @property
    def ok(self) -> bool:
        return self.running is not False and self.answering

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def probe_credentials(mqtt: MqttConfig) -> MqttConfig:
    """The username and password the stack's own services connect with: $EDGEOPS_MQTT_USERNAME and
    $EDGEOPS_MQTT_PASSWORD win over edgeops.yaml, as in edgeops.credentials. (Not its Secret blocks: reading one
    needs the Prefect API, which a probe must not wait for or start.)"""
    from edgeops.credentials import MQTT_PASSWORD_ENV, MQTT_USERNAME_ENV

    return replace(mqtt, username=os.environ.get(MQTT_USERNAME_ENV) or mqtt.username,
                   password=os.environ.get(MQTT_PASSWORD_ENV) or mqtt.password)


def broker_problem(url: str, mqtt: MqttConfig | None = None, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """None when the broker at ``url`` accepts a connection (CONNACK), else why not. ``mqtt``: the project's
    broker settings, whose credentials (with the environment's, which win) the probe connects with; None for a
    broker of the stack's own (anonymous)."""
    from edgeops.mqtt import ControlClient

    mqtt = MqttConfig() if mqtt is None else probe_credentials(mqtt)
    try:
        ControlClient(url, username=mqtt.username, password=mqtt.password, ca_file=mqtt.ca_file,
                      timeout_s=timeout_s).connect().close()
    except EdgeopsError as exc:
        return str(exc)
    return None


def answers(state: StackState, service: Service, mqtt: MqttConfig | None = None) -> tuple[bool, str]:
    """(answering, detail) of one service."""
    if service.name == BROKER:
        problem = broker_problem(state.broker_url, mqtt)
        return problem is None, problem or "CONNACK"
    if service.name == PREFECT:
        healthy = api_healthy(state.prefect_api_url)
        return healthy, "/api/health ok" if healthy else "/api/health does not answer"
    if service.name == INGEST:
        if service.pid is not None and ingest_subscribed(Path(state.ingest_ready_file), service.pid):
            return True, "subscribed"
        return False, "not subscribed"
    if service.name == MONITOR:
        status = deployment_status(state.prefect_api_url, state.monitor_deployment)
        return status == "READY", f"deployment {state.monitor_deployment}: {status or 'unknown to the server'}"
    return False, "unknown service"


def probe_stack(state: StackState, mqtt: MqttConfig | None = None) -> list[ServiceStatus]:
    """Every service, the broker first (also one the stack did not start)."""
    services = list(state.services)
    if state.service(BROKER) is None:
        services.insert(0, Service(BROKER, url=state.broker_url))
    statuses = []
    for service in services:
        running = None if service.pid is None else service.running()
        answering, detail = answers(state, service, mqtt) if running is not False else (False, "not running")
        if running is None:
            detail += " (a broker this stack uses but did not start)"
        statuses.append(ServiceStatus(service.name, service.pid, running, service.url, answering, detail,
                                      service.log))
    return statuses


__all__ = ["ServiceStatus", "answers", "broker_problem", "probe_credentials", "probe_stack"]

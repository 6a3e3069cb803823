"""The Prefect side of ``edgeops demo``: a local ``prefect server``, the served deployments, and what the demo
reads back through the API (monitor runs and their drift report, the drift event, the retrain run).

Everything here talks to the Prefect API over HTTP like any client would; the flows themselves run in the
serving process (flows/serve_demo.py), never in the demo's own process. The server and the serving process are
started the way ``edgeops up`` starts its own (stack/services.py).
"""

import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import httpx

from edgeops.event_names import DRIFT_DETECTED, MODEL_RESOURCE
from edgeops.stack.supervisor import Child, ServiceError, Supervisor

DRIFT_REPORT_KEY = "edgeops-drift-report"
_SCOPE_HEADER = re.compile(r"^## (?P<model>[^@\s]+)@(?P<version>\d+): \*\*(?P<verdict>\w+)\*\*")
_FEATURE_ROW = re.compile(r"^\| (?P<name>[^|]+?) \| (?P<n>\d+) \| (?P<psi>[^|]*) \| [^|]* \| [^|]* \| "
                          r"(?P<verdict>\w+) \|$")


@dataclass
class ScopeVerdict:
    """One model version's fleet-wide verdict, as the monitor's drift report artifact states it."""

    release: str
    verdict: str
    drifted: list[str] = field(default_factory=list)
    rows: list[str] = field(default_factory=list)


def parse_drift_report(markdown: str) -> list[ScopeVerdict]:
    """The fleet sections of ``edgeops-drift-report`` (telemetry/report.py): verdict and drifted rows."""
    scopes: list[ScopeVerdict] = []
    for line in markdown.splitlines():
        header = _SCOPE_HEADER.match(line)
        if header:
            scopes.append(ScopeVerdict(f"{header['model']}@{header['version']}", header["verdict"]))
            continue
        row = _FEATURE_ROW.match(line)
        if row and scopes and row["name"] != "feature":
            scopes[-1].rows.append(line)
            if row["verdict"] == "drift":
                scopes[-1].drifted.append(row["name"])
    return scopes


class PrefectView:
    """The few API calls the demo makes (sync client); use inside ``temporary_settings`` for ``api_url``."""

    def __init__(self, api_url: str) -> None:
        from prefect.client.orchestration import get_client

        self.api_url = api_url
        self.client = get_client(sync_client=True)
        self.client.__enter__()

    def close(self) -> None:
        self.client.__exit__(None, None, None)

    def deployment_id(self, name: str) -> UUID | None:
        from prefect.exceptions import ObjectNotFound

        try:
            return self.client.read_deployment_by_name(name).id
        except ObjectNotFound:
            return None

    def has_trigger_for(self, deployment_id: UUID) -> bool:
        return any(getattr(action, "deployment_id", None) == deployment_id
                   for automation in self.client.read_automations() for action in automation.actions)

    def start_run(self, deployment_id: UUID) -> UUID:
        return self.client.create_flow_run_from_deployment(deployment_id).id

    def run_state(self, run_id: UUID) -> tuple[str, str, bool]:
        """(state name, message, final?) of a flow run."""
        run = self.client.read_flow_run(run_id)
        state = run.state
        if state is None:
            return "Pending", "", False
        return state.name or state.type.value.title(), state.message or "", state.is_final()

    def run_name(self, run_id: UUID) -> str:
        return self.client.read_flow_run(run_id).name

    def runs_of(self, deployment_id: UUID, since: datetime) -> list[Any]:
        """Runs of the deployment created since ``since``: on a server of the user's, the deployment (same
        flow, same name) may carry the runs of an earlier demo."""
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

        runs = self.client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))
        return [r for r in runs if r.created is not None and r.created >= since]

    def artifact_markdown(self, run_id: UUID, key: str) -> str | None:
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

        artifacts = self.client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
        return next((str(a.data) for a in artifacts if a.key == key), None)

    def drift_events(self, model: str, since: datetime) -> list[dict[str, Any]]:
        """Stored ``edgeops.drift.detected`` events about the model (fleet-wide), oldest first."""
        body = {"filter": {"event": {"name": [DRIFT_DETECTED]},
                           "resource": {"id": [f"{MODEL_RESOURCE}{model}"]},
                           "occurred": {"since": since.astimezone(UTC).isoformat()}}, "limit": 50}
        try:
            response = httpx.post(f"{self.api_url}/events/filter", json=body, timeout=10)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise ServiceError(f"Prefect events API: {exc}") from exc
        return sorted(response.json()["events"], key=lambda e: e["occurred"])


def wait_served(view: PrefectView, serving: Child, supervisor: Supervisor, names: list[str],
                timeout_s: float) -> dict[str, UUID]:
    """Wait until every deployment exists (and the retrain trigger's automation); their ids by name."""
    found: dict[str, UUID] = {}

    def ready() -> bool:
        for name in names:
            if name not in found:
                deployment = view.deployment_id(name)
                if deployment is not None:
                    found[name] = deployment
        return len(found) == len(names) and any(view.has_trigger_for(d) for d in found.values())

    supervisor.wait_until(serving, ready, timeout_s, "served deployments")
    return found


def wait_final(view: PrefectView, run_id: UUID, deadline: float, poll_s: float = 0.5) -> tuple[str, str]:
    """Poll until the run is final or the monotonic ``deadline`` passes; (state name, message)."""
    while True:
        name, message, final = view.run_state(run_id)
        if final or time.monotonic() > deadline:
            return name, message
        time.sleep(poll_s)


__all__ = ["DRIFT_REPORT_KEY", "PrefectView", "ScopeVerdict", "parse_drift_report", "wait_final", "wait_served"]

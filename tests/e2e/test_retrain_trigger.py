"""The continuous-training loop closed for real: a `prefect server start` of our own, the retrain deployment
with the trigger of deployments/prefect.yaml served from another process, an ``edgeops.drift.detected``
event, and the run it starts: pipeline on shifted data → churn@2 → canary rollout to simulated devices on
Mosquitto → champion. A second event of the same drift episode must not start a second run (cooldown)."""

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
)
from prefect.client.schemas.objects import FlowRun
from prefect.events import Event
from prefect.events.clients import PrefectEventsClient
from prefect.settings import PREFECT_API_URL, temporary_settings
from services import free_port

from edge_agent.protocol import Topics
from edgeops.mqtt import ControlClient
from edgeops.pipeline import make_request, run_pipeline
from edgeops.registry import Registry
from edgeops.samples import make_sample, make_shifted_sample
from edgeops.signing import generate_keys, key_paths, load_public_key
from edgeops.simulate import SimDevice, SimFleet

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
PREFECT = Path(sys.executable).with_name("prefect")
DEADLINE_S = 120.0
DRIFT = {"model": "churn", "version": 1, "scope": "fleet", "windows": 12, "devices": 3,
         "drifted": ["monthly charges", "tenure months"], "js": {"monthly charges": 0.21, "tenure months": 0.12},
         "psi": {"monthly charges": 0.62, "tenure months": 0.35}}
SERVE = """
import json, sys
from prefect import serve
from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger
from flows.retrain import retrain_flow
spec = json.loads(sys.argv[1])
trigger = DeploymentEventTrigger(**spec["trigger"])
serve(retrain_flow.to_deployment(name="retrain", parameters=spec["parameters"], triggers=[trigger]))
"""


def prefect_env(home: Path, api_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "EDGEOPS_MQTT_URL"}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PYTHONPATH=os.pathsep.join((str(ROOT / "src"), str(ROOT))),  # this checkout's edgeops and flows
               PREFECT_RUNNER_POLL_FREQUENCY="1", PREFECT_LOGGING_LEVEL="INFO")
    if api_url:
        env.update(PREFECT_API_URL=api_url, PREFECT_UI_API_URL=api_url)
    return env


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group we started (the runner's flow-run children too), then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def log_tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


@pytest.fixture
def prefect_server(tmp_path: Path) -> Iterator[str]:
    """`prefect server start` on a free port with its own PREFECT_HOME (so its own SQLite database)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    log = tmp_path / "prefect-server.log"
    env = prefect_env(tmp_path / "prefect-home", None)
    env.update(PREFECT_UI_API_URL=url)
    with log.open("wb") as out:
        proc = subprocess.Popen([str(PREFECT), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"prefect server did not become healthy:\n{log_tail(log)}")
            time.sleep(0.2)
        yield url
    finally:
        stop(proc)


@pytest.fixture
def project(tmp_path: Path, session_broker: str, topic_prefix: str) -> Iterator[Path]:
    """Keys, edgeops.yaml (test broker and prefix), champion churn@1, and a data dir holding shifted data."""
    work = tmp_path / "project"
    generate_keys(work / ".edgeops/keys")
    (work / "edgeops.yaml").write_text(yaml.safe_dump({
        "name": "churn", "data": {"target": "churned"}, "mqtt": {"url": session_broker, "prefix": topic_prefix}}))
    make_sample("binary", 400, seed=4).to_csv(work / "initial.csv", index=False)
    run_pipeline(make_request(work / "initial.csv", config_path=work / "edgeops.yaml"))
    (work / "data").mkdir()
    make_shifted_sample("binary", 400, seed=3).to_csv(work / "data" / "extract-2026-11.csv", index=False)
    yield work
    with ControlClient(session_broker) as client:
        client.publish_many((t, b"", True) for t in client.collect_retained(f"{topic_prefix}/#"))


def retrain_trigger() -> dict[str, Any]:
    """The trigger exactly as deployments/prefect.yaml declares it."""
    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    stanza = next(d for d in spec["deployments"] if d["name"] == "retrain")
    assert stanza["entrypoint"] == "flows/retrain.py:retrain_flow"
    (trigger,) = stanza["triggers"]
    return trigger


def wait_for(what: str, fn: Any, deadline: float, logs: Path) -> Any:
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}; runner log:\n{log_tail(logs)}")
        time.sleep(0.25)


async def emit(url: str, events: list[Event]) -> None:
    async with PrefectEventsClient(api_url=url) as client:
        for event in events:
            await client.emit(event)


def drift_event() -> Event:
    return Event(event="edgeops.drift.detected", id=uuid4(), payload=DRIFT,
                 resource={"prefect.resource.id": "edgeops.model.churn", "prefect.resource.name": "churn"})


def event_stored(url: str, event_id: UUID) -> bool:
    body = {"filter": {"id": {"id": [str(event_id)]}, "occurred": {"since": "2000-01-01T00:00:00Z"}}, "limit": 1}
    response = httpx.post(f"{url}/events/filter", json=body, timeout=10)
    response.raise_for_status()
    return bool(response.json()["events"])


def test_drift_event_triggers_one_retrain_that_rolls_out_and_promotes(
        prefect_server: str, project: Path, session_broker: str, topic_prefix: str, tmp_path: Path) -> None:
    trigger = retrain_trigger()
    parameters = {"data": str(project / "data"), "config_path": str(project / "edgeops.yaml"),
                  "policy": {"canary": "34%", "waves": 1, "device_timeout_s": 30}}
    key = (load_public_key(key_paths(project / ".edgeops/keys")[1]),)
    sims = [SimDevice(f"edge-{i}", labels={"site": "plant-1"}, model="churn", version=1, state="serving",
                      public_keys=key) for i in range(3)]
    runner_log = tmp_path / "runner.log"
    with runner_log.open("wb") as out:
        runner = subprocess.Popen([sys.executable, "-c", SERVE, json.dumps({"trigger": trigger,
                                                                            "parameters": parameters})],
                                  cwd=ROOT, env=prefect_env(tmp_path / "runner-home", prefect_server),
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        with SimFleet(session_broker, Topics(topic_prefix), sims) as fleet, \
                temporary_settings({PREFECT_API_URL: prefect_server}), get_client(sync_client=True) as client:
            deadline = time.monotonic() + DEADLINE_S
            deployment = wait_for("the served deployment", lambda: next(iter(client.read_deployments()), None),
                                  deadline, runner_log)
            wait_for("its trigger's automation", lambda: any(
                getattr(action, "deployment_id", None) == deployment.id
                for automation in client.read_automations() for action in automation.actions), deadline, runner_log)

            first, repeat = drift_event(), drift_event()
            emitted = time.time()
            asyncio.run(emit(prefect_server, [first, repeat]))
            sent = time.time()

            runs_filter = DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))

            def runs() -> list[FlowRun]:
                return client.read_flow_runs(deployment_filter=runs_filter, flow_run_filter=FlowRunFilter())

            deadline = time.monotonic() + DEADLINE_S
            found = wait_for("a flow run of the retrain deployment", runs, deadline, runner_log)
            assert len(found) == 1, f"one drift episode started {len(found)} runs"
            seen = time.time()
            run = wait_for("the retrain run to finish", lambda: next(
                (r for r in runs() if r.state and r.state.is_final()), None), deadline, runner_log)
            assert run.state is not None and run.state.is_completed(), \
                f"{run.state}: {run.state.message if run.state else ''}\n{log_tail(runner_log)}"
            wait_for("the repeated event to be stored", lambda: event_stored(prefect_server, repeat.id), deadline,
                     runner_log)
            assert len(runs()) == 1  # the second event of the episode fell in the cooldown window

            assert run.parameters["model"] == "edgeops.model.churn"
            assert run.parameters["drift"] == DRIFT  # the event's payload, templated in by the trigger
            assert run.parameters["event_id"] in (str(first.id), str(repeat.id))  # whichever was evaluated first
            assert "promoted to champion" in (run.state.message or "")
            assert Registry(project / ".edgeops/registry").champion("churn").version == 2  # type: ignore[union-attr]
            assert all(d.version == 2 and d.installs == 1 for d in fleet.devices.values())
            artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
            summary = next(str(a.data) for a in artifacts if a.key == "churn-retrain")
            assert "monthly charges" in summary and "extract-2026-11.csv" in summary

            created, started, ended = run.created, run.start_time, run.end_time
            assert created is not None and started is not None and ended is not None
            print(f"\nemit call {sent - emitted:.2f}s; emitted → run created {created.timestamp() - emitted:.2f}s "
                  f"(seen by polling after {seen - emitted:.2f}s), created → started "
                  f"{(started - created).total_seconds():.2f}s, started → completed "
                  f"{(ended - started).total_seconds():.2f}s, event → completed {ended.timestamp() - emitted:.2f}s")
    finally:
        stop(runner)

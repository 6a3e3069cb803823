"""A staged rollout as a Prefect flow run: the controller of edgeops.rollout does the work; this wrapper adds
a progress artifact, a device table artifact, and the ``edgeops.rollout.*`` events the UI and automations
react to (a deployment trigger may, for instance, page someone on ``edgeops.rollout.aborted``).

Parameters are plain JSON so the flow can also run as a deployment. ``edgeops rollout start`` plans the
rollout first (so a refused rollout fails before any Prefect start-up cost) and then runs this flow in-process
with the new ``rollout_id``; ``edgeops rollout resume`` runs it with an existing id.

No parameter carries a secret or the broker: Prefect stores parameters and shows them in its UI. The broker,
its credentials and the signing key come from edgeops.yaml and the worker's environment or Prefect Secret
blocks (edgeops.credentials), the same source every flow of edgeops reads.
"""

import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.client.orchestration import get_client
from prefect.events import emit_event
from prefect.runtime import flow_run as flow_run_ctx
from prefect.states import Crashed

from edge_agent.protocol import Topics
from edgeops.config import load_config
from edgeops.credentials import mqtt_settings
from edgeops.event_names import model_resource, rollout_event, rollout_resource
from edgeops.mqtt import ControlClient
from edgeops.rollout.controller import RolloutController, start_rollout
from edgeops.rollout.health import TelemetryHealthGate
from edgeops.rollout.plan import RolloutPolicy, always_advance
from edgeops.rollout.signer import desired_signer
from edgeops.rollout.state import RolloutRecord, RolloutStore, controller_identity, open_rollout_store
from edgeops.telemetry.drift import parse_ts
from edgeops.telemetry.store import TelemetryStore

EVENTS = ("started", "wave.completed", "completed", "aborted")


def artifact_key(rollout_id: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return "rollout-" + re.sub(r"[^a-z0-9-]+", "-", rollout_id.lower()).strip("-")


def emit_rollout_event(kind: str, rec: RolloutRecord, detail: Mapping[str, object]) -> None:
    tally = rec.tally()
    emit_event(
        event=rollout_event(kind),
        resource=rollout_resource(rec.id),
        related=[model_resource(rec.model, role="model")],
        payload={"rollout_id": rec.id, "release": rec.release, "status": rec.status, "reason": rec.reason,
                 "wave": rec.wave, "waves": rec.waves, "succeeded": tally["succeeded"],
                 "failed": tally.failures, "offline": tally["offline"], "devices": len(rec.devices),
                 **{k: v for k, v in detail.items() if isinstance(v, str | int | float | bool)}},
    )


def device_table(rec: RolloutRecord) -> list[dict[str, Any]]:
    return [{"device": d.device, "wave": d.wave, "outcome": d.outcome, "offline": d.offline,
             "restored": d.restored, "detail": d.detail}
            for d in sorted(rec.devices.values(), key=lambda d: (d.wave, d.device))]


class _Reporter:
    """Turns controller notifications into artifact updates and events (progress only when it moved)."""

    def __init__(self, rec: RolloutRecord) -> None:
        artifact = create_progress_artifact(
            progress=100.0 * rec.progress(), key=artifact_key(rec.id),
            description=f"Rollout {rec.id}: {rec.release} to {len(rec.devices)} devices in {rec.waves} waves")
        assert isinstance(artifact, UUID)   # sync code: Prefect's async_dispatch returned the result, no coroutine
        self.artifact = artifact
        self.last = rec.progress()

    def __call__(self, kind: str, rec: RolloutRecord, detail: Mapping[str, object]) -> None:
        if kind in EVENTS:
            emit_rollout_event(kind, rec, detail)
            get_run_logger().info("rollout %s: %s %s", rec.id, kind, rec.reason or dict(detail))
        progress = rec.progress()
        if progress != self.last or kind in EVENTS:
            self.last = progress
            tally = rec.tally()
            update_progress_artifact(self.artifact, progress=100.0 * progress,
                                     description=f"{rec.release} {rec.status}, wave {rec.wave + 1}/{rec.waves}: "
                                                 f"{tally['succeeded']} ok, {tally.failures} failed, "
                                                 f"{tally['offline']} offline, {tally['updating']} updating")


def _take_over_flow_run(store: RolloutStore, rollout_id: str) -> None:
    """Record this flow run as the rollout's; a run recorded before that is still not final belonged to a
    controller that died (a ``kill -9`` reports nothing to Prefect, so it would show as Running for ever): mark
    it Crashed, naming its successor. Best effort — the old run may live on another Prefect server."""
    current = str(flow_run_ctx.id)
    previous = store.swap_flow_run(rollout_id, current)
    if not previous or previous == current:
        return
    try:
        with get_client(sync_client=True) as client:
            old = client.read_flow_run(UUID(previous))
            if old.state is not None and not old.state.is_final():
                client.set_flow_run_state(old.id, Crashed(
                    message=f"its rollout controller died; rollout {rollout_id} resumed by flow run {current}"),
                    force=True)
    except Exception as exc:
        get_run_logger().warning("could not mark the earlier flow run %s of rollout %s crashed: %s", previous,
                                 rollout_id, exc)


@flow(name="edgeops-rollout", log_prints=True)
def rollout_flow(release: str | None = None, target: dict[str, str] | None = None,
                 policy: dict[str, Any] | None = None, rollout_id: str | None = None, health_db: str | None = None,
                 config_path: str | None = None, broker_url: str | None = None, prefix: str | None = None,
                 db_path: str | None = None) -> dict[str, Any]:
    """Run (or resume) a staged rollout: canary, then waves; abort and restore on failures.

    Desired states are signed with the release key (edgeops.credentials: $EDGEOPS_SIGNING_KEY, the Secret block
    ``signing.key_secret``, or ``registry.keys_dir``) and expire after ``rollout.desired_lifetime_days``.
    Returns the final rollout record as JSON.

    Args:
        release: Release to roll out, e.g. churn@4 (published first with `edgeops release publish`); leave
            empty to resume rollout_id.
        target: Device labels a new rollout is limited to, e.g. {"site": "berlin"}; empty: every device.
        policy: Rollout policy of a new rollout: canary ("10%" or 0.1), waves, max_failure ("5%"),
            device_timeout_s, min_executed.
        rollout_id: An existing rollout to run or resume (what `edgeops rollout status` lists).
        health_db: Telemetry store URL: each wave must then also pass the health gate (error rate, p95 latency);
            stored with a new rollout, taken from it when resuming.
        config_path: edgeops.yaml to read (default: $EDGEOPS_CONFIG, else ./edgeops.yaml on the worker).
        broker_url: MQTT broker (default: $EDGEOPS_MQTT_URL, else mqtt.url). Credentials never go here: they
            come from the worker's environment or Prefect Secret blocks (docs/deployments.md).
        prefix: Topic prefix (default: mqtt.prefix).
        db_path: Rollout state: a SQLite file on the worker, or a database URL whose password comes from
            PGPASSWORD or ~/.pgpass (default: rollout.state_url, else rollouts.db beside the registry).
    """
    cfg = load_config(Path(config_path) if config_path else None)
    mqtt = mqtt_settings(cfg.mqtt, broker_url, prefix)
    store = RolloutStore(db_path) if db_path else open_rollout_store(cfg)
    signer = desired_signer(cfg)
    topics = Topics(mqtt.prefix)
    with ControlClient(mqtt.url, username=mqtt.username, password=mqtt.password, ca_file=mqtt.ca_file) as client:
        if rollout_id is None:
            if release is None:
                raise ValueError("give rollout_id (run or resume) or release (start a new rollout)")
            model, _, version = release.partition("@")
            rules = RolloutPolicy.from_json(policy or {})
            if health_db:
                rules = replace(rules, health_db=health_db)
            rec = start_rollout(store, client, topics, model=model, version=int(version), selector=target or {},
                                policy=rules)
            rollout_id = rec.id
        rec = store.claim(rollout_id, controller_identity())  # the controller's own identity: it claims again
        _take_over_flow_run(store, rollout_id)
        reporter = _Reporter(rec)
        emit_rollout_event("started", rec, {"resumed": any(d.desired_at for d in rec.devices.values())})
        health_db = health_db or rec.policy.health_db
        gate = always_advance if health_db is None else \
            TelemetryHealthGate(TelemetryStore(health_db), since=parse_ts(rec.created))
        final = RolloutController(store, client, topics, signer=signer, gate=gate, on_event=reporter).run(rollout_id)
    create_table_artifact(table=device_table(final), key=artifact_key(final.id) + "-devices",
                          description=f"Rollout {final.id}: {final.status} ({final.reason})")
    return final.to_json()

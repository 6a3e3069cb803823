"""Continuous training as plain functions: retrain a model on its newest data with its champion's recipe
(edgeops.retrain.recipe), gate it against the champion, and roll the new version out canary-first to the
devices that run the model.

Promotion order — candidate → canary rollout → champion on completion. The pipeline makes a passing release
the ``candidate`` (and the champion only when the model has none yet); this module promotes it to
``champion`` only after the staged rollout *completed* (canary and every wave within the failure threshold).
Why: the champion is what the next run gates against and what ``churn@champion`` resolves to; it should
name a version that has proven itself on real devices, not one that a canary is about to reject. An aborted
rollout restores every device (the controller's rollback) and leaves the old champion in place; the new
version stays a ``candidate`` for a person to look at.

Planning (``plan_retrain``) reads no data: it resolves the model, its recipe, the broker and the policy, so a
mistake fails before any work. ``retrain_request`` then materializes the data (a query runs here) for as long
as the pipeline needs it. flows/retrain.py adds Prefect around the same steps (the pipeline and rollout flows as
subflows, the cooldown, artifacts, events); tests call ``run_retrain`` directly.
"""

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.protocol import ProtocolError, Topics, check_name
from edgeops.config import ProjectConfig, load_config
from edgeops.credentials import mqtt_settings, public_key
from edgeops.errors import ConfigError, RolloutError
from edgeops.event_names import MODEL_RESOURCE
from edgeops.mqtt import ControlClient
from edgeops.release.publish import PublishResult, publish_release
from edgeops.release.registry import CHAMPION, Registry, ReleaseRecord
from edgeops.retrain.recipe import Recipe, database_url, resolve_recipe
from edgeops.rollout.controller import RolloutController, start_rollout
from edgeops.rollout.fleet import read_fleet
from edgeops.rollout.plan import RolloutPolicy
from edgeops.rollout.signer import desired_signer
from edgeops.rollout.state import RolloutRecord, RolloutStore, open_rollout_store
from edgeops.train.datasource import materialized
from edgeops.train.pipeline import PipelineRequest, PipelineResult, make_request, run_pipeline

DEFAULT_POLICY = RolloutPolicy(canary=0.1, waves=3, max_failure=0.05)

Outcome = Literal["promoted", "rejected", "no_devices", "aborted"]


def model_name(text: str) -> str:
    """``churn`` or the resource id ``edgeops.model.churn`` (what a deployment trigger templates in) → ``churn``."""
    name = text.strip().removeprefix(MODEL_RESOURCE)
    try:
        check_name(name, "model")
    except ProtocolError as exc:
        raise ConfigError("model", f"{text!r}: {exc.reason}") from None
    return name


def policy_from_json(obj: Mapping[str, Any] | None) -> RolloutPolicy:
    """A rollout policy from deployment parameters (``RolloutPolicy.from_json``); a bad one is a ConfigError
    about the ``policy`` parameter."""
    try:
        return RolloutPolicy.from_json(obj or {})
    except RolloutError as exc:
        raise ConfigError("policy", str(exc)) from exc


@dataclass(frozen=True)
class RolloutTarget:
    """Where the new version goes: the fleet on ``broker_url``/``prefix``, devices matching ``selector``
    that run the model. The credentials were looked up on this worker (edgeops.credentials)."""

    broker_url: str
    prefix: str
    selector: dict[str, str] = field(default_factory=dict)
    policy: RolloutPolicy = DEFAULT_POLICY
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None

    def client(self) -> ControlClient:
        """An unconnected client: use it as a context manager."""
        return ControlClient(self.broker_url, username=self.username, password=self.password, ca_file=self.ca_file)


@dataclass(frozen=True)
class RetrainPlan:
    """Everything decided before the data is read: the model, its recipe (what to train on which data), the
    project config, where the new version goes, and why the retrain runs."""

    model: str
    recipe: Recipe
    config: ProjectConfig
    config_path: Path | None
    target: RolloutTarget
    trigger: dict[str, Any] = field(default_factory=dict)
    """Why this retrain runs: the drift event's payload (and id), shown in the summary."""


@dataclass(frozen=True)
class RetrainRequest:
    pipeline: PipelineRequest
    target: RolloutTarget
    trigger: dict[str, Any] = field(default_factory=dict)
    recipe: Recipe | None = None

    @property
    def model(self) -> str:
        return self.pipeline.model

    @property
    def config(self) -> ProjectConfig:
        return self.pipeline.config


def plan_retrain(model: str, data: str | Path | None = None, *, target: str | None = None,
                 config_path: Path | None = None, overrides: Mapping[str, Any] | None = None,
                 selector: Mapping[str, str] | None = None, policy: Mapping[str, Any] | None = None,
                 broker_url: str | None = None, prefix: str | None = None,
                 trigger: Mapping[str, Any] | None = None) -> RetrainPlan:
    """Resolve everything before any work: the model's name, its recipe from the registry's champion and
    edgeops.yaml (``data``/``target``/``overrides`` win), the broker (flag → $EDGEOPS_MQTT_URL → config, with
    credentials from the worker's environment or Secret blocks) and the rollout policy."""
    name = model_name(model)
    cfg = load_config(config_path, overrides)
    champion = Registry.from_config(cfg.registry).champion(name)
    recipe = resolve_recipe(name, cfg, champion, data=None if data is None else str(data), target=target,
                            overrides=overrides)
    mqtt = mqtt_settings(cfg.mqtt, broker_url, prefix)
    rollout = RolloutTarget(broker_url=mqtt.url, prefix=mqtt.prefix, selector=dict(selector or {}),
                            policy=policy_from_json(policy), username=mqtt.username, password=mqtt.password,
                            ca_file=mqtt.ca_file)
    return RetrainPlan(model=name, recipe=recipe, config=cfg, config_path=config_path, target=rollout,
                       trigger=dict(trigger or {}))


@contextmanager
def retrain_request(plan: RetrainPlan) -> Iterator[RetrainRequest]:
    """The plan with its data as a file (the newest of a glob or folder, or a query's result, removed on exit)."""
    source = plan.recipe.source
    with materialized(source, database_url(source, plan.model), plan.config.registry.s3) as path:
        pipeline = make_request(path, plan.model, plan.recipe.target, plan.config_path, plan.recipe.overrides)
        yield RetrainRequest(pipeline=replace(pipeline, source=source), target=plan.target, trigger=plan.trigger,
                             recipe=plan.recipe)


def rollout_store(cfg: ProjectConfig) -> RolloutStore:
    """The same rollout state `edgeops rollout status` reads (``rollout.state_url``, else ``rollouts.db`` beside
    a local registry)."""
    return open_rollout_store(cfg)


def project_public_key(cfg: ProjectConfig) -> Ed25519PublicKey:
    return public_key(cfg)


def champion_version(request: RetrainRequest | RetrainPlan) -> int | None:
    record = Registry.from_config(request.config.registry).champion(request.model)
    return None if record is None else record.version


def publish_candidate(client: ControlClient, request: RetrainRequest, record: ReleaseRecord) -> PublishResult:
    """Put the new release on the broker (retained, idempotent) so devices can fetch it."""
    return publish_release(client, Topics(request.target.prefix), record.manifest, record.onnx_bytes(),
                           status=record.status, public_key=project_public_key(request.config))


def devices_running(client: ControlClient, request: RetrainRequest) -> list[str]:
    """Devices matching the selector whose latest report says they run the model."""
    fleet = read_fleet(client, Topics(request.target.prefix))
    return [d.device for d in fleet.select(request.target.selector) if d.model == request.model]


def plan_rollout(client: ControlClient, request: RetrainRequest, record: ReleaseRecord) -> RolloutRecord | None:
    """Publish the release and record a rollout to the devices running the model (None when there are none)."""
    if not devices_running(client, request):
        return None
    publish_candidate(client, request, record)
    return start_rollout(rollout_store(request.config), client, Topics(request.target.prefix), model=request.model,
                         version=record.version, selector=request.target.selector, policy=request.target.policy,
                         running_only=True)


def conclude(request: RetrainRequest, record: ReleaseRecord, rollout: RolloutRecord) -> ReleaseRecord:
    """The promotion rule of the module doc: champion only after a completed rollout."""
    if rollout.status == "completed":
        return Registry.from_config(request.config.registry).promote(request.model, record.version, CHAMPION)
    return record


@dataclass(frozen=True)
class RetrainResult:
    request: RetrainRequest
    outcome: Outcome
    pipeline: PipelineResult
    record: ReleaseRecord
    champion_before: int | None
    rollout: RolloutRecord | None = None

    @property
    def champion_after(self) -> int | None:
        return champion_version(self.request)

    def headline(self) -> str:
        ref, before = self.record.ref, self.champion_before
        kept = "no champion yet" if before is None else f"champion stays {self.request.model}@{before}"
        if self.outcome == "rejected":
            return f"{ref} rejected by gates: {'; '.join(self.pipeline.gate.reasons)}; no rollout, {kept}"
        if self.outcome == "no_devices":
            return f"{ref} passed its gates but no device runs {self.request.model}; it stays candidate, {kept}"
        assert self.rollout is not None
        if self.outcome == "aborted":
            return f"{ref} canary rollout {self.rollout.id} aborted ({self.rollout.reason}); devices restored, {kept}"
        return f"{ref} rolled out ({self.rollout.reason}) and promoted to champion (was {before})"

    def to_json(self) -> dict[str, Any]:
        recipe = self.request.recipe
        return {"model": self.request.model, "outcome": self.outcome, "version": self.record.version,
                "data": str(self.request.pipeline.data), "target": self.request.pipeline.target,
                "source": None if recipe is None else recipe.source.describe(),
                "recipe": None if recipe is None else recipe.origin, "champion_before": self.champion_before,
                "champion_after": self.champion_after, "headline": self.headline(),
                "rollout": None if self.rollout is None else self.rollout.to_json()}


def outcome_of(pipeline: PipelineResult, rollout: RolloutRecord | None) -> Outcome:
    if not pipeline.passed:
        return "rejected"
    if rollout is None:
        return "no_devices"
    return "promoted" if rollout.status == "completed" else "aborted"


def run_retrain(plan: RetrainPlan, **controller: Any) -> RetrainResult:
    """Every step without Prefect: data → pipeline → (gates passed) publish → canary rollout → promote on
    completion. ``controller`` goes to RolloutController (poll_s, gate, on_event)."""
    with retrain_request(plan) as request:
        return retrain_now(request, **controller)


def retrain_now(request: RetrainRequest, **controller: Any) -> RetrainResult:
    before = champion_version(request)
    pipeline = run_pipeline(request.pipeline)
    record, rollout = pipeline.record, None
    if pipeline.passed:
        with request.target.client() as client:
            rollout = plan_rollout(client, request, record)
            if rollout is not None:
                rollout = RolloutController(rollout_store(request.config), client, Topics(request.target.prefix),
                                            signer=desired_signer(request.config), **controller).run(rollout.id)
        if rollout is not None:
            record = conclude(request, record, rollout)
    return RetrainResult(request, outcome_of(pipeline, rollout), pipeline, record, before, rollout)


def trigger_markdown(trigger: Mapping[str, Any]) -> list[str]:
    """The "why" section: the drift event's payload, scalars as a list and the rest as JSON."""
    if not trigger:
        return ["Started by hand (no drift event)."]
    scalars = {k: v for k, v in trigger.items() if isinstance(v, str | int | float | bool) or v is None}
    rest = {k: v for k, v in trigger.items() if k not in scalars}
    lines = [f"- **{k}**: {v}" for k, v in sorted(scalars.items())]
    if rest:
        lines += ["", "```json", json.dumps(rest, indent=2, sort_keys=True, default=str), "```"]
    return lines


def summary_markdown(result: RetrainResult) -> str:
    """The retrain run's artifact: what was retrained, why (the drift), the gates, and the rollout."""
    req, pipe = result.request, result.pipeline
    lines = [f"# Retrain {req.model}: {result.outcome}", "", result.headline(), "", "## Why", "",
             *trigger_markdown(req.trigger), "", "## What", "",
             f"- data `{req.pipeline.data}` (sha256 `{result.record.manifest.lineage.data_sha256[:16]}`)"
             + ("" if req.recipe is None else f" from {req.recipe.source.describe()}"),
             f"- target `{req.pipeline.target}`, task {result.record.manifest.outputs.task}"
             + ("" if req.recipe is None or not req.recipe.origin else f" ({req.recipe.describe()})"),
             f"- new version {result.record.ref}, aliases: {', '.join(result.record.aliases) or '-'}",
             f"- champion before {result.champion_before}, after {result.champion_after}", "",
             "## Metrics vs gates", "", pipe.gate.to_markdown(), ""]
    if result.rollout is not None:
        tally = result.rollout.tally()
        lines += ["## Rollout", "", f"- rollout `{result.rollout.id}` {result.rollout.status}: {result.rollout.reason}",
                  f"- {len(result.rollout.devices)} devices in {result.rollout.waves} waves: {tally['succeeded']} "
                  f"succeeded, {tally.failures} failed, {tally['offline']} offline"]
    return "\n".join(lines)

"""The rollout executor: sets ``desired`` wave by wave, watches ``reported``/``status``/``events``, applies the
thresholds and the health gate from plan.py, and either completes or aborts and restores the previous
desired state of every device it changed.

Persistence comes first: the state is saved after every step, so another process can read ``status`` or set
the abort flag, and a new controller resumes an interrupted rollout with this table:

    running / paused → re-send the current wave's desired (a new signed message with a higher counter, naming
                       the same release: a device already on it has nothing to do) and watch again;
                       retained ``reported`` messages arrive first, so devices that finished meanwhile count
    aborting         → finish the rollback (restoring is idempotent too)
    completed / aborted → nothing to do

There is no point of no return: until the rollout completes, an abort restores every changed device. Every
desired state is signed by ``signer`` with a counter above the device's last one (rollout/signer.py): an
abort restores the previous release as a *new* desired state, because devices refuse old bytes published again.
"""

import contextlib
import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import replace

from edge_agent.protocol import ProtocolError, Reported, Status, Topics
from edgeops.errors import BrokerError, RolloutError
from edgeops.mqtt import ControlClient, Publication, Received
from edgeops.rollout.fleet import FleetSnapshot, build_fleet, parse_state
from edgeops.rollout.plan import (
    TERMINAL,
    GateContext,
    GateVerdict,
    RolloutPolicy,
    always_advance,
    evaluate_thresholds,
    judge_report,
    min_executed_for,
    plan_waves,
    wave_settled,
)
from edgeops.rollout.signer import DesiredSigner
from edgeops.rollout.state import FINAL, DeviceRecord, RolloutRecord, RolloutStore, controller_identity

log = logging.getLogger(__name__)

HealthGate = Callable[[GateContext], GateVerdict]
EventSink = Callable[[str, RolloutRecord, Mapping[str, object]], None]
"""Told ``started``, ``progress``, ``wave.completed``, ``completed`` or ``aborted`` with the current record."""


def _ignore(_kind: str, _rec: RolloutRecord, _detail: Mapping[str, object]) -> None:
    return None


def rollout_scope(client: ControlClient, topics: Topics) -> str:
    """Rollouts overlap only within one fleet: the same broker and topic prefix."""
    return f"{client.url}|{topics.prefix}"


def start_rollout(store: RolloutStore, client: ControlClient, topics: Topics, *, model: str, version: int,
                  selector: Mapping[str, str], policy: RolloutPolicy, rollout_id: str | None = None,
                  on_event: EventSink = _ignore, running_only: bool = False) -> RolloutRecord:
    """Plan and record a rollout of a *published* release to the devices whose labels match ``selector``
    (and, with ``running_only``, whose latest report says they run ``model``: a retrained model replaces
    itself where it runs and must not land on devices that serve another model).

    The controller's subscriptions are made here already: their retained messages describe the fleet for the
    plan, and then wait in the client for ``RolloutController.run`` (same client), so the broker sends the
    fleet's state once, not twice."""
    watch = watch_filters(topics)
    fresh = [f for f in watch if not client.subscribed(f)]
    client.subscribe(*fresh)
    try:
        manifest = topics.manifest(model, version)
        extra = [] if len(fresh) == len(watch) else watch  # not ours: ask for their retained state again
        retained = client.collect_retained(manifest, topics.all_devices("desired"), *extra, sync_root=topics.prefix)
        if manifest not in retained:
            raise RolloutError(f"{model}@{version} is not published on {client.url} "
                               f"(run `edgeops release publish {model}@{version}` first)")
        fleet = build_fleet(_fleet_state(client, topics, retained), topics)
        if running_only:
            fleet = replace(fleet, devices=[d for d in fleet.devices if d.model == model])
        return _plan_and_record(store, client, topics, fleet, model, version, selector, policy, rollout_id,
                                on_event, retained)
    except BaseException:
        with contextlib.suppress(BrokerError):
            client.unsubscribe(*fresh)
        raise


def watch_filters(topics: Topics) -> list[str]:
    """What a controller subscribes to: every device's reported state and status. Not the agents' events:
    ``reported`` already says everything a verdict needs (state, the version it was asked for, the rollout id,
    the last error), and every change of it reaches a subscriber — the events would only double the
    controller's reading (a thousand more messages per thousand devices) to learn nothing new."""
    return [topics.all_devices(c) for c in ("reported", "status")]


def _fleet_state(client: ControlClient, topics: Topics, retained: Mapping[str, bytes]) -> dict[str, bytes]:
    """Latest reported/status payload per topic from the collected and the set-aside messages."""
    state = {t: p for t, p in retained.items() if t.endswith(("/reported", "/status"))}
    for msg in client.pending():
        if msg.topic.endswith(("/reported", "/status")):
            if msg.payload:
                state[msg.topic] = msg.payload
            else:
                state.pop(msg.topic, None)
    return state


def _plan_and_record(store: RolloutStore, client: ControlClient, topics: Topics, fleet: FleetSnapshot, model: str,
                     version: int, selector: Mapping[str, str], policy: RolloutPolicy, rollout_id: str | None,
                     on_event: EventSink, retained: Mapping[str, bytes]) -> RolloutRecord:
    targets = fleet.select(selector)
    if not targets:
        wanted = ",".join(f"{k}={v}" for k, v in selector.items()) or "(all)"
        raise RolloutError(f"no device matches target {wanted} among {len(fleet.devices)} known devices")
    online = {d.device for d in targets if d.online is not False}
    plan = plan_waves([d.device for d in targets], policy.canary, policy.waves, preferred=online)
    policy = replace(policy, min_executed=min_executed_for(policy, plan))
    previous = {d.device: retained.get(topics.device(d.device, "desired")) for d in targets}
    rec = store.create(model=model, version=version, scope=rollout_scope(client, topics), selector=selector,
                       policy=policy, plan=plan, previous=previous, rollout_id=rollout_id)
    on_event("started", rec, {"devices": len(rec.devices), "waves": rec.waves})
    return rec


class RolloutController:
    """Runs one rollout to its end. ``signer`` signs its desired states; ``poll_s`` bounds how long a step waits
    for broker messages."""

    def __init__(self, store: RolloutStore, client: ControlClient, topics: Topics, *, signer: DesiredSigner,
                 gate: HealthGate = always_advance, on_event: EventSink = _ignore, poll_s: float = 0.2,
                 heartbeat_s: float = 2.0) -> None:
        self.store, self.client, self.topics, self.signer = store, client, topics, signer
        self.gate, self.on_event, self.poll_s, self.heartbeat_s = gate, on_event, poll_s, heartbeat_s
        self.identity = controller_identity()
        self._latest: dict[str, Reported] = {}
        self._dirty: dict[str, DeviceRecord] = {}  # changed since the last save
        self._changed = True  # an outcome or presence changed since thresholds and waves were last looked at
        self._saved_at = 0.0
        self._gate_passed = -1
        self._hold_since: float | None = None
        self._sending: list[Publication] = []  # desired states handed to the client, PUBACK not yet checked

    def run(self, rollout_id: str) -> RolloutRecord:
        rec = self.store.claim(rollout_id, self.identity)
        if rec.status in FINAL:
            return rec
        filters = watch_filters(self.topics)
        try:
            self._note_counters(rec)
            self.client.subscribe(*filters)
            if rec.status != "aborting":  # resume: a killed controller may have recorded but not sent these
                self._send_desired(rec, [d for d in rec.devices.values() if d.outcome == "updating"])
            self._loop(rec)
        finally:
            self.store.release_claim(rollout_id, self.identity)
            with contextlib.suppress(BrokerError):
                self.client.unsubscribe(*filters)
        return self.store.get(rollout_id)

    def _note_counters(self, rec: RolloutRecord) -> None:
        """Make this signer's counters pass every desired state the devices hold: the ones read before planning
        and, when resuming, the ones a dead controller signed (perhaps on a machine whose clock runs ahead of
        ours: the operator's laptop aborting a rollout whose controller died must still be obeyed)."""
        for dev in rec.devices.values():
            self.signer.note(dev.device, dev.previous)
        if any(dev.desired_at is not None for dev in rec.devices.values()):
            held = self.client.collect_retained(self.topics.all_devices("desired"), sync_root=self.topics.prefix)
            for topic, payload in held.items():
                with contextlib.suppress(ProtocolError):
                    device, _ = self.topics.parse_device_topic(topic)
                    if device in rec.devices:
                        self.signer.note(device, payload)

    # the loop ------------------------------------------------------------------------------------------
    def _loop(self, rec: RolloutRecord) -> None:
        """Messages are applied as they come; the decisions that depend on outcomes (thresholds, advancing)
        run when an outcome changed, and the time-driven checks (abort flag, device timeouts, a held gate)
        once per ``poll_s``. Saving is batched to once per ``poll_s`` too, except for the steps that must be on
        disk first (a wave's desired states before they are sent, status changes): outcomes not yet saved
        are found again on resume, because the retained ``reported`` states are re-read."""
        last_tick = 0.0
        while rec.status not in FINAL:
            for msg in self.client.drain(self.poll_s):
                self._apply(rec, msg)
            now = time.time()
            tick = now - last_tick >= self.poll_s
            if tick:
                last_tick = now
                flag = self.store.abort_requested(rec.id) if rec.status != "aborting" else None
                if flag:
                    self._begin_abort(rec, flag)
                self._check_timeouts(rec, now)
            if rec.status == "aborting":
                self._rollback(rec)
                break
            if self._changed or tick:
                self._changed = False
                verdict = evaluate_thresholds(rec.tally(), rec.policy.max_failure, rec.policy.min_executed or 1)
                if verdict.abort:
                    self._begin_abort(rec, verdict.reason)
                    continue
                self._advance(rec, now)
            if (self._dirty and now - self._saved_at >= self.poll_s) or now - self._saved_at >= self.heartbeat_s:
                self._persist(rec, now)

    def _persist(self, rec: RolloutRecord, now: float | None = None, event: str = "progress",
                 detail: Mapping[str, object] | None = None) -> None:
        rec.heartbeat = self._saved_at = now or time.time()
        rec.controller = self.identity
        self.store.save(rec, list(self._dirty.values()))
        self._dirty.clear()
        self.on_event(event, rec, detail or {})

    def _set(self, rec: RolloutRecord, dev: DeviceRecord, outcome: str, detail: str = "") -> None:
        if dev.outcome == outcome and dev.detail == detail:
            return
        dev.outcome, dev.detail = outcome, detail
        if outcome in TERMINAL:
            dev.finished_at = time.time()
        self._touch(dev)
        log.info("rollout %s: %s %s %s", rec.id, dev.device, outcome, detail)

    def _touch(self, dev: DeviceRecord) -> None:
        """A device's record changed: save it with the next save, and look at thresholds and waves again."""
        self._dirty[dev.device] = dev
        self._changed = True

    # observations ----------------------------------------------------------------------------------
    def _apply(self, rec: RolloutRecord, msg: Received) -> None:
        try:
            device, channel = self.topics.parse_device_topic(msg.topic)
        except ProtocolError:
            return
        dev = rec.devices.get(device)
        if dev is None or not msg.payload:
            return
        try:
            if channel == "reported":
                report = parse_state(Reported, device, msg.payload)
                self._latest[device] = report
                self._judge(rec, dev, report, live=not msg.retained)
            elif channel == "status":
                offline = parse_state(Status, device, msg.payload).status == "offline"
                if offline != dev.offline:
                    dev.offline = offline
                    self._touch(dev)
        except ProtocolError as exc:
            log.warning("rollout %s: ignoring a bad %s message from %s: %s", rec.id, channel, device, exc)

    def _judge(self, rec: RolloutRecord, dev: DeviceRecord, report: Reported, live: bool) -> None:
        verdict = judge_report(report, rec.model, rec.version, rec.id, live)
        if verdict is None:
            return
        # a late report still counts (a device back from offline); a success can later turn into a failure
        # (probation rolled it back), never the other way round
        if dev.outcome in ("updating", "timed_out", "offline") or (dev.outcome == "succeeded"
                                                                     and verdict[0] == "failed"):
            self._set(rec, dev, *verdict)

    def _check_timeouts(self, rec: RolloutRecord, now: float) -> None:
        limit = rec.policy.device_timeout_s
        for dev in rec.devices.values():
            if dev.outcome == "updating" and dev.desired_at is not None and now - dev.desired_at > limit:
                outcome = "offline" if dev.offline else "timed_out"
                self._set(rec, dev, outcome, f"no {rec.release} report within {limit:g}s")

    # decisions -------------------------------------------------------------------------------------
    def _advance(self, rec: RolloutRecord, now: float) -> None:
        wave = rec.wave_devices(rec.wave)
        pending = [d for d in wave if d.outcome == "pending"]
        if pending:
            self._send_desired(rec, pending)
            return
        if not wave_settled([d.outcome for d in wave], [d.offline for d in wave]):
            return
        while self._sending:  # the broker must hold this wave's desired states before the next wave starts
            self._sending.pop().wait()
        if self._gate_passed < rec.wave and not self._ask_gate(rec, wave, now):
            return
        if rec.wave + 1 < rec.waves:
            rec.wave += 1
            self._persist(rec, now)
            self._send_desired(rec, rec.wave_devices(rec.wave))
        elif all(d.outcome in TERMINAL for d in rec.devices.values()):
            self._finish(rec)
        elif not rec.reason:
            waiting = sum(d.outcome == "updating" for d in rec.devices.values())
            rec.reason = f"waiting for {waiting} offline device(s) until their timeout"
            self._persist(rec, now)

    def _ask_gate(self, rec: RolloutRecord, wave: list[DeviceRecord], now: float) -> bool:
        context = GateContext(rollout_id=rec.id, model=rec.model, version=rec.version, wave=rec.wave,
                              waves=rec.waves, devices=tuple(d.device for d in wave),
                              outcomes={d.device: d.outcome for d in rec.devices.values()})
        verdict = self.gate(context)
        if verdict.action == "advance":
            self._gate_passed, self._hold_since = rec.wave, None
            if rec.status == "paused":
                rec.status, rec.reason = "running", ""
            self._persist(rec, now, "wave.completed", {"wave": rec.wave, "gate": verdict.reason})
            return True
        if verdict.action == "abort":
            self._begin_abort(rec, f"health gate: {verdict.reason}")
            return False
        if self._hold_since is None:
            self._hold_since = now
            rec.status, rec.reason = "paused", f"health gate holds wave {rec.wave}: {verdict.reason}"
            self._persist(rec, now)
        elif now - self._hold_since > rec.policy.gate_timeout_s:
            self._begin_abort(rec, f"health gate held wave {rec.wave} for over {rec.policy.gate_timeout_s:g}s: "
                                   f"{verdict.reason}")
        return False

    def _finish(self, rec: RolloutRecord) -> None:
        tally = rec.tally()
        rec.status = "completed"
        rec.reason = (f"{tally['succeeded']} succeeded, {tally.failures} failed, {tally['offline']} offline")
        self._persist(rec, event="completed")

    # actions ---------------------------------------------------------------------------------------
    def _send_desired(self, rec: RolloutRecord, devices: Collection[DeviceRecord]) -> None:
        """Set ``desired`` for a wave (also on resume: the same release again is harmless)."""
        now = time.time()
        messages = []
        for dev in devices:
            if dev.outcome not in ("pending", "updating"):
                continue
            desired = self.signer.sign(dev.device, rec.model, rec.version, rec.id)
            messages.append((self.topics.device(dev.device, "desired"), desired, True))
            if dev.desired_at is None:
                dev.desired_at = now
            dev.outcome = "updating"
            self._touch(dev)
        if not messages:
            return
        self._persist(rec, now)  # recorded as changed *before* the publish: an abort then restores them
        self._sending.append(self.client.publish_many(messages, wait=False))
        for dev in devices:
            report = self._latest.get(dev.device)
            if report is not None and dev.outcome == "updating":
                self._judge(rec, dev, report, live=False)

    def _begin_abort(self, rec: RolloutRecord, reason: str) -> None:
        rec.status, rec.reason = "aborting", reason
        self._persist(rec)

    def _rollback(self, rec: RolloutRecord) -> None:
        """Restore the desired state each changed device had before the rollout, as a new signed desired state
        naming the same release (a signed clear where there was none): the old bytes would be a replay."""
        changed = [d for d in rec.devices.values() if d.desired_at is not None and not d.restored]
        self.client.publish_many([(self.topics.device(d.device, "desired"),
                                   self.signer.restore(d.device, d.previous, rec.id), True) for d in changed])
        for dev in changed:
            dev.restored = True
            self._touch(dev)
        rec.status = "aborted"
        self._persist(rec, event="aborted")

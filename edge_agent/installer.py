"""The lifecycle's executors: one per planned step, run on the agent's owner thread.

``Installer.reconcile`` asks ``lifecycle.plan`` what to do and runs the steps: it decides nothing itself. The
decisions (abandon, clear, report) run at once; the install steps form a ``Job``, where a step that has to wait
(fetch) returns False and is resumed by later messages or ticks. Failures are sorted as mender does: a fatal
one (VerificationError, ModelError, StoreError) rejects the release for good — keep serving, report, emit an
event; a transient one (FetchError) is retried with exponential backoff.

The installer sees the agent through ``ports.InstallerPort`` (state changes, reports, events, the runner
swap, the probation watcher), and its other collaborators (store, keys, link, latencies) are handed in.
"""

import logging
import random
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from .config import AgentConfig
from .errors import AgentError, FetchError, ModelError, StoreError, VerificationError, short_reason
from .fetch import ReleaseCollector
from .inference import ModelRunner
from .lifecycle import (
    INSTALL_STEPS,
    AgentState,
    LatencyWindow,
    Phase,
    Probation,
    Step,
    plan,
    resume,
    rollback_pointer,
    self_test,
)
from .ports import InstallerPort
from .protocol import ReleaseManifest, Topics
from .store import ModelRef, ModelStore, Pointer
from .verify import KeyRing, verify_artifact, verify_manifest

log = logging.getLogger(__name__)

RETRY_MIN_S = 1.0
RETRY_MAX_S = 60.0


class UntrustedModel(StoreError):
    """A stored release is intact but its signature does not verify with the keys configured now."""


def load_verified(store: ModelStore, keyring: KeyRing, ref: ModelRef, max_bytes: int) -> tuple[ReleaseManifest, bytes]:
    """A stored release whose signature and bytes check out again (the disk is not trusted blindly).
    StoreError when it is incomplete or corrupt, its subclass UntrustedModel when only the signature fails."""
    manifest, data, manifest_bytes = store.load_raw(ref, max_bytes)
    try:
        verify_manifest(manifest, keyring, manifest_bytes)
    except VerificationError as exc:
        raise UntrustedModel(f"{ref} on disk fails verification: {exc}") from exc
    return manifest, data


def boot(store: ModelStore, keyring: KeyRing, max_bytes: int) -> tuple[AgentState, ModelRunner | None]:
    """Start-up: finish a rollback a crash interrupted, load the current pointer's model (verified), else the
    previous one, and map the persisted lifecycle phase through the resume table. Never raises for a bad
    store: it serves what it can.

    The pointer on disk is rewritten only when its model is *broken* (incomplete or corrupt: it can never
    serve again). A model that only fails to verify with the keys configured now (a wrong or missing public
    key) stays named: the agent serves the fallback, or nothing, until it is started with a key that
    verifies it, and then serves it again."""
    persisted = AgentState.from_json(store.read_state() or {})
    try:
        pointer = store.read_pointer()
    except StoreError as exc:
        log.error("%s; starting without a model", exc)
        pointer = Pointer()
    repaired = rollback_pointer(persisted, pointer)
    if repaired is not None and repaired.current is not None:
        try:
            runner = _verified_runner(store, keyring, repaired.current, max_bytes)
        except UntrustedModel as exc:  # no key for it now: leave the disk alone, a trusted key finishes it later
            log.error("cannot finish the interrupted rollback to %s yet: %s", repaired.current, exc)
        except (AgentError, OSError) as exc:  # the previous model is broken: keep serving what the pointer names
            log.error("cannot finish the interrupted rollback to %s: %s", repaired.current, exc)
            persisted = replace(persisted, phase="serving", last_error=short_reason(
                f"{persisted.last_error or 'probation failed'}; rollback impossible: {exc}"))
        else:
            log.warning("finishing the rollback a crash interrupted: serving %s again", repaired.current)
            store.write_pointer(repaired)
            return resume(persisted, repaired), runner
    untrusted: list[str] = []
    for ref, fallback in [(pointer.current, pointer.previous), (pointer.previous, None)]:
        if ref is None:
            continue
        try:
            runner = _verified_runner(store, keyring, ref, max_bytes)
        except UntrustedModel as exc:
            log.error("cannot serve %s: %s (kept on disk: a trusted key will verify it again)", ref, exc)
            untrusted.append(f"{ref}: {exc}")
            continue
        except (AgentError, OSError) as exc:
            log.error("cannot serve %s: %s", ref, exc)
            continue
        loaded = Pointer(ref, fallback)
        if loaded != pointer and not untrusted:
            store.write_pointer(loaded)  # the current model is broken for good: make the fallback the truth
        return resume(persisted, loaded), runner
    state = resume(persisted, Pointer())
    if untrusted:
        state = replace(state, last_error=short_reason("stored model fails verification: " + "; ".join(untrusted)))
    return state, None


def _verified_runner(store: ModelStore, keyring: KeyRing, ref: ModelRef, max_bytes: int) -> ModelRunner:
    return ModelRunner(*load_verified(store, keyring, ref, max_bytes))


_JITTER = random.Random()  # our own: an agent embedded in an application must not draw from its global one


def backoff(attempt: int) -> float:
    return min(RETRY_MAX_S, RETRY_MIN_S * 2.0 ** min(attempt, 16)) * _JITTER.uniform(0.8, 1.2)


@dataclass
class Job:
    """One release being installed: the remaining steps and what the finished ones produced."""

    ref: ModelRef
    rollout_id: str | None
    steps: deque[Step]
    collector: ReleaseCollector | None = None
    deadline: float = 0.0
    retry_at: float | None = None
    attempt: int = 0
    manifest: ReleaseManifest | None = None
    manifest_bytes: bytes | None = None
    signed: bool = False  # the signature over ``manifest_bytes`` was checked when they were fetched or read
    data: bytes | None = None
    runner: ModelRunner | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Subscriber(Protocol):
    """The link as the installer uses it: release topics are subscribed while a fetch waits for them."""

    def subscribe(self, topic_filter: str, qos: int = 1) -> None: ...

    def unsubscribe(self, topic_filter: str) -> None: ...


class Installer:
    """Runs the planned steps for one release at a time on the agent's owner thread (never on callers')."""

    def __init__(self, agent: InstallerPort, *, config: AgentConfig, store: ModelStore, keyring: KeyRing,
                 topics: Topics, link: Subscriber, latencies: LatencyWindow) -> None:
        self.agent = agent
        self.config, self.store, self.keyring, self.topics, self.link = config, store, keyring, topics, link
        self.latencies = latencies  # the serving model's costs: the baseline a successor's probation uses
        self.job: Job | None = None
        self.clock = time.monotonic  # deadlines, retries and probation are measured on this clock
        self._executors = {"fetch": self._fetch, "verify": self._verify, "self_test": self._self_test,
                           "activate": self._activate, "probation": self._start_probation}
        self._decisions = {"forget_refusal": self._forget_refusal, "keep_installing": self._keep_installing,
                           "abandon": self._abandon, "stop_probation": self._stop_probation,
                           "clear_error": self._clear_error, "report": self._report}

    # driving --------------------------------------------------------------------------------------
    def reconcile(self) -> None:
        """Run what ``plan`` decides for the desired state of now (an empty plan: report what runs)."""
        agent, job, probation = self.agent, self.job, self.agent.probation
        steps = plan(agent.state, agent.desired, installing=None if job is None else job.ref,
                     watching=None if probation is None else probation.ref)
        install: deque[Step] = deque()
        for step in steps or [Step("report")]:
            if step.kind in INSTALL_STEPS:
                install.append(step)
            else:
                self._decisions[step.kind](step)
        if install:
            first = install[0]
            assert first.ref is not None  # the planner names the release it installs
            self.job = Job(first.ref, first.rollout_id, install)
            self._run()

    def tick(self, now: float) -> None:
        """Called by the owner loop every pass (``now`` from ``self.clock``): timeouts, retries, probation."""
        job = self.job
        if job is not None:
            if job.retry_at is not None and now >= job.retry_at:
                job.retry_at = None
                self._run()
            elif job.collector is not None:
                self._run()
        self._judge_probation(now)

    def on_release_message(self, topic: str, payload: bytes) -> None:
        job = self.job
        if job is None or job.collector is None:
            return
        try:
            job.collector.add(topic, payload)
        except VerificationError as exc:
            self._reject(job, exc.reason)
            return
        self._run()

    def _run(self) -> None:
        """Run steps until one waits, fails, or all are done."""
        while (job := self.job) is not None and job.steps:
            step = job.steps[0]
            try:
                if not self._executors[step.kind](job):
                    return
            except FetchError as exc:
                self._retry_later(job, str(exc))
                return
            except (VerificationError, ModelError, StoreError) as exc:
                self._reject(job, str(exc))
                return
            job.steps.popleft()
        self.job = None

    # decisions: each runs at once ----------------------------------------------------------------
    def _forget_refusal(self, _step: Step) -> None:
        self.agent.forget_refusal()

    def _keep_installing(self, _step: Step) -> None:
        pass  # already on it: the job goes on with its own messages and ticks

    def _abandon(self, step: Step) -> None:
        log.info("abandoning the install of %s: the desired state changed", step.ref)
        self._drop_job()
        self.agent.transition(phase=_phase(step), target=None)

    def _stop_probation(self, _step: Step) -> None:
        self.agent.watch(None)  # a newer release supersedes the one on probation: stop judging it

    def _clear_error(self, step: Step) -> None:
        # what runs is what is wanted: earlier failures are history, not the present state
        self.agent.transition(phase=_phase(step), target=None, last_error=None)

    def _report(self, _step: Step) -> None:
        self.agent.report()

    # executors: each returns True when its step is done -----------------------------------------
    def _fetch(self, job: Job) -> bool:
        agent = self.agent
        if job.collector is None:
            agent.transition(phase="fetching", target=job.ref, last_error=None)
            local = self._local_copy(job.ref)
            if local is not None:
                job.manifest, job.data, job.manifest_bytes = local
                job.signed = True  # _local_copy checked it
                return True
            job.collector = ReleaseCollector(job.ref, self.topics, self.keyring, self.config.max_artifact_bytes)
            job.deadline = self.clock() + self.config.fetch_timeout_s
            self.link.subscribe(self.topics.release_filter(job.ref.model, job.ref.version))
            return False
        result = job.collector.result()
        if result is None:
            if self.clock() >= job.deadline:
                raise FetchError(f"fetch of {job.ref} timed out after {self.config.fetch_timeout_s:g}s")
            return False
        job.manifest, job.data = result
        job.manifest_bytes = job.collector.manifest_bytes
        job.signed = True  # the collector checked the signature over these bytes when they arrived
        self._unsubscribe(job)
        return True

    def _local_copy(self, ref: ModelRef) -> tuple[ReleaseManifest, bytes, bytes] | None:
        """A release already on disk (typically the previous model) needs no download."""
        if not self.store.has(ref):
            return None
        try:
            manifest, data, manifest_bytes = self.store.load_raw(ref, self.config.max_artifact_bytes)
            verify_manifest(manifest, self.keyring, manifest_bytes)
            return manifest, data, manifest_bytes
        except (StoreError, VerificationError) as exc:
            log.warning("stored copy of %s unusable, fetching it again: %s", ref, exc)
            return None

    def _verify(self, job: Job) -> bool:
        self.agent.transition(phase="verifying")
        assert job.manifest is not None and job.data is not None
        if not job.signed:  # every path checks once; a second check of the same bytes in memory adds nothing
            verify_manifest(job.manifest, self.keyring, job.manifest_bytes)
        verify_artifact(job.manifest, job.data, self.config.max_artifact_bytes)
        return True

    def _self_test(self, job: Job) -> bool:
        self.agent.transition(phase="self_testing")
        assert job.manifest is not None and job.data is not None
        job.runner = ModelRunner(job.manifest, job.data)  # only verified bytes reach onnxruntime
        self_test(job.manifest, job.runner)
        return True

    def _activate(self, job: Job) -> bool:
        agent = self.agent
        old = agent.state.current
        agent.transition(phase="activating")
        assert job.manifest is not None and job.data is not None and job.runner is not None
        self.store.install(job.manifest, job.data, job.manifest_bytes)
        # ---- POINT OF NO RETURN: once the pointer names the new model, a restart serves it. ---------------
        self.store.write_pointer(Pointer(job.ref, old))
        baseline = self.latencies.baseline(self.config.probation_min_predictions)
        agent.swap_runner(job.runner)
        self.latencies.clear()
        job.extra["baseline"] = baseline
        # Stays "activating" until the probation step has its watcher in place (so no prediction escapes it).
        phase: Phase = "activating" if self.probation_applies(old) else "serving"
        agent.transition(phase=phase, current=job.ref, previous=old, target=None)
        agent.emit("installed", job.ref)
        self.store.prune({r for r in (job.ref, old) if r is not None})
        return True

    def probation_applies(self, previous: ModelRef | None) -> bool:
        """No probation without a model to roll back to, or when it is switched off."""
        cfg = self.config
        return previous is not None and (cfg.probation_s > 0 or cfg.probation_min_predictions > 0)

    def _start_probation(self, job: Job) -> bool:
        agent = self.agent
        if agent.state.phase == "activating":  # _activate decided that probation applies
            agent.watch(self.new_probation(job.ref, job.extra.get("baseline")))
            agent.transition(phase="probation")
        return True

    def new_probation(self, ref: ModelRef, baseline_ms: float | None) -> Probation:
        cfg = self.config
        return Probation(ref, self.clock(), cfg.probation_s, cfg.probation_min_predictions,
                         cfg.probation_max_error_rate, cfg.probation_max_latency_factor, baseline_ms,
                         latency_floor_ms=cfg.probation_latency_floor_ms)

    # outcomes -------------------------------------------------------------------------------------
    def _judge_probation(self, now: float) -> None:
        agent = self.agent
        probation = agent.probation
        if probation is None:
            return
        verdict = probation.verdict(now)
        if verdict == "wait":
            return
        agent.watch(None)
        if verdict == "pass":
            agent.transition(phase="serving")
            return
        self._roll_back(probation.ref, f"probation failed: {verdict}")

    def _roll_back(self, failed: ModelRef, reason: str) -> None:
        agent = self.agent
        previous = agent.state.previous
        try:
            if previous is None:
                raise StoreError("no previous model is kept")
            manifest, data = load_verified(self.store, self.keyring, previous, self.config.max_artifact_bytes)
            runner = ModelRunner(manifest, data)
        except AgentError as exc:
            log.error("%s, but cannot roll back: %s", reason, exc)
            agent.transition(phase="serving", last_error=f"{reason}; rollback impossible: {exc}")
            return
        log.warning("rolling %s back to %s: %s", failed, previous, reason)
        # The intent goes to disk first, unreported: a crash from here on is finished by ``boot`` (a report of
        # rolled_back before the pointer moved would be a lie after a crash: the failed model would serve).
        agent.persist(phase="rolling_back", target=failed, refused=failed, last_error=reason)
        # ---- POINT OF NO RETURN of the rollback: once the pointer names the previous model, a restart serves it.
        self.store.write_pointer(Pointer(previous, None))
        agent.swap_runner(runner)
        agent.transition(phase="rolled_back", current=previous, previous=None, target=failed, refused=failed,
                         last_error=reason)
        agent.emit("rolled_back", failed, reason)

    def _reject(self, job: Job, reason: str) -> None:
        reason = short_reason(reason)
        log.error("rejected %s: %s", job.ref, reason)
        self._drop_job()
        self.agent.transition(phase="rejected", target=job.ref, refused=job.ref, last_error=reason)
        self.agent.emit("rejected", job.ref, reason)

    def _retry_later(self, job: Job, reason: str) -> None:
        delay = backoff(job.attempt)
        job.attempt += 1
        job.retry_at = self.clock() + delay
        self._unsubscribe(job)
        log.warning("%s; retrying in %.1fs", reason, delay)
        self.agent.transition(last_error=f"{reason}; retrying in {delay:.0f}s")

    def _unsubscribe(self, job: Job) -> None:
        if job.collector is not None:
            self.link.unsubscribe(self.topics.release_filter(job.ref.model, job.ref.version))
            job.collector = None

    def _drop_job(self) -> None:
        if self.job is not None:
            self._unsubscribe(self.job)
        self.job = None


def _phase(step: Step) -> Phase:
    assert step.phase is not None  # the planner names where an abandon or a clear settles
    return step.phase

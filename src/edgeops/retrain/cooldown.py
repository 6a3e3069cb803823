"""When a retrain may run: at most one per model per cooldown, and one asked for sooner is *deferred* to the end
of the cooldown (a scheduled flow run of the same deployment), never dropped.

The rules are a pure function over the model's other retrain runs as Prefect reports them (flows/retrain_defer.py
reads them), so they have table tests:

* Another run of the model is retraining, or about to (pending/running), and is ahead of this one (created
  earlier): defer, to one cooldown from now; the deferred run checks again when it starts.
* A run of the model retrained (completed: promoted, rejected by its gates, or no devices) and ended less than
  one cooldown ago: defer to its end plus the cooldown.
* Runs that failed, crashed or were cancelled do not count: a retrain that broke (a missing file, a broker
  outage) must not hold back the next one. Nor do deferrals and skips.
* A run still "running" after STALE_S is ignored: a worker that died leaves its run in that state for ever.
* This run would defer, and a deferred run is already scheduled for the model: nothing to add. It retrains on
  the newest data when it starts, which is all a second drift event could ask for. A scheduled run alone never
  holds this one back: when two runs start together, the later one defers *because of* the earlier one, and
  the earlier one, deciding a moment after, must not then yield to that deferral (both would end Deferred and
  the drift would wait a whole cooldown).

Why a cooldown at all: a new version needs time in the field before its drift means anything, and a retrain
per drift event of one episode (several monitors, a flapping episode) would roll the fleet over and over.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

RunStatus = Literal["scheduled", "active", "retrained", "other"]
Action = Literal["run", "defer", "already_deferred"]
STALE_S = 24 * 3600.0


@dataclass(frozen=True)
class RetrainRun:
    """Another retrain run of the same model, reduced to what the rules look at."""

    id: str
    created: datetime
    status: RunStatus
    ended: datetime | None = None
    scheduled_for: datetime | None = None


@dataclass(frozen=True)
class Decision:
    action: Action
    until: datetime | None = None
    because: RetrainRun | None = None

    def reason(self, model: str) -> str:
        """One line for the run's state message, the log and the deferral event."""
        if self.action == "run" or self.because is None:
            return f"no retrain of {model} within its cooldown"
        run = self.because
        if self.action == "already_deferred":
            when = "" if run.scheduled_for is None else f" for {run.scheduled_for.isoformat(timespec='seconds')}"
            return f"a deferred retrain of {model} is already scheduled{when} (flow run {run.id})"
        assert self.until is not None
        why = (f"flow run {run.id} is retraining {model}" if run.status == "active" else
               f"flow run {run.id} retrained {model} until {run.ended.isoformat(timespec='seconds')}"
               if run.ended else f"flow run {run.id} retrained {model}")
        return f"deferred until {self.until.isoformat(timespec='seconds')}: {why} (retrain.cooldown_s)"


def decide(me: str, created: datetime, runs: Sequence[RetrainRun], cooldown_s: float, now: datetime) -> Decision:
    """Whether run ``me`` (created at ``created``) retrains now, defers, or leaves it to a scheduled deferral."""
    others = [r for r in runs if r.id != me]
    if cooldown_s <= 0:
        return Decision("run")
    decision = _cooldown(me, created, others, timedelta(seconds=cooldown_s), now)
    scheduled = next((r for r in others if r.status == "scheduled"), None)
    if decision.action == "defer" and scheduled is not None:
        return Decision("already_deferred", because=scheduled)
    return decision


def _cooldown(me: str, created: datetime, others: Sequence[RetrainRun], cooldown: timedelta,
              now: datetime) -> Decision:
    """The decision from the runs that retrain or retrained (module doc); scheduled runs are decide's."""
    stale = now - timedelta(seconds=STALE_S)
    ahead = [r for r in others if r.status == "active" and r.created > stale and (r.created, r.id) < (created, me)]
    if ahead:
        first = min(ahead, key=lambda r: (r.created, r.id))
        return Decision("defer", until=now + cooldown, because=first)
    recent = [r for r in others if r.status == "retrained" and r.ended is not None and r.ended + cooldown > now]
    if recent:
        last = max(recent, key=lambda r: r.ended or now)
        assert last.ended is not None
        return Decision("defer", until=last.ended + cooldown, because=last)
    return Decision("run")


def decision_time(clock: datetime, scheduled_for: datetime | None) -> datetime:
    """The time a run judges the cooldown at: a Prefect runner starts scheduled runs up to its prefetch
    (10 s by default) early, so a deferred run scheduled for the cooldown's end may start inside it; judging it
    at the clock would defer it again, depending on when the runner polled."""
    return max(clock, scheduled_for) if scheduled_for is not None else clock


def superseded(drift: dict[str, object] | None, champion: int | None) -> str | None:
    """Why a drift event no longer asks for a retrain: it was about a version that is no longer the champion
    (a retrain since then replaced it; the monitor judges the new version afresh). None: it still stands."""
    version = (drift or {}).get("version")
    if not isinstance(version, int) or isinstance(version, bool) or champion is None or version >= champion:
        return None  # a drift of the champion, or of a newer version some devices run, still stands
    return f"the drift was about version {version}, and version {champion} is champion since"


__all__ = ["STALE_S", "Decision", "RetrainRun", "decide", "decision_time", "superseded"]

"""Pure rollout planning: which devices go in which wave, and what the outcomes so far say to do next.

Nothing here talks to a broker or a database, so the rules are unit-tested directly (STYLE: plan, then
execute). The controller feeds observed outcomes in and carries out the decisions that come out.
"""

import math
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from edge_agent.protocol import Reported
from edgeops.errors import RolloutError

Outcome = Literal["pending", "updating", "succeeded", "failed", "timed_out", "offline"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "timed_out", "offline"})


def parse_fraction(text: str | float, name: str) -> float:
    """``"10%"``, ``"0.1"`` or ``0.1`` → 0.1; RolloutError naming the option otherwise."""
    raw = str(text).strip()
    try:
        value = float(raw[:-1]) / 100.0 if raw.endswith("%") else float(raw)
    except ValueError:
        raise RolloutError(f"{name}: {text!r} is not a percentage like 10% or a fraction like 0.1") from None
    if not 0.0 <= value <= 1.0 or math.isnan(value):
        raise RolloutError(f"{name}: {text!r} must be between 0% and 100%")
    return value


@dataclass(frozen=True)
class RolloutPolicy:
    """How a rollout proceeds. ``min_executed`` mirrors AWS IoT Jobs' ``minNumberOfExecutedThings``: the
    failure rate is judged only once that many devices finished, so one early failure in a large wave does
    not abort it; ``None`` means "the size of the canary wave". ``health_db`` is the telemetry store the health
    gate reads (None: no telemetry gate); it is part of the policy so that a resumed rollout keeps its gate."""

    canary: float = 0.1
    waves: int = 3
    max_failure: float = 0.05
    min_executed: int | None = None
    device_timeout_s: float = 300.0
    gate_timeout_s: float = 600.0
    health_db: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.canary <= 1.0:
            raise RolloutError(f"canary must be between 0% and 100%, got {self.canary}")
        if self.waves < 1:
            raise RolloutError(f"waves must be at least 1, got {self.waves}")
        if not 0.0 <= self.max_failure <= 1.0:
            raise RolloutError(f"max-failure must be between 0% and 100%, got {self.max_failure}")
        if self.min_executed is not None and self.min_executed < 1:
            raise RolloutError(f"min-executed must be at least 1, got {self.min_executed}")
        if self.device_timeout_s <= 0 or self.gate_timeout_s <= 0:
            raise RolloutError("timeouts must be positive")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def to_display(self) -> dict[str, Any]:
        """As ``to_json`` but with a password in ``health_db`` masked: this one is printed by ``status``."""
        shown = self.to_json()
        if self.health_db:
            shown["health_db"] = mask_password(self.health_db)
        return shown

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "RolloutPolicy":
        """From stored JSON or deployment parameters: ``canary``/``max_failure`` may be ``"10%"`` or ``0.1``;
        missing keys take the defaults; an unknown key is a RolloutError naming it (a typo must not pass)."""
        unknown = set(obj) - set(cls.__dataclass_fields__)
        if unknown:
            raise RolloutError(f"unknown rollout policy key(s): {', '.join(sorted(unknown))}")
        raw = dict(obj)
        for key in ("canary", "max_failure"):
            if key in raw:
                raw[key] = parse_fraction(raw[key], key.replace("_", "-"))
        return cls(**raw)


def mask_password(url: str) -> str:
    """``scheme://user:***@host/...`` for a URL with a password; anything else unchanged."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"


def plan_waves(devices: Iterable[str], canary: float, waves: int,
               preferred: Collection[str] = ()) -> list[list[str]]:
    """Canary first (``ceil(canary × N)`` devices, at least one when ``canary`` > 0), then the rest split into
    ``waves`` waves as evenly as possible (earlier waves take the remainder). Devices are sorted, so the
    same fleet always gives the same plan; ``preferred`` devices (the online ones) are put first so that the
    canary gives evidence instead of waiting on offline devices. Empty waves are dropped."""
    ordered = sorted(set(devices), key=lambda d: (d not in preferred, d))
    if not ordered:
        raise RolloutError("no devices match the target")
    if waves < 1:
        raise RolloutError(f"waves must be at least 1, got {waves}")
    size = min(len(ordered), max(1, math.ceil(canary * len(ordered)))) if canary > 0 else 0
    plan = [ordered[:size]] if size else []
    rest = ordered[size:]
    base, extra = divmod(len(rest), waves)
    start = 0
    for i in range(waves):
        end = start + base + (1 if i < extra else 0)
        plan.append(rest[start:end])
        start = end
    return [wave for wave in plan if wave]


def min_executed_for(policy: RolloutPolicy, plan: Sequence[Sequence[str]]) -> int:
    total = sum(len(w) for w in plan)
    wanted = policy.min_executed if policy.min_executed is not None else len(plan[0])
    return max(1, min(wanted, total))


@dataclass(frozen=True)
class Tally:
    """Outcome counts over the devices of a rollout."""

    counts: Mapping[str, int]

    @classmethod
    def of(cls, outcomes: Iterable[str]) -> "Tally":
        return cls(Counter(outcomes))

    def __getitem__(self, outcome: str) -> int:
        return self.counts.get(outcome, 0)

    @property
    def executed(self) -> int:
        return self["succeeded"] + self["failed"] + self["timed_out"]

    @property
    def failures(self) -> int:
        return self["failed"] + self["timed_out"]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def failure_rate(self) -> float:
        return self.failures / self.executed if self.executed else 0.0


@dataclass(frozen=True)
class Verdict:
    abort: bool
    reason: str = ""


def evaluate_thresholds(tally: Tally, max_failure: float, min_executed: int) -> Verdict:
    """Abort when at least ``min_executed`` devices finished and more than ``max_failure`` of them failed."""
    if tally.executed < min_executed or tally.failures == 0:
        return Verdict(False)
    rate = tally.failure_rate()
    if rate > max_failure:
        return Verdict(True, f"{tally.failures} of {tally.executed} finished devices failed "
                             f"({rate:.0%} > max failure {max_failure:.0%})")
    return Verdict(False)


def wave_settled(outcomes: Iterable[str], offline: Iterable[bool]) -> bool:
    """A wave is settled when each device finished or is offline: offline devices keep their retained
    desired state and are waited for at the end, they do not hold the next wave back."""
    return all(o in TERMINAL or (o == "updating" and off) for o, off in zip(outcomes, offline, strict=True))


GateAction = Literal["advance", "hold", "abort"]


@dataclass(frozen=True)
class GateContext:
    """What a health gate sees after a wave settled: later work adds telemetry (error rate, p95 vs the
    previous version) by reading it for ``devices`` between the rollout start and now."""

    rollout_id: str
    model: str
    version: int
    wave: int
    waves: int
    devices: tuple[str, ...]
    outcomes: Mapping[str, str]


@dataclass(frozen=True)
class GateVerdict:
    action: GateAction
    reason: str = ""


def always_advance(_context: GateContext) -> GateVerdict:
    """The default health gate: the device outcomes and thresholds alone decide."""
    return GateVerdict("advance")


def judge_report(report: Reported, model: str, version: int, rollout_id: str, live: bool) -> tuple[str, str] | None:
    """What a device's ``reported`` state says about its update: ``("succeeded", "")`` once it serves the
    target, ``("failed", reason)`` when it rejected or rolled back the target, else None (still working).

    A failure counts only if it belongs to this rollout (same ``rollout_id``) or, when the agent did not say,
    if it arrived live after the desired state was set: a retained ``rejected`` from an earlier attempt at the
    same version must not fail a new rollout before the device even tried."""
    if report.model == model and report.version == version and report.state == "serving":
        return "succeeded", ""
    ours = report.rollout_id == rollout_id if report.rollout_id else live
    if report.state in ("rejected", "rolled_back") and report.desired_version == version and ours:
        return "failed", f"{report.state}: {report.last_error or 'no reason given'}"
    return None

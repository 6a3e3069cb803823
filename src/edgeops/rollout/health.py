"""A rollout health gate fed by stored telemetry: after each wave, the devices that took the new version
must not serve worse than the previous version did. Device outcomes alone only say the model installed;
this says it behaves (AWS IoT Jobs and hawkBit judge installs, not models).

The gate reads the telemetry store the ingest writes (``edgeops telemetry serve``). Only ``model`` errors
count: ``input`` errors are the caller's mistakes and say nothing about the release.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from edgeops.rollout.plan import GateContext, GateVerdict
from edgeops.telemetry.drift import WindowTotals
from edgeops.telemetry.store import TelemetryStore


@dataclass(frozen=True)
class HealthPolicy:
    min_requests: int = 50                 # evidence the new version needs before any verdict (else: hold)
    max_error_rate: float = 0.05           # model errors / requests, when the previous version has no evidence
    max_error_rate_increase: float = 0.02  # else: allowed rise over the previous version's rate
    max_latency_factor: float = 2.0        # new p95 / previous p95
    baseline: timedelta = timedelta(hours=24)


class TelemetryHealthGate:
    """``RolloutController(gate=TelemetryHealthGate(store, since=rollout start))``: advance, hold while the
    new version has too few requests (the policy's gate timeout then aborts), or abort with the numbers."""

    def __init__(self, store: TelemetryStore, since: datetime, previous_version: int | None = None,
                 policy: HealthPolicy = HealthPolicy()) -> None:
        self.store, self.since, self.previous_version, self.policy = store, since, previous_version, policy

    def __call__(self, context: GateContext) -> GateVerdict:
        updated = {d for d, outcome in context.outcomes.items() if outcome == "succeeded"}
        new = self._totals(context.model, context.version, self.since, updated)
        if new.count < self.policy.min_requests:
            return GateVerdict("hold", f"waiting for telemetry: {new.count} of {self.policy.min_requests} "
                                       f"requests on {context.model}@{context.version}")
        previous = self._previous(context)
        old = None if previous is None else self._totals(context.model, previous, self.since - self.policy.baseline)
        baseline = old if old is not None and old.count >= self.policy.min_requests else None
        new_rate = _model_error_rate(new)
        limit = (_model_error_rate(baseline) + self.policy.max_error_rate_increase
                 if baseline is not None else self.policy.max_error_rate)
        if new_rate > limit:
            return GateVerdict("abort", f"model error rate {new_rate:.1%} over {new.count} requests exceeds "
                                        f"{limit:.1%}")
        new_p95, old_p95 = new.p95_estimate, baseline.p95_estimate if baseline is not None else None
        if new_p95 is not None and old_p95 and new_p95 > self.policy.max_latency_factor * old_p95:
            return GateVerdict("abort", f"p95 latency {new_p95:.2f} ms is over {self.policy.max_latency_factor:g}× "
                                        f"v{previous}'s {old_p95:.2f} ms")
        against = f" (v{previous}: {_model_error_rate(baseline):.1%})" if baseline is not None else ""
        return GateVerdict("advance", f"model error rate {new_rate:.1%} over {new.count} requests{against}")

    def _previous(self, context: GateContext) -> int | None:
        if self.previous_version is not None:
            return self.previous_version
        older = [v for m, v in self.store.models() if m == context.model and v < context.version]
        return max(older, default=None)

    def _totals(self, model: str, version: int, since: datetime, devices: set[str] | None = None) -> WindowTotals:
        totals = WindowTotals(model, version)
        for window in self.store.windows(model=model, version=version, since=since):
            if devices is None or window.device in devices:
                totals.add(window)
        return totals


def _model_error_rate(totals: WindowTotals) -> float:
    return totals.errors.get("model", 0) / totals.count if totals.count else 0.0


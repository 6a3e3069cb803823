"""Which of an update's step reports are worth a message.

An update walks ``fetching → verifying → self_testing → activating`` and settles (``serving``, ``rejected``,
...). For a small model on a good link the whole walk takes milliseconds: each step report would be stale
before anyone reads it, yet each costs the device a publish, the broker a routing and a retained-store write,
and every controller and fleet view a parse. A rollout of a thousand devices spent a third of its
device-side messages on them (benchmarks/fleet.py). So the steps of an update are held for the first
``after_s`` seconds of it: an update that settles within them reports only its outcome, a slower one shows
its current step from then on — exactly when an operator would start to wonder. No verdict depends on a step
(a controller judges settled reports only), so holding one loses nothing but noise.

Both the agent and the fleet simulator use this, so the simulated fleet sends what a real one would.
"""

from .messages import TRANSIENT_STATES, Reported


class StepReports:
    """Holds an update's step reports for its first ``after_s`` seconds (0: every step goes out at once).

    ``offer`` a report when the state changes: it returns the report to publish now, or None when it is
    held. ``due`` returns the held report once the update has lasted ``after_s`` (poll it, or wake at
    ``next_due``). A settled report always goes out at once and ends the update, dropping a held step: the
    outcome supersedes it. Times are the caller's monotonic clock."""

    def __init__(self, after_s: float) -> None:
        self.after_s = after_s
        self._since: float | None = None  # when the current update's first step was offered
        self._held: Reported | None = None

    def offer(self, report: Reported, now: float) -> Reported | None:
        if report.state not in TRANSIENT_STATES:
            self._since = self._held = None
            return report
        if self._since is None:
            self._since = now
        if now - self._since >= self.after_s:
            self._held = None
            return report
        self._held = report
        return None

    def due(self, now: float) -> Reported | None:
        held = self._held
        if held is None or self._since is None or now - self._since < self.after_s:
            return None
        self._held = None
        return held

    @property
    def next_due(self) -> float | None:
        """When the held report becomes due (None when nothing is held)."""
        return None if self._held is None or self._since is None else self._since + self.after_s

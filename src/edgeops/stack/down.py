"""``edgeops down``: stop every process of the stack and forget it, leaving nothing behind and killing nothing else.

Each service leads a process group of its own (``edgeops up`` starts it in a new session), so stopping the group
also stops what the service started itself (flow-run subprocesses, the ingest's writer process). Before a group
is signalled, its leader is checked to be the very process ``up`` started (pid *and* start time): a pid the
kernel has since given to another program is left alone. A leader that crashed may have left members of its
group running; those are still ours (Linux gives no process the pid of a live process group) and are stopped.
Clients go first, then the Prefect server, the broker last, each SIGTERM then SIGKILL after a grace period.
"""

from dataclasses import dataclass, field

from edgeops.stack.state import BROKER, PREFECT, StackState, process_started
from edgeops.stack.supervisor import group_alive, stop_groups

STOP_ORDER: tuple[tuple[str, ...], ...] = ((), (PREFECT,), (BROKER,))
"""Stages of the stop; the first, empty, stage stands for every other service (the clients), stopped together."""


@dataclass
class StopReport:
    stopped: list[str] = field(default_factory=list)
    already_gone: list[str] = field(default_factory=list)
    not_ours: list[str] = field(default_factory=list)
    """Services whose pid now belongs to another program (left alone)."""
    left: list[str] = field(default_factory=list)
    """Services with a process still alive after SIGKILL (a process stuck in the kernel): reported, never hidden."""
    external: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.left


def tear_down(state: StackState, grace_s: float = 15.0) -> StopReport:
    report = StopReport()
    staged = {name for stage in STOP_ORDER for name in stage}
    for stage in STOP_ORDER:
        services = [s for s in state.services if (s.name in stage if stage else s.name not in staged)]
        targets: dict[int, str] = {}
        for service in services:
            if service.pid is None:
                continue
            started = process_started(service.pid)
            if started is not None and started != service.started:
                report.not_ours.append(service.name)
            elif started is None and not group_alive(service.pid):
                report.already_gone.append(service.name)
            else:
                targets[service.pid] = service.name
        left = set(stop_groups(list(targets), grace_s))
        report.stopped += [name for pid, name in targets.items() if pid not in left]
        report.left += [name for pid, name in targets.items() if pid in left]
    if not state.own_broker:
        report.external.append(f"{BROKER} {state.broker_url}")
    return report


__all__ = ["StopReport", "tear_down"]

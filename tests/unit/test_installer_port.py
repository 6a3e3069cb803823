"""The installer runs what the planner decides, through its port: a stand-in agent (no broker, no Agent, no
model) records every call, so each decision's effect is asserted as the sequence of port calls it makes."""

import dataclasses
from pathlib import Path
from typing import Any, Unpack

import pytest

from edge_agent.config import AgentConfig
from edge_agent.installer import Installer
from edge_agent.lifecycle import AgentState, LatencyWindow, Probation
from edge_agent.ports import EventKind, InstallerPort, StateChanges
from edge_agent.protocol import Desired, Topics
from edge_agent.store import ModelRef, ModelStore
from edge_agent.verify import KeyRing

pytestmark = pytest.mark.unit

V1, V2, V3 = ModelRef("churn", 1), ModelRef("churn", 2), ModelRef("churn", 3)
TOPICS = Topics("p")


class StandIn:
    """Just the port: state that transitions change, and a log of every call."""

    def __init__(self, state: AgentState) -> None:
        self.state = state
        self.desired: Desired | None = None
        self.probation: Probation | None = None
        self.calls: list[tuple[str, Any]] = []

    def transition(self, **changes: Unpack[StateChanges]) -> AgentState:
        self.calls.append(("transition", dict(changes)))
        self.state = dataclasses.replace(self.state, **changes)
        return self.state

    def persist(self, **changes: Unpack[StateChanges]) -> None:
        self.calls.append(("persist", dict(changes)))

    def forget_refusal(self) -> None:
        self.calls.append(("forget_refusal", None))
        self.state = dataclasses.replace(self.state, refused=None)

    def report(self) -> None:
        self.calls.append(("report", None))

    def emit(self, event: EventKind, ref: ModelRef, reason: str | None = None) -> None:
        self.calls.append(("emit", (event, ref, reason)))

    def swap_runner(self, runner: Any) -> None:
        self.calls.append(("swap_runner", runner))

    def watch(self, probation: Probation | None) -> None:
        self.calls.append(("watch", probation))
        self.probation = probation


class Link:
    def __init__(self) -> None:
        self.filters: list[str] = []

    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        self.filters.append(topic_filter)

    def unsubscribe(self, topic_filter: str) -> None:
        self.filters.remove(topic_filter)


def installer(tmp_path: Path, state: AgentState) -> tuple[Installer, StandIn, Link]:
    port, link = StandIn(state), Link()
    typed: InstallerPort = port  # the stand-in satisfies the port (mypy checks this line)
    config = AgentConfig(device_id="d1", data_dir=tmp_path, topic_prefix="p")
    return Installer(typed, config=config, store=ModelStore(tmp_path), keyring=KeyRing({}), topics=TOPICS,
                     link=link, latencies=LatencyWindow()), port, link


def want(installer_port: StandIn, ref: ModelRef | None) -> None:
    installer_port.desired = None if ref is None else Desired(device="d1", model=ref.model, version=ref.version,
                                                              rollout_id="r1")


def test_a_new_release_starts_fetching_and_waits_for_its_topics(tmp_path: Path) -> None:
    inst, port, link = installer(tmp_path, AgentState("serving", current=V1))
    want(port, V2)
    inst.reconcile()
    assert port.calls == [("transition", {"phase": "fetching", "target": V2, "last_error": None})]
    assert link.filters == [TOPICS.release_filter("churn", 2)] and inst.job is not None


def test_the_same_desired_state_again_changes_nothing_while_installing(tmp_path: Path) -> None:
    inst, port, _ = installer(tmp_path, AgentState("serving", current=V1))
    want(port, V2)
    inst.reconcile()
    port.calls.clear()
    inst.reconcile()
    assert port.calls == [] and inst.job is not None and inst.job.ref == V2


def test_back_to_the_running_release_abandons_the_install_and_reports(tmp_path: Path) -> None:
    inst, port, link = installer(tmp_path, AgentState("serving", current=V1))
    want(port, V2)
    inst.reconcile()
    port.calls.clear()
    want(port, V1)
    inst.reconcile()
    assert port.calls == [("transition", {"phase": "serving", "target": None}), ("report", None)]
    assert inst.job is None and link.filters == []


def test_a_newer_release_stops_the_probation_before_it_installs(tmp_path: Path) -> None:
    inst, port, _ = installer(tmp_path, AgentState("probation", current=V2, previous=V1))
    port.probation = inst.new_probation(V2, baseline_ms=None)
    want(port, V3)
    inst.reconcile()
    assert port.calls[0] == ("watch", None) and port.probation is None
    assert port.calls[1] == ("transition", {"phase": "fetching", "target": V3, "last_error": None})


def test_a_cleared_desired_state_clears_a_rejection_and_forgets_the_refusal(tmp_path: Path) -> None:
    inst, port, _ = installer(tmp_path, AgentState("rejected", current=V1, target=V2, refused=V2,
                                                   last_error="bad signature"))
    want(port, None)
    inst.reconcile()
    assert port.calls == [("forget_refusal", None),
                          ("transition", {"phase": "serving", "target": None, "last_error": None})]
    assert port.state == AgentState("serving", current=V1)


def test_nothing_to_change_is_reported(tmp_path: Path) -> None:
    inst, port, _ = installer(tmp_path, AgentState("serving", current=V1))
    want(port, V1)
    inst.reconcile()
    assert port.calls == [("report", None)]

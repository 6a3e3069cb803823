"""Telemetry through broker restarts, end to end: the real agent (in process, steady predictions), the real
ingest writing to SQLite, and a Mosquitto of our own with persistence on, restarted again and again.

Used by tests/integration/test_telemetry_broker_restarts.py (SIGTERM, asserts nothing is lost) and by
benchmarks/broker_restarts.py (SIGTERM or SIGKILL, prints the figures).
"""

import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from releases import agent_config, build_release, new_key, preinstall
from services import Mosquitto, wait_until

from edge_agent.agent import Agent
from edgeops.telemetry.ingest import IngestConfig, IngestService
from edgeops.telemetry.store import TelemetryStore

DEVICE = "press-restarts"
WAIT_S = 30.0
QUIET_S = 3.0  # the store unchanged this long, with the outbox empty: what is missing now will not come
ROWS = [{"age in years": 20.0 + i % 50, "income": 1.0 + i % 7, "plan": ("basic", "pro", "max")[i % 3]}
        for i in range(64)]


@dataclass
class Figures:
    """What a run measured."""

    signal: str = "SIGTERM"
    restarts: int = 0
    seconds: float = 0.0
    predictions: int = 0
    windows_sent: int = 0      # seqs the agent's outbox used
    windows_stored: int = 0    # distinct (epoch, seq) in the store
    counted: int = 0           # predictions summed over the stored windows
    duplicates: int = 0        # (device, epoch, seq) stored more than once
    redelivered: int = 0       # windows the ingest received again and ignored (QoS 1 at least once)
    redelivered_before: int = 0  # the same, counted by ingest instances stopped during the run
    dropped: int = 0           # what the stored windows themselves report as dropped

    @property
    def lost(self) -> int:
        return self.windows_sent - self.windows_stored

    def __str__(self) -> str:
        return (f"{self.restarts} broker restarts ({self.signal}) in {self.seconds:.0f} s: "
                f"{self.windows_sent} windows sent, {self.windows_stored} stored, {self.lost} lost, "
                f"{self.duplicates} stored twice ({self.redelivered} redeliveries ignored); "
                f"{self.predictions} predictions made, {self.counted} counted; windows report {self.dropped} dropped")


class Feeder:
    """Steady traffic: predictions on a thread of their own, as an application makes them."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.made = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feeder", daemon=True)

    def __enter__(self) -> "Feeder":
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(WAIT_S)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.agent.predict(ROWS[self.made % len(ROWS)])
            self.made += 1
            time.sleep(0.003)


def _measure(store: TelemetryStore, agent: Agent, ingest: IngestService, figures: Figures) -> Figures:
    windows = store.windows(device=DEVICE)
    keys = [(w.epoch, w.seq) for w in windows]
    figures.windows_sent = agent.outbox.next_seq()
    figures.windows_stored = len(set(keys))
    figures.duplicates = len(keys) - len(set(keys))
    figures.counted = sum(w.count for w in windows)
    figures.dropped = sum(w.dropped for w in windows)
    figures.redelivered = figures.redelivered_before + ingest.stats.duplicates
    return figures


def run_restarts(workdir: Path, restarts: int, *, kill: bool = False, ingest_away_s: float = 0.0,
                 telemetry_interval_s: float = 0.1) -> Figures:
    """Restart the broker ``restarts`` times under traffic, each time once a window stored since the last restart
    shows that traffic flows end to end again; then stop predicting and wait until everything that will arrive
    has. ``kill``: SIGKILL instead of SIGTERM (Mosquitto then saves nothing). ``ingest_away_s``: before each
    restart the ingest stops for this long, so the broker holds its windows (queued for its session) when it
    goes down; the ingest starts again after the broker."""
    prefix = f"edgeops-restarts/{uuid.uuid4().hex[:12]}"
    key = new_key()
    preinstall(workdir / "data", build_release("churn", 1, key))
    broker = Mosquitto(workdir / "mosquitto").start()   # persistence on (and able to write its file as root)
    config = agent_config(workdir, broker.url, prefix, key, DEVICE, telemetry_interval_s=telemetry_interval_s,
                          reconnect_max_s=0.5)
    store = TelemetryStore(f"sqlite:///{workdir / 'telemetry.db'}")
    ingest_config = IngestConfig(broker_url=broker.url, prefix=prefix, group="restarts",
                                 client_id=f"ingest-{prefix.rsplit('/', 1)[-1]}", batch_size=200, flush_ms=50)
    ingest = IngestService(ingest_config, store)
    figures = Figures(signal="SIGKILL" if kill else "SIGTERM")
    agent: Agent | None = None
    start = time.monotonic()
    try:
        ingest.start(wait_s=WAIT_S)
        agent = Agent(config).start()
        with Feeder(agent) as feeder:
            for _ in range(restarts):
                stored = store.count_windows()
                if not wait_until(lambda n=stored: store.count_windows() > n, WAIT_S):
                    raise AssertionError(f"no window stored after restart {figures.restarts}: {figures}")
                subscribed = ingest.stats.subscribed
                if ingest_away_s:
                    ingest.stop()
                    time.sleep(ingest_away_s)
                    figures.redelivered_before += ingest.stats.duplicates
                broker.restart(kill=kill)
                figures.restarts += 1
                if ingest_away_s:
                    ingest, subscribed = IngestService(ingest_config, store).start(wait_s=WAIT_S), 0
                if not ingest.wait_until(lambda s, n=subscribed: s.subscribed > n, WAIT_S):
                    raise AssertionError(f"the ingest did not subscribe again after restart {figures.restarts}")
        figures.predictions = feeder.made
        # The open window closes on the owner thread's next tick; then wait for everything that is coming.
        last, quiet_since = -1, time.monotonic()
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            _measure(store, agent, ingest, figures)
            if agent.outbox.count() == 0 and figures.counted >= figures.predictions:
                break
            if figures.windows_stored != last:
                last, quiet_since = figures.windows_stored, time.monotonic()
            elif agent.outbox.count() == 0 and time.monotonic() - quiet_since > QUIET_S:
                break
            time.sleep(0.05)
        figures.seconds = time.monotonic() - start
        return _measure(store, agent, ingest, figures)
    finally:
        if agent is not None:
            agent.stop()
        ingest.stop()
        store.close()
        broker.stop()

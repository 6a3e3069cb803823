"""``kill -9`` at every durable step of an install, an activation and a rollback, in real agent processes.

Each scenario runs once to count its durable write steps (``tests/kill_at_write.py`` logs them), then once per
step with the process killing itself at exactly that step. After each kill a plain agent process starts on
the same data directory; its first report, its HTTP API and the pointer on disk must agree on the model it
serves, and that model must verify. A report of ``rolled_back`` must come with the previous model serving:
the failure this guards against is an agent that said ``rolled_back`` and came back serving the failed model.
"""

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from releases import (
    Control,
    Release,
    build_release,
    is_reported,
    kid,
    new_key,
    preinstall,
    public_pem,
    with_runtime_trap,
)
from services import free_port, wait_port

from edge_agent.installer import load_verified
from edge_agent.lifecycle import AgentState
from edge_agent.protocol import Topics, now_iso
from edge_agent.store import ModelRef, ModelStore
from edge_agent.verify import KeyRing

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ROW = {"age in years": 52.0, "income": 4.5, "plan": "pro"}
TRAPPED_ROW = {**ROW, "income": 1000.0}  # makes the trapped release fail in onnxruntime


@dataclass
class Scenario:
    name: str
    prepare: Callable[[Path], None]  # lays out the data dir before the agent starts
    done: Callable[[str, bytes], bool]  # the report that ends the scenario in the dry run
    desired: int | None = None  # the retained desired version for this scenario's device
    failing_requests: int = 0  # model failures to send over HTTP once the agent serves (probation breach)


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return new_key()


@pytest.fixture(scope="module")
def releases(key: Ed25519PrivateKey) -> dict[int, Release]:
    v1 = build_release("churn", 1, key, seed=0)
    return {1: v1, 2: with_runtime_trap(build_release("churn", 2, key, seed=1), key),
            3: build_release("churn", 3, key, seed=2, chunk_size=700)}


@pytest.fixture
def control(session_broker: str, topic_prefix: str, key: Ed25519PrivateKey) -> Iterator[Control]:
    ctl = Control(session_broker, topic_prefix, key)
    yield ctl
    ctl.close()


def on_probation(data_dir: Path, current: ModelRef, previous: ModelRef) -> None:
    ModelStore(data_dir).write_state(AgentState("probation", current=current, previous=previous).to_json())


def scenarios(releases: dict[int, Release]) -> list[Scenario]:
    v1, v2 = ModelRef("churn", 1), ModelRef("churn", 2)

    def serving_v1(d: Path) -> None:
        preinstall(d, releases[1])

    def probation_v2(d: Path) -> None:
        preinstall(d, releases[2], previous=releases[1])
        on_probation(d, v2, v1)

    return [
        Scenario("first-install", lambda d: d.mkdir(parents=True), is_reported("serving", 3), desired=3),
        Scenario("install-and-activate", serving_v1, is_reported("probation", 3), desired=3),
        Scenario("supersede-probation", probation_v2, is_reported("probation", 3), desired=3),
        Scenario("rollback", probation_v2, is_reported("rolled_back", 1), failing_requests=3),
    ]


def write_config(home: Path, url: str, prefix: str, key: Ed25519PrivateKey, device: str, http_port: int) -> Path:
    pub = home / f"{kid(key)}.pub"
    pub.write_bytes(public_pem(key))
    config = home / "agent.toml"
    config.write_text(
        f'device_id = "{device}"\ndata_dir = "{home / "data"}"\nbroker_url = "{url}"\n'
        f'public_keys = ["{pub}"]\ntopic_prefix = "{prefix}"\nhttp = "127.0.0.1:{http_port}"\n'
        "probation_s = 600.0\nprobation_min_predictions = 3\nprobation_max_error_rate = 0.5\n"
        "fetch_timeout_s = 20.0\nreconnect_max_s = 0.5\ntelemetry_interval_s = 3600.0\n"
        "report_steps_after_s = 0.0\n")
    return config


def spawn(config: Path, steps: Path | None = None, kill_at: int = 0) -> subprocess.Popen[bytes]:
    """A real agent process; with ``steps`` it logs its durable steps there and SIGKILLs itself at step
    ``kill_at`` (0: never)."""
    command = ["-m", "edge_agent"] if steps is None else [str(ROOT / "tests" / "kill_at_write.py")]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGEOPS_TEST_STEP_LOG": str(steps),
           "EDGEOPS_TEST_KILL_AT": str(kill_at)}
    with (config.parent / "log").open("ab") as err:
        return subprocess.Popen([sys.executable, *command, "run", "--config", str(config), "--log-level", "WARNING"],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, env=env)


def http(port: int, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def drive(scenario: Scenario, proc: subprocess.Popen[bytes], port: int) -> None:
    """Send the scenario's failing requests once the agent serves (the process may die while they run)."""
    if not scenario.failing_requests:
        return
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            for _ in range(scenario.failing_requests):
                http(port, "/v1/predict", {"record": TRAPPED_ROW})
            return
        except OSError:  # not listening yet, or killed mid-request
            time.sleep(0.05)


def verified_pointer(data_dir: Path, key: Ed25519PrivateKey) -> ModelRef | None:
    store = ModelStore(data_dir)
    current = store.read_pointer().current
    if current is not None:
        load_verified(store, KeyRing.from_public_keys([key.public_key()]), current, 64 << 20)
    return current


def check_restart(run: "Run", url: str, prefix: str, control: Control, key: Ed25519PrivateKey, device: str,
                  failed: ModelRef | None) -> dict[str, Any]:
    """Start a plain agent after a kill: it must serve a verified model and report exactly that model.

    It runs under a topic prefix of its own, where no desired state is retained, so nothing moves it on
    from what start-up made of the disk while the test compares its report, its HTTP API and the pointer."""
    verified_pointer(run.home / "data", key)  # whatever the kill left names a complete, verified model (or none)
    config = write_config(run.home, url, f"{prefix}-restart", key, device, run.port)
    restarted_at = now_iso()
    proc = spawn(config)
    try:
        first_report = is_reported(None, since=restarted_at)
        _, first = control.wait_for(lambda t, p: t.startswith(f"{prefix}-restart/") and first_report(t, p),
                                    timeout=60)
        wait_port("127.0.0.1", run.port, timeout=30)
        _, health = http(run.port, "/v1/health")
    finally:
        proc.kill()
        proc.wait(timeout=10)
    report = json.loads(first)
    reported_ref = None if report["version"] is None else ModelRef(report["model"], report["version"])
    serving = verified_pointer(run.home / "data", key)  # as start-up left it (it may finish a rollback)
    assert reported_ref == serving, f"reports {reported_ref} while the pointer names {serving}"
    assert (health["state"], health["model"], health["version"]) == \
        (report["state"], report["model"], report["version"]), (health, report)
    if report["state"] == "rolled_back":
        assert reported_ref != failed, f"reports rolled_back while {failed} still serves"
    return report


@dataclass
class Run:
    home: Path
    config: Path
    port: int
    proc: subprocess.Popen[bytes]


def start(scenario: Scenario, base: Path, url: str, prefix: str, key: Ed25519PrivateKey, control: Control,
          kill_at: int) -> Run:
    home = base / scenario.name / str(kill_at)
    home.mkdir(parents=True)
    scenario.prepare(home / "data")
    port = free_port()
    config = write_config(home, url, prefix, key, f"kp-{scenario.name}", port)
    control.received.clear()
    proc = spawn(config, home / "steps", kill_at)
    drive(scenario, proc, port)
    return Run(home, config, port, proc)


def kill_at_each_step(scenario: Scenario, base: Path, url: str, prefix: str, key: Ed25519PrivateKey,
                      control: Control) -> list[tuple[str, str]]:
    """The dry run counts the steps; then one run killed at each. Returns (step, what the restart reported)."""
    device = f"kp-{scenario.name}"
    control.client.subscribe(control.topics.device(device, "reported"), qos=1)
    control.client.subscribe(Topics(f"{prefix}-restart").device(device, "reported"), qos=1)
    if scenario.desired is not None:
        control.set_desired(device, "churn", scenario.desired)
    dry = start(scenario, base, url, prefix, key, control, 0)
    control.wait_for(lambda t, p: f"/{device}/" in t and scenario.done(t, p), timeout=60)
    dry.proc.kill()
    dry.proc.wait(timeout=10)
    words = (dry.home / "steps").read_text().split()
    steps = [" ".join(pair) for pair in zip(words[::2], words[1::2], strict=True)]
    assert len(steps) >= 6, steps
    failed = ModelRef("churn", 2) if scenario.failing_requests else None
    outcomes = []
    for point in range(1, len(steps) + 1):
        run = start(scenario, base, url, prefix, key, control, point)
        assert run.proc.wait(timeout=60) == -9, f"{scenario.name}: not killed at step {point} ({steps})"
        report = check_restart(run, url, prefix, control, key, device, failed)
        outcomes.append((steps[point - 1], f"{report['state']} {report['model']}@{report['version']}"))
    return outcomes


def test_kill_at_every_durable_step_restarts_into_a_verified_model_that_matches_its_report(
        tmp_path: Path, session_broker: str, topic_prefix: str, control: Control, key: Ed25519PrivateKey,
        releases: dict[int, Release]) -> None:
    for release in releases.values():
        control.publish_release(release)
    seen = {scenario.name: kill_at_each_step(scenario, tmp_path, session_broker, topic_prefix, key, control)
            for scenario in scenarios(releases)}
    kills = sum(map(len, seen.values()))
    assert kills >= 50, kills
    # every scenario crossed its point of no return: both sides of it were seen after a restart
    for name, results in seen.items():
        assert len({outcome.split()[1] for _, outcome in results}) >= 2, (name, results)
    rollback = [outcome for _, outcome in seen["rollback"]]
    assert "rolled_back churn@1" in rollback and "probation churn@2" in rollback, rollback
    print(f"\n{kills} kills at durable steps; every restart served a verified model matching its report")
    for name, results in seen.items():
        print(f"{name}: " + "; ".join(f"{step} -> {outcome}" for step, outcome in results))

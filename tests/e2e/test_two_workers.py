"""The control plane across "machines": a Prefect server on PostgreSQL and two process workers that share no
filesystem (each its own HOME, working directory and TMPDIR; neither has a checkout, a key or a config file).
Each flow run gets the code from the team's git repository (a bare repository, ``file://``) through the
`git_clone` pull step of deployments/prefect.yaml. All they have in common: the S3 server (SeaweedFS: the
registry and the retrain extracts), PostgreSQL (rollout state and telemetry) and the broker (a Mosquitto of
the test's own), plus Prefect itself (the signing key in a Secret block).

The pipeline runs on the "trainer" worker, the rollout on the "rollout" worker (work queues steer them), then
real agents serve the model to shifted traffic, the ingest stores their telemetry in PostgreSQL, the monitor
deployment sees drift there, its event starts the retrain deployment on whichever worker is free, and the
agents end on the new version. An operator machine (its own HOME and clone) deploys, publishes v1 and runs
the ingest, as the README says."""

import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import yaml
from agent_procs import AgentProcess, stop_all
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect_procs import ROOT, log_tail, marked_commands, prefect_env, running_prefect_server, stop
from seaweedfs import SeaweedFS
from services import Mosquitto, free_port, postgres_database, wait_until

from edge_agent.protocol import Topics
from edgeops.config import S3Config
from edgeops.demo.parts import agent_config, shifted
from edgeops.demo.prefect_api import PrefectView
from edgeops.demo.traffic import TrafficDriver, records_of
from edgeops.mqtt import ControlClient
from edgeops.release.registry import Registry
from edgeops.release.signing import generate_keys
from edgeops.rollout.fleet import read_fleet
from edgeops.telemetry.store import TelemetryStore
from edgeops.train.data import file_sha256
from edgeops.train.samples import make_sample

pytestmark = pytest.mark.e2e
MODEL, TARGET = "churn", "churned"
DEADLINE_S = 840.0  # the whole loop; a flow run on a busy 2-core machine takes 20-60 s to start and import
ROWS = 2000  # small, but above the drift statistics' floor and enough for the retrain to pass its gates


@dataclass
class Machine:
    """A host of its own: HOME, working directory and TMPDIR (the process worker clones each flow run into a
    temporary directory), and the environment a team gives it: the Prefect API, S3 credentials (the endpoint
    comes from edgeops.yaml) and edgeops installed (here: a folder of its own on PYTHONPATH)."""

    root: Path
    api_url: str
    aws: dict[str, str]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for sub in ("home", "work", "tmp", "site"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        for package in (ROOT / "src" / "edgeops", ROOT / "edge_agent"):  # edgeops installed, flows included
            (self.root / "site" / package.name).symlink_to(package)

    @property
    def work(self) -> Path:
        return self.root / "work"

    def env(self) -> dict[str, str]:
        env = prefect_env(self.root / "home" / ".prefect", self.api_url)
        env = {k: v for k, v in env.items() if not k.startswith("AWS_")}
        env.update(HOME=str(self.root / "home"), TMPDIR=str(self.root / "tmp"), PYTHONPATH=str(self.root / "site"),
                   PREFECT_WORKER_QUERY_SECONDS="1", PREFECT_WORKER_PREFETCH_SECONDS="5", **self.aws)
        return env

    def run(self, command: str, cwd: Path | None = None) -> str:
        done = subprocess.run(command, shell=True, cwd=cwd or self.work, env=self.env(), capture_output=True,
                              text=True, timeout=300, stdin=subprocess.DEVNULL)
        out = done.stdout + done.stderr
        assert done.returncode == 0, f"`{command}` on {self.root.name} exited {done.returncode}:\n{out[-3000:]}"
        return out

    def spawn(self, name: str, argv: list[str], cwd: Path | None = None) -> Path:
        log = self.root / f"{name}.log"
        with log.open("wb") as sink:
            self.procs.append(subprocess.Popen(argv, cwd=cwd or self.work, env=self.env(), stdout=sink,
                                               stderr=subprocess.STDOUT, start_new_session=True))
        return log

    def check_alive(self) -> None:
        for proc in self.procs:
            assert proc.poll() is None, f"{proc.args} on {self.root.name} exited {proc.returncode}"

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            stop(proc)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


def team_repository(tmp: Path, config: dict[str, Any]) -> tuple[str, str]:
    """The team's repository as a bare one (``file://`` URL): the deployment file, edgeops.yaml and the first
    training extract; no key, no database, no registry, no code (the entrypoints are modules of the installed
    edgeops: ``edgeops.flows.*``)."""
    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    assert all(d["entrypoint"].startswith("edgeops.flows.") for d in spec["deployments"]), spec["deployments"]
    src = tmp / "team-src"
    shutil.copytree(ROOT / "deployments", src / "deployments", ignore=shutil.ignore_patterns("__pycache__"))
    (src / "edgeops.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (src / "data").mkdir()
    make_sample("binary", ROWS, seed=0).to_csv(src / "data" / "train.csv", index=False)  # the pipeline's default
    subprocess.run(["git", "init", "-q", "-b", "main", str(src)], check=True)
    git(src, "add", ".")
    git(src, "commit", "-qm", "edgeops project")
    bare = tmp / "team.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(src), str(bare)], check=True)
    shutil.rmtree(src)
    return f"file://{bare}", git(bare, "rev-parse", "HEAD")


def run_id(out: str) -> UUID:
    found = re.search(r"UUID: ([0-9a-f-]{36})", out)
    assert found, out
    return UUID(found.group(1))


def deploy(operator: Machine, repo_url: str) -> tuple[Path, Path]:
    """The operator: a clone, the README's deploy commands, work queues that pin the pipeline and the rollout to
    machines, the signing key into a Secret block. The clone and the public key (for the devices)."""
    checkout = operator.work / "edgeops-project"
    operator.run(f"git clone -q {repo_url} {checkout}")
    for command in marked_commands(ROOT / "README.md", "deploy-commands"):
        operator.run(command, cwd=checkout)
    operator.run(f"prefect variable set edgeops_git_repository {repo_url} --overwrite", cwd=checkout)
    for name, queue in (("pipeline", "training"), ("rollout", "rollouts")):
        operator.run(f"prefect deploy --name {name} --work-queue {queue} --prefect-file deployments/prefect.yaml",
                     cwd=checkout)
    private, public = generate_keys(operator.root / "keys")
    operator.run(f'python -c "import sys; from prefect.blocks.system import Secret; '
                 f"Secret(value=sys.stdin.read()).save('edgeops-signing-key', overwrite=True)\" < {private}")
    return checkout, public


@pytest.fixture
def prefect_on_postgres(tmp_path: Path) -> Iterator[str]:
    """A `prefect server start` of this test's own on a fresh PostgreSQL database (asyncpg), as a team runs it;
    this process's Prefect client talks to it (never to a temporary server of its own)."""
    with postgres_database("prefect_test") as url, \
            running_prefect_server(tmp_path / "prefect-server",
                                   url.replace("postgresql+psycopg://", "postgresql+asyncpg://")) as api, \
            temporary_settings({PREFECT_API_URL: api}):
        yield api


@pytest.mark.timeout(DEADLINE_S + 120)  # our own deadline fails first, with the workers' logs
def test_two_workers_that_share_no_disk_close_the_loop(
        prefect_on_postgres: str, pg_database: str, s3_server: SeaweedFS, own_broker: Mosquitto,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in s3_server.env().items():  # this process reads the registry too, to check it
        monkeypatch.setenv(name, value)
    t0 = time.monotonic()
    marks: dict[str, float] = {}
    api, base = prefect_on_postgres, f"{uuid.uuid4().hex[:12]}"
    s3_url = f"s3://{s3_server.bucket}/{base}"
    config = {"name": MODEL, "data": {"target": TARGET},
              "registry": {"root": f"{s3_url}/registry",
                           "s3": {"endpoint_url": s3_server.endpoint, "addressing_style": "path"}},
              "mqtt": {"url": own_broker.url, "prefix": "edgeops"},
              "signing": {"key_secret": "edgeops-signing-key"},
              "telemetry": {"url": pg_database}, "rollout": {"state_url": pg_database},
              "models": {MODEL: {"data": f"{s3_url}/exports/churn-*.csv"}}}
    repo_url, head = team_repository(tmp_path, config)
    aws = {k: v for k, v in s3_server.env().items() if k != "AWS_ENDPOINT_URL"}
    operator, trainer, roller = (Machine(tmp_path / name, api, aws) for name in ("operator", "trainer", "roller"))
    agents: list[AgentProcess] = []
    traffic: TrafficDriver | None = None
    view = PrefectView(api)
    try:
        checkout, public = deploy(operator, repo_url)
        deployments = {d: view.deployment_id(d) for d in ("edgeops-pipeline/pipeline", "edgeops-rollout/rollout",
                                                           "edgeops-retrain/retrain", "monitor/monitor")}
        assert all(deployments.values()), deployments
        assert view.client.read_deployment(deployments["edgeops-pipeline/pipeline"]).work_queue_name == "training"
        assert view.client.read_deployment(deployments["edgeops-rollout/rollout"]).work_queue_name == "rollouts"
        marks["deployed"] = time.monotonic() - t0

        logs = {"trainer": trainer.spawn("worker", ["prefect", "worker", "start", "--pool", "edgeops-process",
                                                    "--name", "trainer", "-q", "training", "-q", "default"]),
                "roller": roller.spawn("worker", ["prefect", "worker", "start", "--pool", "edgeops-process",
                                                  "--name", "roller", "-q", "rollouts", "-q", "default"])}
        ingest_log = operator.spawn("ingest", ["edgeops", "telemetry", "serve", "--flush-ms", "100",
                                               "--stats-every", "5"], cwd=checkout)  # telemetry.url of the clone
        ports = {f"edge-{i}": free_port() for i in (1, 2)}
        for device, port in ports.items():
            home = tmp_path / "devices" / device
            home.mkdir(parents=True)
            shutil.copy(public, home / "release.pub")  # installed with the agent: the device's own copy
            agents.append(AgentProcess(device, agent_config(home, device, own_broker.url, "edgeops",
                                                            home / "release.pub", port, 1.0)).start())
        machines = (operator, trainer, roller)

        def wait(what: str, ready: Any, poll_s: float = 0.5) -> Any:
            while not (value := ready()):
                for machine in machines:
                    machine.check_alive()
                dead = [a.device for a in agents if not a.running]
                assert not dead, f"agents exited: {dead}"
                assert time.monotonic() - t0 < DEADLINE_S, f"timed out waiting for {what} ({marks})\n" + "\n".join(
                    f"--- {name}:\n{log_tail(log, 60)}" for name, log in {**logs, "ingest": ingest_log}.items())
                time.sleep(poll_s)
            return value

        def finished(flow_run: UUID) -> Any:
            run = wait(f"flow run {flow_run}", lambda: (r := view.client.read_flow_run(flow_run)).state
                       and r.state.is_final() and r)
            assert run.state.is_completed(), f"{run.state}: {run.state.message}\n" + "\n".join(
                f"--- {name}:\n{log_tail(log, 80)}" for name, log in logs.items())
            return run

        # v1: the pipeline deployment (data/train.csv of the clone) on the trainer, into the S3 registry
        pipeline = finished(run_id(operator.run("prefect deployment run edgeops-pipeline/pipeline", cwd=checkout)))
        registry = Registry(f"{s3_url}/registry", s3=S3Config(endpoint_url=s3_server.endpoint))
        v1 = registry.get(MODEL, 1)
        assert v1.manifest.lineage.code_revision == head  # it ran in a clone of the team's repository
        marks["v1_registered"] = time.monotonic() - t0

        # the operator publishes it; the rollout deployment runs on the other worker, state in PostgreSQL
        operator.run(f"edgeops release publish {MODEL}@1", cwd=checkout)
        with ControlClient(own_broker.url) as client:
            topics = Topics("edgeops")
            wait("two agents online", lambda: sum(d.online is True for d in read_fleet(client, topics).devices) == 2)
            rollout = finished(run_id(operator.run(
                f"prefect deployment run edgeops-rollout/rollout --param release={MODEL}@1 "
                "--param target='{\"fleet\": \"demo\"}' "
                "--param policy='{\"canary\": \"50%\", \"waves\": 1, \"device_timeout_s\": 120}'", cwd=checkout)))
            assert {d.device: d.version for d in read_fleet(client, topics).devices} == {d: 1 for d in ports}
            marks["v1_everywhere"] = time.monotonic() - t0

            # shifted traffic → telemetry in PostgreSQL → the monitor deployment sees drift → its event → retrain
            since = datetime.now(UTC)
            extract = tmp_path / "churn-2026-12.csv"
            shifted(make_sample("binary", ROWS, seed=1), "monthly charges", 3.0).to_csv(extract, index=False)
            s3_server.client().upload_file(str(extract), s3_server.bucket, f"{base}/exports/churn-2026-12.csv")
            traffic = TrafficDriver(ports, records_of(shifted(make_sample("binary", 3000, seed=11), "monthly charges",
                                                              3.0).to_dict("records"), drop=[TARGET])).start()
            wait("1500 predictions of v1 in PostgreSQL", lambda: stored(pg_database) >= 1500)
            monitors = []
            while True:
                assert len(monitors) < 4, "the monitor saw no drift in shifted traffic"
                monitors.append(finished(run_id(operator.run(
                    f"prefect deployment run monitor/monitor --param model={MODEL} --param hours=1", cwd=checkout))))
                if wait_until(lambda: view.drift_events(MODEL, since), 15):  # the event reaches the server
                    break
            marks["drift_event"] = time.monotonic() - t0

            def promoted() -> Any:
                runs = view.runs_of(deployments["edgeops-retrain/retrain"], since)
                failed = [r for r in runs if r.state is not None and r.state.is_final() and not r.state.is_completed()]
                assert not failed, [(r.name, r.state and r.state.message) for r in failed]
                return next((r for r in runs if r.state is not None and r.state.is_completed()
                             and "promoted" in (r.state.message or "")), None)
            retrain = wait("a retrain run that promoted v2", promoted)
            marks["v2_champion"] = time.monotonic() - t0
            champion = registry.champion(MODEL)
            assert champion is not None and champion.version == 2
            assert champion.report["recipe"]["source"] == {"data": f"{s3_url}/exports/churn-*.csv"}
            assert champion.manifest.lineage.data_sha256 == file_sha256(extract)  # retrained on the S3 extract
            wait("every agent on v2", lambda: all(d.version == 2 and d.state == "serving"
                                                  for d in read_fleet(client, topics).devices))
        marks["v2_everywhere"] = time.monotonic() - t0

        def ran(run: Any) -> list[str]:
            """The workers whose log holds the run's own output (both may try to submit a run of a queue they
            share; the server lets one of them have it)."""
            line = f"Flow run '{run.name}' - Finished in state"
            return [name for name, log in logs.items() if line in log.read_text(errors="replace")]
        assert ran(pipeline) == ["trainer"] and ran(rollout) == ["roller"]
        ran_retrain = wait("the retrain run's last line in its worker's log", lambda: ran(retrain))
        assert len(ran_retrain) == 1, ran_retrain
        assert {r.work_queue_name for r in (pipeline, rollout)} == {"training", "rollouts"}
        for machine in (trainer, roller):  # no checkout, key, config or registry ever landed outside TMPDIR
            assert not list((machine.root / "work").iterdir()), list((machine.root / "work").iterdir())
        print(f"\ntwo workers: retrain ran on {ran_retrain[0]}; monitor runs {len(monitors)}; milestones (s) "
              + ", ".join(f"{k} {v:.0f}" for k, v in marks.items()))
    finally:
        if traffic is not None:
            traffic.stop()
        stop_all(agents)
        for machine in (trainer, roller, operator):
            machine.stop_all()
        view.close()


def stored(db_url: str) -> int:
    store = TelemetryStore(db_url)
    try:
        return sum(w.count for w in store.windows(model=MODEL, version=1))
    finally:
        store.close()

"""The README's deploy commands, verbatim, on a fresh Prefect server: they must create the work pool and every
deployment with the parameter descriptions the UI shows, twice in a row (they claim to be idempotent), and a
process worker that shares nothing with this checkout but the git repository must run a deployment from a
clone. The docker and kubernetes variants (docs/deployments.md) are deployed too, as far as a machine without
a Docker engine or a cluster allows: their pools are created from deployments/work-pools/ and the deployments
land on them with the control-plane image as job variable."""

import re
import subprocess
import time
from pathlib import Path
from uuid import UUID

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import Deployment
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect_procs import DEADLINE_S, ROOT, log_tail, marked_commands, prefect_env, stop

from edgeops.release.registry import Registry
from edgeops.release.signing import generate_keys
from edgeops.train.samples import make_sample

pytestmark = pytest.mark.e2e
FLOWS = {"edgeops-pipeline": "pipeline", "edgeops-rollout": "rollout", "edgeops-retrain": "retrain",
         "monitor": "monitor"}


def run(command: str, env: dict[str, str], cwd: Path = ROOT) -> str:
    """One command as a shell runs it; its output, or a failed test showing it."""
    done = subprocess.run(command, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    out = done.stdout + done.stderr
    assert done.returncode == 0, f"`{command}` exited {done.returncode}:\n{out[-3000:]}"
    return out


def deployments_by_name(url: str) -> dict[str, Deployment]:
    with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as client:
        flows = {f.id: f.name for f in client.read_flows()}
        return {FLOWS[flows[d.flow_id]]: d for d in client.read_deployments()}


def test_the_readme_deploy_commands_work_on_a_fresh_server(prefect_server: str, tmp_path: Path) -> None:
    commands = marked_commands(ROOT / "README.md", "deploy-commands")
    assert any(c.startswith("prefect work-pool create edgeops-process") for c in commands)
    assert any(c.startswith("prefect deploy --all") for c in commands)
    env = prefect_env(tmp_path / "cli-home", prefect_server)
    for _ in range(2):  # every command is idempotent: a second round changes nothing and fails nothing
        for command in commands:
            run(command, env)

    deployments = deployments_by_name(prefect_server)
    assert set(deployments) == set(FLOWS.values())
    for name, deployment in deployments.items():
        assert deployment.work_pool_name == "edgeops-process", name
        properties = deployment.parameter_openapi_schema["properties"]
        assert properties and all(p.get("description") for p in properties.values()), name
        assert deployment.pull_steps == [{"prefect.deployments.steps.git_clone": {
            "repository": "{{ prefect.variables.edgeops_git_repository }}",
            "branch": "{{ prefect.variables.edgeops_git_branch }}"}}], name  # left for the worker to resolve
        assert not {"broker_url", "password", "username", "keys_dir", "db_path"} & set(deployment.parameters), name
    with temporary_settings({PREFECT_API_URL: prefect_server}), get_client(sync_client=True) as client:
        actions = [a for automation in client.read_automations() for a in automation.actions]
        assert [getattr(a, "deployment_id", None) for a in actions] == [deployments["retrain"].id]
        assert client.read_variable_by_name("edgeops_git_repository") is not None


def test_a_process_worker_runs_a_deployment_from_a_git_clone(prefect_server: str, tmp_path: Path) -> None:
    """The worker has no checkout: the pull step clones the repository the server's variable names (here a
    local one holding only a committed edgeops.yaml), and the flow, loaded from the installed edgeops by its
    module path, runs in that clone."""
    repo, state = tmp_path / "team-repo", tmp_path / "state"
    repo.mkdir()
    generate_keys(state / "keys")
    (repo / "edgeops.yaml").write_text(yaml.safe_dump({"registry": {"root": str(state / "registry"),
                                                                    "keys_dir": str(state / "keys")}}))
    for git in (["init", "-q", "-b", "main"], ["add", "."],
                ["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "config"]):
        subprocess.run(["git", *git], cwd=repo, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True,
                          text=True).stdout.strip()
    data = tmp_path / "train.csv"
    make_sample("binary", 300, seed=1).to_csv(data, index=False)

    env = prefect_env(tmp_path / "cli-home", prefect_server)
    for command in marked_commands(ROOT / "README.md", "deploy-commands"):
        run(command, env)
    run(f"prefect variable set edgeops_git_repository {repo} --overwrite", env)
    out = run(f"prefect deployment run edgeops-pipeline/pipeline --param data={data}", env)
    flow_run_id = UUID(re.search(r"UUID: ([0-9a-f-]{36})", out).group(1))  # type: ignore[union-attr]

    worker_dir, log = tmp_path / "worker", tmp_path / "worker.log"
    worker_dir.mkdir()
    with log.open("wb") as sink:
        worker = subprocess.Popen(["prefect", "worker", "start", "--pool", "edgeops-process"], cwd=worker_dir,
                                  env={**prefect_env(tmp_path / "worker-home", prefect_server),
                                       "PREFECT_WORKER_QUERY_SECONDS": "1"},
                                  stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        with temporary_settings({PREFECT_API_URL: prefect_server}), get_client(sync_client=True) as client:
            deadline = time.monotonic() + 2 * DEADLINE_S
            while not ((run_ := client.read_flow_run(flow_run_id)).state and run_.state.is_final()):
                assert time.monotonic() < deadline, f"the flow run did not finish:\n{log_tail(log)}"
                time.sleep(0.5)
        assert run_.state.is_completed(), f"{run_.state}\n{log_tail(log, 80)}"
    finally:
        stop(worker)
    record = Registry(state / "registry").get("churn", 1)
    assert record.manifest.lineage.code_revision == head  # it ran in the clone, at the repository's commit
    assert record.report["recipe"]["target"] == "churned"


@pytest.mark.parametrize("kind", ["docker", "kubernetes"])
def test_the_container_variants_deploy_onto_their_pools(prefect_server: str, tmp_path: Path, kind: str) -> None:
    """No Docker engine or cluster here: what is checked is that the pool definitions are templates the server
    accepts and that the documented command puts every deployment on the pool with the control-plane image."""
    env = prefect_env(tmp_path / "cli-home", prefect_server)
    commands = marked_commands(ROOT / "docs" / "deployments.md", f"{kind}-commands")
    for command in commands:
        run(command, env)
    deployments = deployments_by_name(prefect_server)
    assert set(deployments) == set(FLOWS.values())
    for name, deployment in deployments.items():
        assert deployment.work_pool_name == f"edgeops-{kind}", name
        assert deployment.job_variables["image"] == "registry.example.com/edgeops-control:0.1.0", name
    with temporary_settings({PREFECT_API_URL: prefect_server}), get_client(sync_client=True) as client:
        pool = client.read_work_pool(f"edgeops-{kind}")
    assert pool.type == kind
    assert pool.base_job_template["variables"]["properties"]["image"]["default"].startswith("edgeops-control:")

"""A wrong trusted key must not cost a device its model: real agent processes, no broker reachable."""

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from releases import build_release, kid, new_key, preinstall, public_pem
from services import free_port, wait_port

from edge_agent.store import ModelRef, ModelStore

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ROW = {"age in years": 52.0, "income": 4.5, "plan": "pro"}


def get(port: int, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    data = None if body is None else json.dumps(body).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data),
                                    timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def run_agent(tmp: Path, key: Ed25519PrivateKey, port: int) -> subprocess.Popen[bytes]:
    """An agent trusting only ``key``, whose broker is a port where nothing listens (the broker is away)."""
    pub = tmp / f"{kid(key)}.pub"
    pub.write_bytes(public_pem(key))
    config = tmp / "agent.toml"
    config.write_text(f'device_id = "keyed"\ndata_dir = "{tmp / "data"}"\nbroker_url = "mqtt://127.0.0.1:{free_port()}"\n'
                      f'public_keys = ["{pub}"]\nhttp = "127.0.0.1:{port}"\nreconnect_max_s = 0.5\n')
    with (tmp / "log").open("ab") as err:
        proc = subprocess.Popen([sys.executable, "-m", "edge_agent", "run", "--config", str(config)], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, "PYTHONPATH": str(ROOT)})
    wait_port("127.0.0.1", port, timeout=30)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(timeout=15)


def test_a_wrong_key_keeps_the_stored_model_and_a_right_key_serves_it_again_without_a_broker(
        tmp_path: Path) -> None:
    right, wrong = new_key(), new_key()
    v1, v2 = build_release("churn", 1, right, seed=0), build_release("churn", 2, right, seed=1)
    preinstall(tmp_path / "data", v2, previous=v1)
    port = free_port()

    proc = run_agent(tmp_path, wrong, port)
    try:
        status, health = get(port, "/v1/health")
        assert (status, health["status"], health["model"]) == (200, "no_model", None)
        assert "fails verification" in health["last_error"]  # the operator sees why
        assert get(port, "/v1/predict", {"record": ROW})[0] == 503
    finally:
        stop(proc)
    pointer = ModelStore(tmp_path / "data").read_pointer()
    assert (pointer.current, pointer.previous) == (ModelRef("churn", 2), ModelRef("churn", 1))

    proc = run_agent(tmp_path, right, port)  # the broker is still away: only the disk can give the model back
    try:
        status, health = get(port, "/v1/health")
        assert (status, health["status"], health["model"], health["version"]) == (200, "ok", "churn", 2)
        status, answer = get(port, "/v1/predict", {"record": ROW})
        assert status == 200 and answer["prediction"]["label"] in (0, 1)
    finally:
        stop(proc)
    assert "Traceback" not in (tmp_path / "log").read_text()

"""The demo's process supervisor: what it starts is gone afterwards — grandchildren too, and also when the
supervising process itself is killed with SIGKILL (PR_SET_PDEATHSIG)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeops.demo.run import prepare_work_dir
from edgeops.errors import EdgeopsError
from edgeops.stack.supervisor import ServiceError, Supervisor, group_alive

pytestmark = pytest.mark.integration


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[1].startswith("Z"))  # a zombie is gone


def wait_gone(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_stop_all_reaches_grandchildren_and_a_child_ignoring_sigterm(tmp_path: Path) -> None:
    grandchild = tmp_path / "grandchild.pid"
    with Supervisor(tmp_path / "logs", grace_s=1.0) as supervisor:
        parent = supervisor.spawn("parent", ["sh", "-c", f"sleep 300 & echo $! > {grandchild}; wait"])
        stubborn = supervisor.spawn("stubborn", [sys.executable, "-c",
                                                 "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                                 "print('ready', flush=True); time.sleep(300)"])
        supervisor.wait_until(parent, grandchild.exists, 10, "grandchild pid")
        supervisor.wait_until(stubborn, lambda: "ready" in stubborn.log.read_text(), 10, "ready line")
        sleeper = int(grandchild.read_text())
        assert pid_alive(sleeper)
    assert not group_alive(parent.pid) and not group_alive(stubborn.pid)
    assert wait_gone(sleeper)


def test_children_die_with_a_killed_supervisor(tmp_path: Path) -> None:
    script = ("import sys, time; from pathlib import Path; from edgeops.stack.supervisor import Supervisor; "
              "s = Supervisor(Path(sys.argv[1])); c = s.spawn('sleeper', ['sleep', '300']); "
              "print(c.pid, flush=True); time.sleep(300)")
    owner = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "logs")], stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    child = int(owner.stdout.readline())
    assert pid_alive(child)
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    assert wait_gone(child), "the child outlived its SIGKILLed supervisor"


def test_a_child_that_exits_early_is_reported_with_its_log(tmp_path: Path) -> None:
    with Supervisor(tmp_path / "logs") as supervisor:
        child = supervisor.spawn("broken", ["sh", "-c", "echo cannot bind port >&2; exit 3"])
        with pytest.raises(ServiceError, match=r"(?s)broken exited \(code 3\).*cannot bind port"):
            supervisor.wait_until(child, lambda: False, 10, "listening port")


def test_work_dir_of_another_owner_is_never_wiped(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.csv").write_text("a,b\n")
    with pytest.raises(EdgeopsError, match="not made by `edgeops demo`"):
        prepare_work_dir(project)
    assert (project / "train.csv").exists()

    demo = tmp_path / "demo"
    prepare_work_dir(demo)
    (demo / "old-run.db").write_text("x")
    prepare_work_dir(demo)  # its own: wiped for a clean run
    assert sorted(p.name for p in demo.iterdir()) == [".edgeops-demo"]

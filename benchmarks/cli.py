"""How fast the ``edgeops`` commands answer, against the libraries they cannot do without.

    .venv/bin/python benchmarks/cli.py [--rounds 5] [--calls 3] [--devices 20]

Sets up a project as ``edgeops quickstart`` leaves it, in a temporary directory (a signing key, three registered
versions of a real scikit-learn → ONNX release, a 2,000-row sample CSV, no edgeops.yaml) and a Mosquitto of
its own on a free port, named by $EDGEOPS_MQTT_URL, holding the retained reported/status messages of
``--devices`` devices. Then interleaved rounds (benchmarks/rounds.py): each round runs ``--calls`` processes of
the baseline and of the command, alternating which goes first, and gives one ratio command / baseline of
wall-clock time and one of CPU seconds (the children's, from ``wait4``). Every process is a fresh interpreter
with stdout piped, as in a script, and bytecode caching on:

    edgeops --help / models list / fleet ls --json      vs  python -c "import typer, rich"   target <= 1.5x
    edgeops pipeline run with a bad target (the error)   vs  python -c "import pandas"        target <= 2x

and, for context (no target): ``models list`` in a project with an edgeops.yaml (PyYAML is imported then),
importing paho-mqtt beside Typer, plainly and as edgeops imports it (edge_agent/paho_import.py: what any MQTT
command pays before it connects), the least a ``fleet ls --json`` can do with Typer and paho
(benchmarks/fleet_floor.py: no edgeops code), and ``edgeops --help`` on a terminal (a pty: Typer's rich
help). Each command's exit code and output are checked once before timing. The ``edgeops up`` rows of issue 17
live with that command's benchmark.
"""

import argparse
import contextlib
import os
import pty
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the test helpers: Mosquitto on a free port, a signed real release

from releases import build_release  # noqa: E402
from rounds import Ratio, load_average, print_table, ratios, rotating_rounds  # noqa: E402
from services import running_mosquitto  # noqa: E402

from edge_agent.protocol import DEFAULT_PREFIX, Reported, Status, Topics  # noqa: E402
from edgeops.mqtt import ControlClient  # noqa: E402
from edgeops.release.registry import Registry  # noqa: E402
from edgeops.release.signing import generate_keys, load_private_key  # noqa: E402
from edgeops.train.samples import write_sample  # noqa: E402


def edgeops_command() -> list[str]:
    """The console script beside this interpreter (what a user runs), else ``python -m edgeops.cli``."""
    script = Path(sys.executable).with_name("edgeops")
    return [str(script)] if script.exists() else [sys.executable, "-m", "edgeops.cli"]


def run_timed(argv: list[str], cwd: Path, env: dict[str, str], terminal: bool = False) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + system of the child and its children) and the exit code of one run.
    Output goes nowhere (stdout is not a terminal, as in a pipe) or, with ``terminal``, into a pty we drain."""
    master = slave = -1
    if terminal:
        master, slave = pty.openpty()
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=slave if terminal else subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if terminal:
        os.close(slave)
        with contextlib.suppress(OSError):  # EIO once the child closed the terminal
            while os.read(master, 65536):
                pass
        os.close(master)
    _, status, usage = os.wait4(proc.pid, 0)  # not proc.wait(): wait4 also gives the child's CPU time
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_utime + usage.ru_stime, proc.returncode


@contextmanager
def project(devices: int) -> Iterator[tuple[Path, dict[str, str]]]:
    """A project as quickstart leaves it (keys, registry, sample data; no edgeops.yaml) with the broker in
    $EDGEOPS_MQTT_URL, and beside it ``configured/``: the same project through an edgeops.yaml."""
    with tempfile.TemporaryDirectory(prefix="edgeops-bench-cli-") as tmp:
        work = Path(tmp)
        with running_mosquitto(work / "mosquitto") as broker:
            private, _ = generate_keys(work / ".edgeops" / "keys")
            key = load_private_key(private)
            registry = Registry(work / ".edgeops" / "registry")
            for seed in range(3):
                registry.register("churn", lambda v, s=seed: (lambda r: (r.manifest, r.data))(
                    build_release("churn", v, key, seed=s)))
            write_sample(work / "churn.csv", "binary", 2000, 0)
            (work / "configured").mkdir()
            (work / "configured" / "edgeops.yaml").write_text(
                f"registry:\n  root: {work / '.edgeops' / 'registry'}\n  keys_dir: {work / '.edgeops' / 'keys'}\n"
                f"mqtt:\n  url: {broker.url}\n")
            topics = Topics(DEFAULT_PREFIX)
            with ControlClient(broker.url) as client:
                client.publish_many(
                    message for i in range(devices) for message in (
                        (topics.device(f"d{i:03d}", "reported"),
                         Reported(device=f"d{i:03d}", state="serving", model="churn", version=3,
                                  labels={"site": "berlin", "line": str(i % 4)}).to_bytes(), True),
                        (topics.device(f"d{i:03d}", "status"),
                         Status(device=f"d{i:03d}", status="online").to_bytes(), True)))
            # A user's interpreter caches bytecode; with PYTHONDONTWRITEBYTECODE (set in some sandboxes) every
            # run would compile the checkout's modules from source again.
            env = {k: v for k, v in os.environ.items()
                   if not k.startswith(("PREFECT_", "EDGEOPS_", "TYPER_", "COLUMNS", "PYTHONDONTWRITEBYTECODE"))}
            env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")])
            env["EDGEOPS_MQTT_URL"] = broker.url
            yield work, env


def check(argv: list[str], cwd: Path, env: dict[str, str], code: int, expected: str) -> None:
    """One untimed run: the command must do what is timed (exit code, a piece of its output)."""
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=120)
    if proc.returncode != code or expected not in proc.stdout + proc.stderr:
        raise SystemExit(f"{' '.join(argv[-6:])}: exit {proc.returncode}, expected {code} and {expected!r}:\n"
                         f"{proc.stdout[-1500:]}{proc.stderr[-1500:]}")


def measure(name: str, baseline: list[str], ours: list[str], cwd: Path, env: dict[str, str], rounds: int,
            calls: int, target: float | None, terminal: bool = False) -> tuple[Ratio, Ratio]:
    for argv in (baseline, ours):  # warm the file cache, as for a user's second command
        run_timed(argv, cwd, env, terminal and argv is ours)
    def turn(argv: list[str], is_ours: bool) -> tuple[float, float]:
        """Mean (wall, CPU) seconds of ``calls`` processes of ``argv``."""
        w = c = 0.0
        for _ in range(calls):
            dw, dc, _code = run_timed(argv, cwd, env, terminal and is_ours)
            w, c = w + dw, c + dc
        return w / calls, c / calls

    done = rotating_rounds({"baseline": lambda: turn(baseline, False), "ours": lambda: turn(ours, True)}, rounds)
    ours_s, base_s = [w for w, _ in done["ours"]], [w for w, _ in done["baseline"]]
    wall, cpu = ratios(ours_s, base_s), ratios([c for _, c in done["ours"]], [c for _, c in done["baseline"]])
    ms = f"{sorted(ours_s)[len(ours_s) // 2] * 1e3:.0f} ms vs {sorted(base_s)[len(base_s) // 2] * 1e3:.0f} ms"
    print(f"  {name}: {ms} (medians)", flush=True)
    return (Ratio(f"{name}, wall", wall, target, detail=ms), Ratio(f"{name}, CPU", cpu, None))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=3, help="processes per side and round")
    parser.add_argument("--devices", type=int, default=20)
    args = parser.parse_args()
    load_start = load_average()
    edgeops = edgeops_command()
    py = sys.executable
    with project(args.devices) as (work, env):
        bad_target = [*edgeops, "pipeline", "run", "--data", "churn.csv", "--target", "churn", "--model", "churn"]
        typer_rich, pandas = [py, "-c", "import typer, rich"], [py, "-c", "import pandas"]
        cases = [  # name, baseline, command, target, directory, exit code and a piece of the expected output
            ("edgeops --help", typer_rich, [*edgeops, "--help"], 1.5, work, 0, "Commands"),
            ("edgeops models list", typer_rich, [*edgeops, "models", "list"], 1.5, work, 0, "churn@3"),
            ("edgeops fleet ls --json", typer_rich, [*edgeops, "fleet", "ls", "--json"], 1.5, work, 0,
             f'"device": "d{args.devices - 1:03d}"'),
            ("pipeline run, bad target: time to the error", pandas, bad_target, 2.0, work, 1,
             "target column 'churn' is not in the data (columns: 'tenure months'"),
            ("edgeops models list, with an edgeops.yaml", typer_rich, [*edgeops, "models", "list"], None,
             work / "configured", 0, "churn@3"),
            ("floor of fleet ls: import typer, rich, paho.mqtt.client", typer_rich,
             [py, "-c", "import typer, rich, paho.mqtt.client"], None, work, 0, ""),
            ("the same, paho as edgeops imports it (edge_agent.paho_import)", typer_rich,
             [py, "-c", "import typer, rich, edge_agent.paho_import"], None, work, 0, ""),
            ("floor of fleet ls --json: Typer, paho, connect, read, print (benchmarks/fleet_floor.py)", typer_rich,
             [py, str(ROOT / "benchmarks" / "fleet_floor.py"), env["EDGEOPS_MQTT_URL"], DEFAULT_PREFIX], None, work,
             0, f'"device": "d{args.devices - 1:03d}"'),
        ]
        print(f"{len(cases) + 1} measures, {args.rounds} rounds of {args.calls} processes per side; "
              f"{edgeops[-1]} in {work}", flush=True)
        results: list[Ratio] = []
        for name, baseline, ours, target, cwd, code, expected in cases:
            check(ours, cwd, env, code, expected)
            results.extend(measure(name, baseline, ours, cwd, env, args.rounds, args.calls, target))
        results.extend(measure("edgeops --help on a terminal (rich help)", typer_rich, [*edgeops, "--help"], work,
                               env, args.rounds, args.calls, None, terminal=True))
    missed = print_table(results, load_start, f"{args.calls} processes per side and round")
    raise SystemExit(1 if missed else 0)


if __name__ == "__main__":
    main()

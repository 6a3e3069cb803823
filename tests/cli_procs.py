"""Run ``edgeops`` in a fresh interpreter and see what it imported: the fast-command tests and the benchmark share
this, so "light" means the same thing in both."""

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HEAVY_MODULES = ("prefect", "sklearn", "skl2onnx", "scipy", "sqlalchemy", "pandas", "numpy", "onnx", "onnxruntime",
                 "matplotlib")
"""Libraries none of the fast commands needs; each costs from tens of milliseconds to seconds to import."""

_PROBE = """
import json, sys
out, args = sys.argv[1], sys.argv[2:]
code = 0
try:
    from edgeops.cli import main
    main(args)
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
with open(out, "w") as fh:
    json.dump({"code": code, "modules": sorted(sys.modules)}, fh)
"""


@dataclass(frozen=True)
class CliRun:
    code: int
    stdout: str
    stderr: str
    modules: frozenset[str]
    """Every module imported, by its full dotted name."""

    def heavy(self, allowed: tuple[str, ...] = ()) -> list[str]:
        """The heavy libraries this run imported, less the ``allowed`` ones."""
        packages = {name.split(".")[0] for name in self.modules}
        return [m for m in HEAVY_MODULES if m in packages and m not in allowed]


def run_edgeops(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> CliRun:
    """``edgeops ARGS`` via ``main()`` in a new interpreter, with this process's import path (so the code under
    test is the checkout's); stdout is a pipe, as in a script."""
    report = cwd / ".modules.json"
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), **(env or {})}
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(report), *args], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=timeout, check=False)
    if not report.exists():
        raise AssertionError(f"edgeops {args} died before reporting: {proc.stderr[-2000:]}")
    data = json.loads(report.read_text())
    report.unlink()
    return CliRun(data["code"], proc.stdout, proc.stderr, frozenset(data["modules"]))

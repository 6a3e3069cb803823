"""Run code in a new interpreter: for what only a process that imported nothing yet can show (what an import
loads, the collector's process-wide state, a module replaced while paho loads)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def fresh_python(code: str, timeout: float = 120) -> str:
    """What ``code`` (dedented) printed, run by this interpreter with this checkout's packages first on the
    path; a failure shows the child's stderr."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=timeout, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout

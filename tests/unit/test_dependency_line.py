"""The agent is what a device installs: importing any of its modules must not drag in the control plane."""

import pkgutil

import pytest
from fresh_python import fresh_python

import edge_agent

pytestmark = pytest.mark.unit

FORBIDDEN = ("prefect", "sklearn", "pandas", "scipy", "skl2onnx", "edgeops", "onnx")


def agent_modules() -> list[str]:
    """Every module of the package (``__main__`` runs the CLI on import; ``edge_agent.cli`` stands for it)."""
    return sorted(m.name for m in pkgutil.walk_packages(edge_agent.__path__, "edge_agent.")
                  if not m.name.endswith("__main__"))


def test_the_module_list_covers_the_agent() -> None:
    names = agent_modules()
    assert {"edge_agent.agent", "edge_agent.cli", "edge_agent.inference", "edge_agent.protocol.manifest"} <= set(names)


def test_no_agent_module_imports_the_control_plane() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {agent_modules()!r}:\n"
        "    importlib.import_module(name)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(','.join(bad))\n"
    )
    bad = fresh_python(code).strip()
    assert bad == "", f"forbidden imports: {bad}"

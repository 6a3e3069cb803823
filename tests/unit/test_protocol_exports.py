"""``edge_agent.protocol`` loads its names on first use; every exported name must still resolve, to the object
its module defines, and ``__all__`` must list exactly the names the lazy table serves."""

import importlib

import pytest
from fresh_python import fresh_python

import edge_agent.protocol as protocol

pytestmark = pytest.mark.unit


def test_every_exported_name_resolves_to_its_modules_object() -> None:
    assert sorted(protocol.__all__) == sorted(protocol._MODULE_OF)
    for name in protocol.__all__:
        module = importlib.import_module(f"edge_agent.protocol.{protocol._MODULE_OF[name]}")
        assert getattr(protocol, name) is getattr(module, protocol._RENAMED.get(name, name)), name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        protocol.nope  # noqa: B018


def test_reading_a_manifest_does_not_load_the_message_classes() -> None:
    code = ("import sys; from edge_agent.protocol import ReleaseManifest, check_name; "
            "print(sorted(m for m in sys.modules if m.startswith('edge_agent.protocol.')))")
    loaded = fresh_python(code)
    assert "edge_agent.protocol.manifest" in loaded and "edge_agent.protocol.messages" not in loaded


def test_reading_device_state_does_not_load_the_telemetry_or_manifest_classes() -> None:
    """``fleet ls`` and a rollout read Desired/Reported/Status; the window's and manifest's classes cost them
    import time (dataclass creation) for nothing."""
    code = ("import sys; from edge_agent.protocol import Desired, Reported, Status, Signature; "
            "print(sorted(m for m in sys.modules if m.startswith('edge_agent.protocol.')))")
    loaded = fresh_python(code)
    assert "edge_agent.protocol.messages" in loaded
    for heavy in ("manifest", "window", "histogram", "performance", "feedback"):
        assert f"edge_agent.protocol.{heavy}'" not in loaded, loaded

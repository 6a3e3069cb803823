"""The shipped mosquitto.conf stays true to the protocol and to the fleet's identity rules, read as text (the
integration tests start a broker from it: tests/integration/test_mosquitto_acl.py, test_mosquitto_limits.py)."""

from pathlib import Path

import pytest

from edge_agent.protocol import MAX_MESSAGE_BYTES

pytestmark = pytest.mark.unit

CONF = Path(__file__).parents[2] / "deployments" / "mosquitto" / "mosquitto.conf"


def sections() -> list[dict[str, list[str]]]:
    """Option → values, for the lines before the first listener (index 0) and each listener after."""
    out: list[dict[str, list[str]]] = [{}]
    for line in CONF.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        option, _, value = line.partition(" ")
        if option == "listener":
            out.append({})
        out[-1].setdefault(option, []).append(value)
    return out


def test_the_size_limit_is_the_protocols() -> None:
    options = {k: v for section in sections() for k, v in section.items()}
    assert options["message_size_limit"] == [str(MAX_MESSAGE_BYTES)]
    # room for a topic and headers on top of the largest payload, not much more (the packet is read into memory)
    assert MAX_MESSAGE_BYTES < int(options["max_packet_size"][0]) <= MAX_MESSAGE_BYTES + 128 * 1024


def test_devices_and_the_control_plane_log_in_on_listeners_of_their_own() -> None:
    head, control, device = sections()
    assert head["per_listener_settings"] == ["true"]  # must come first, or Mosquitto refuses the file
    assert control["listener"] == ["1883 127.0.0.1"] and "use_username_as_clientid" not in control
    assert device["listener"] == ["8883"] and device["use_username_as_clientid"] == ["true"]
    assert "certfile" in device and "keyfile" in device  # devices come in over TLS only
    for listener in (control, device):
        assert listener["allow_anonymous"] == ["false"]
        assert listener["acl_file"] == ["/etc/mosquitto/edgeops.acl"]
    assert control["password_file"] != device["password_file"]

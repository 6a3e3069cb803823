"""The topic tree. Every topic either side uses is built here; nothing else formats topic strings."""

import re
from dataclasses import dataclass

from .errors import ProtocolError
from .names import check_name, check_version, parse_version

DEFAULT_PREFIX = "edgeops"
DEVICE_CHANNELS = ("desired", "reported", "status", "telemetry", "events")
_REFUSED_BY_BROKERS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef]")
"""Characters Mosquitto refuses in a topic (control characters, surrogates, non-characters): it drops the
connection of a client that subscribes or publishes to one, and a client that reconnects and subscribes again
is dropped again."""


@dataclass(frozen=True)
class Topics:
    """Topic builders under one prefix (``edgeops`` by default; a deployment may namespace several fleets)."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        levels = self.prefix.split("/")
        if not self.prefix or any(not lvl or "+" in lvl or "#" in lvl for lvl in levels):
            raise ProtocolError(f"{self.prefix!r} is not a valid topic prefix", field="prefix")
        if self.prefix.startswith("$"):
            raise ProtocolError("a topic prefix must not start with '$'", field="prefix")
        if _REFUSED_BY_BROKERS.search(self.prefix) or any((ord(c) & 0xFFFE) == 0xFFFE for c in self.prefix):
            raise ProtocolError(f"{self.prefix!r} holds a control character or a non-character", field="prefix")

    # releases ---------------------------------------------------------------------------------------
    def release(self, model: str, version: int) -> str:
        return f"{self.prefix}/releases/{check_name(model, 'model')}/{check_version(version)}"

    def manifest(self, model: str, version: int) -> str:
        return f"{self.release(model, version)}/manifest"

    def artifact(self, model: str, version: int, chunk: int | None = None) -> str:
        """Where the ONNX bytes live: ``.../artifact`` whole, or ``.../artifact/{i}`` for chunk ``i``."""
        base = f"{self.release(model, version)}/artifact"
        return base if chunk is None else f"{base}/{chunk}"

    def release_filter(self, model: str, version: int) -> str:
        """Subscription that receives a release's manifest and every artifact message (chunked or not)."""
        return f"{self.release(model, version)}/#"

    # devices ----------------------------------------------------------------------------------------
    def device(self, device: str, channel: str) -> str:
        if channel not in DEVICE_CHANNELS:
            raise ProtocolError(f"unknown device channel {channel!r}", field="channel")
        return f"{self.prefix}/devices/{check_name(device, 'device')}/{channel}"

    def all_devices(self, channel: str) -> str:
        """Wildcard over every device's ``channel`` (for the control plane)."""
        if channel not in DEVICE_CHANNELS:
            raise ProtocolError(f"unknown device channel {channel!r}", field="channel")
        return f"{self.prefix}/devices/+/{channel}"

    def shared(self, group: str, topic_filter: str) -> str:
        """MQTT 5 / Mosquitto shared subscription, so several ingest instances split the load."""
        return f"$share/{check_name(group, 'group')}/{topic_filter}"

    # parsing ----------------------------------------------------------------------------------------
    def parse_device_topic(self, topic: str) -> tuple[str, str]:
        """``{p}/devices/{id}/{channel}`` → (device, channel); ProtocolError for anything else."""
        rest = self._strip(topic)
        parts = rest.split("/")
        if len(parts) != 3 or parts[0] != "devices" or parts[2] not in DEVICE_CHANNELS:
            raise ProtocolError(f"{topic!r} is not a device topic", field="topic")
        return check_name(parts[1], "device"), parts[2]

    def parse_release_topic(self, topic: str) -> tuple[str, int, str, int | None]:
        """``{p}/releases/{m}/{v}/manifest|artifact[/i]`` → (model, version, kind, chunk index or None)."""
        parts = self._strip(topic).split("/")
        if len(parts) not in (4, 5) or parts[0] != "releases" or parts[3] not in ("manifest", "artifact"):
            raise ProtocolError(f"{topic!r} is not a release topic", field="topic")
        model = check_name(parts[1], "model")
        version = parse_version(parts[2])
        chunk = None
        if len(parts) == 5:
            if parts[3] != "artifact":
                raise ProtocolError(f"{topic!r} is not a release topic", field="topic")
            if not parts[4].isdigit() or not parts[4].isascii() or len(parts[4]) > 6:
                raise ProtocolError(f"bad chunk index in {topic!r}", field="topic")
            chunk = int(parts[4])
        return model, version, parts[3], chunk

    def _strip(self, topic: str) -> str:
        head = self.prefix + "/"
        if not topic.startswith(head):
            raise ProtocolError(f"{topic!r} is outside prefix {self.prefix!r}", field="topic")
        return topic[len(head):]

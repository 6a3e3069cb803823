"""Broker URLs (``mqtt://host:port``, ``mqtts://host:port``): one parser for agents and control plane alike."""

from dataclasses import dataclass
from urllib.parse import urlsplit

from .errors import ProtocolError

SCHEMES = {"mqtt": (False, 1883), "mqtts": (True, 8883)}


@dataclass(frozen=True)
class BrokerAddress:
    """A broker URL taken apart; TLS is on for ``mqtts``, and the port defaults to 1883 / 8883."""

    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, url: str) -> "BrokerAddress":
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ProtocolError(f"{url!r} is not a URL ({exc})", field="broker_url") from exc
        if parts.scheme not in SCHEMES:
            raise ProtocolError(f"{url!r} must start with mqtt:// or mqtts://", field="broker_url")
        if not parts.hostname or parts.path not in ("", "/") or parts.query or parts.username:
            raise ProtocolError(f"{url!r} must look like mqtt://host:port (credentials go in username/password)",
                                field="broker_url")
        tls, default_port = SCHEMES[parts.scheme]
        return cls(host=parts.hostname, port=port or default_port, tls=tls)

"""The one exception of the wire protocol."""


class ProtocolError(ValueError):
    """A message, manifest, topic or name does not follow the wire protocol.

    ``field`` names the offending part (dotted path) so that receivers can log a precise reason.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        self.reason = message
        super().__init__(f"{field}: {message}" if field else message)

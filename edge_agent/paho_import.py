"""The one place paho-mqtt's client module is imported, without the standard library's HTTP stack, TLS and hashes.

Why: ``paho/mqtt/client.py`` imports ``urllib.request`` when it loads, and that module pulls in ``http.client``,
``email`` and their helpers: about as much import time as paho itself, paid by every agent start and every
``edgeops`` command that speaks MQTT. paho reads it in exactly one place, ``Client._get_proxy``, and only when
PySocks is installed (to honour ``$mqtt_proxy``); neither side of edgeops installs PySocks.

So while paho loads, ``urllib.request`` is a stand-in that imports the real module the first time anything
reads from it. The stand-in is taken out of ``sys.modules`` right after, so any later ``import urllib.request``
is an ordinary import (which also replaces the stand-in as the ``urllib`` package's attribute); until then, paho's
own ``urllib.request.getproxies`` goes through the stand-in to the real function.

The same stand-in serves ``hashlib``, which paho reads only in the websocket handshake (edgeops speaks plain
MQTT over TCP), and ``ssl``, which it reads to set up TLS and to name two TLS exceptions in ``except`` clauses:
a connection to an ``mqtts://`` broker loads the real module when it sets up TLS; one to ``mqtt://`` loads it
only if a socket call raises (Python evaluates an ``except`` clause's class then). Together they load OpenSSL,
about as much import time as the rest of paho's standard library. paho's global stays the stand-in, so each
later read goes through it to the real module: once per TLS setup or failed socket call, not per message.
A module that is already loaded is not replaced, and paho gets it.

``importlib.util.LazyLoader`` cannot do this on Python 3.11: re-importing a lazy module reads its ``__spec__``,
which loads it. Every module of edgeops takes paho's client from here (``edge_agent.mqtt_client`` re-exports it;
tests/unit/test_paho_import.py checks that nothing else imports it).
"""

import importlib
import sys
import types
from typing import Any

_DEFERRED = ("urllib.request", "hashlib", "ssl")


class _Deferred(types.ModuleType):
    """Stands for a module until an attribute is read, then imports the real one and answers from it."""

    def __getattr__(self, name: str) -> Any:
        if sys.modules.get(self.__name__) is self:  # read while paho is still loading
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), name)


def _import_client() -> types.ModuleType:
    if "paho.mqtt.client" in sys.modules:
        return sys.modules["paho.mqtt.client"]
    import urllib

    stand_ins = {name: _Deferred(name) for name in _DEFERRED if name not in sys.modules}
    sys.modules.update(stand_ins)
    if "urllib.request" in stand_ins:
        urllib.request = stand_ins["urllib.request"]  # what paho's ``urllib.request.X`` reads
    try:
        return importlib.import_module("paho.mqtt.client")
    finally:
        for name, stand_in in stand_ins.items():
            if sys.modules.get(name) is stand_in:
                del sys.modules[name]


_import_client()

import paho.mqtt.client as mqtt  # noqa: E402  (loaded above; this binds it with its types for mypy)

__all__ = ["mqtt"]

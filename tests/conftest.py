"""Shared fixtures. Service helpers live in tests/services.py; fixtures that start them are here."""

import importlib
import random
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from services import (
    POSTGRES_URL,
    Mosquitto,
    machine_broker_url,
    postgres_database,
    running_mosquitto,
    unique_prefix,
)

if TYPE_CHECKING:
    from seaweedfs import SeaweedFS

    from edgeops.telemetry.store import TelemetryStore


def keep_websockets_off_the_global_random() -> None:
    """websockets draws each keepalive ping's payload (and its reconnect backoff) from the global ``random``.
    In this process that happens on the Prefect events client's background thread, every 20 s, once a test has
    talked to the Prefect harness. Hypothesis checks that the global random state does not change while a
    strategy draws, and a ping that landed in that window made it warn "Do not use the `random` module inside
    strategies" about whichever test was drawing (tests/integration/test_hypothesis_threads.py). A Random of
    websockets' own is just as random and leaves the global state to the tests. (Not websockets.legacy: Prefect
    does not use it, and importing it warns.)"""
    for name in ("websockets.asyncio.connection", "websockets.client", "websockets.sync.connection"):
        module = importlib.import_module(name)
        if getattr(module, "random", None) is random:
            module.random = random.Random()  # type: ignore[attr-defined]


keep_websockets_off_the_global_random()


@pytest.fixture(scope="session", autouse=True)
def prefect_logs_to_a_lasting_stream() -> None:
    """Prefect sets up its logging on first use (``import prefect`` alone does not) and binds its console
    handler to ``sys.stderr`` as it is then. The CLI uses Prefect lazily, so in a run where no test module has
    used it while collecting, that happens inside a CliRunner invocation, whose stream is closed when the
    invocation ends: every later Prefect record then fails to print, Prefect's error handling logs again, and
    the next flow run dies of RecursionError (seen as CLI tests failing when run with only a few others)."""
    from prefect.logging.configuration import ensure_logging_setup

    ensure_logging_setup()


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One Prefect test server for the whole session, for the few tests that need real flow runs. It must be
    defined here, once: a session fixture imported into several test modules is a separate fixture in each,
    and each of them kept a server of its own (with its background services) running to the end of the run."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def prefect_server(tmp_path: Path) -> Iterator[str]:
    """A `prefect server start` of this test's own (free port, own PREFECT_HOME and SQLite): its API URL."""
    from prefect_procs import running_prefect_server

    with running_prefect_server(tmp_path / "prefect-server") as url:
        yield url


@pytest.fixture(scope="session")
def session_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A broker URL shared by the session: the machine's Mosquitto, or one of our own when it is absent."""
    url = machine_broker_url()
    if url is not None:
        yield url
        return
    with running_mosquitto(tmp_path_factory.mktemp("mosquitto")) as broker:
        yield broker.url


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A Mosquitto of this test's own on a free port, for fault tests (kill, restart) and config tests."""
    with running_mosquitto(tmp_path / "mosquitto") as broker:
        yield broker


@pytest.fixture
def topic_prefix() -> str:
    return unique_prefix()


@pytest.fixture
def store(tmp_path: Path) -> Iterator["TelemetryStore"]:
    """A telemetry store in a fresh SQLite file. A module whose ``store`` is something else defines its own."""
    from edgeops.telemetry.store import TelemetryStore  # only the tests that use it pay for the import

    store = TelemetryStore(f"sqlite:///{tmp_path / 'telemetry.db'}")
    yield store
    store.close()


@pytest.fixture
def pg_store() -> Iterator["TelemetryStore"]:
    """A telemetry store on the machine's PostgreSQL, in a schema of its own that is dropped afterwards."""
    from edgeops.telemetry.store import TelemetryStore  # only the tests that use it pay for the import

    store = TelemetryStore(POSTGRES_URL, schema=f"edgeops_test_{uuid.uuid4().hex[:12]}")
    yield store
    store.drop_schema()
    store.close()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator["SeaweedFS"]:
    """A SeaweedFS S3 server of the session's own on free ports (tests/seaweedfs.py), stopped at the end."""
    from seaweedfs import running_seaweedfs

    with running_seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture
def s3_root(s3_server: "SeaweedFS", monkeypatch: pytest.MonkeyPatch) -> str:
    """An ``s3://`` registry root unique to this test, with the standard AWS variables pointing at the session's
    server (child processes inherit them)."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return f"s3://{s3_server.bucket}/{uuid.uuid4().hex[:12]}/registry"


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A PostgreSQL database of this test's own on the machine's server (the URL a team would configure), dropped
    afterwards even if a connection is left open."""
    with postgres_database() as url:
        yield url

"""Shared fixtures. Service helpers live in tests/services.py; fixtures that start them are here."""

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from services import Mosquitto, machine_broker_url, running_mosquitto, unique_prefix


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

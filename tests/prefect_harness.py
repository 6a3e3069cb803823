"""One Prefect test server for the whole session, for the few tests that need real flow runs.

Import the fixture into a test module (``from prefect_harness import prefect_harness``) and request it.
"""

from collections.abc import Iterator

import pytest
from prefect.testing.utilities import prefect_test_harness


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    with prefect_test_harness(server_startup_timeout=120):
        yield

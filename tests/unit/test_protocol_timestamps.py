"""``iso_ms`` formats the date once per second and caches it: it must still give datetime's text for every
instant, whatever order the instants come in (the cache is keyed by the second, not by call order)."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.protocol.messages import iso_ms, now_iso

pytestmark = pytest.mark.unit

# whole microseconds from 1970 to 2100: datetime rounds a float timestamp to microseconds, so instants given
# as exact microsecond counts make the reference unambiguous
micros = st.integers(min_value=0, max_value=4_102_444_800 * 1_000_000)


def reference(us: int) -> str:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@given(st.lists(micros, min_size=1, max_size=20))
def test_iso_ms_matches_datetime_in_any_order(instants: list[int]) -> None:
    for us in instants + sorted(instants) + [instants[0] + 999_999, instants[0] + 1_000_000]:
        assert iso_ms(us / 1_000_000) == reference(us)


def test_second_boundaries_and_carry() -> None:
    assert iso_ms(1_795_000_000.999) == "2026-11-18T11:06:40.999Z"
    assert iso_ms(1_795_000_000.9999996) == "2026-11-18T11:06:41.000Z"  # rounds to the next second's 0 µs
    assert iso_ms(1_795_000_001.0) == "2026-11-18T11:06:41.000Z"
    assert iso_ms(1_795_000_000.5) == "2026-11-18T11:06:40.500Z"  # back to a cached-over second


def test_now_iso_is_now() -> None:
    before = datetime.now(UTC)
    stamp = datetime.fromisoformat(now_iso())
    after = datetime.now(UTC)
    assert before - timedelta(milliseconds=1) <= stamp <= after

"""The compiled topic-filter matcher must agree with paho's reference implementation on every topic."""

import paho.mqtt.client as mqtt
from hypothesis import given
from hypothesis import strategies as st

from edgeops.mqtt import filter_matcher

LEVEL = st.sampled_from(["a", "b", "dev-1", "", "$SYS", "x.y", "r(e)", "*"])
TOPIC = st.lists(LEVEL, min_size=1, max_size=5).map("/".join)
FILTER_LEVEL = st.sampled_from(["a", "b", "dev-1", "", "$SYS", "+", "x.y", "r(e)"])
FILTER = st.builds(lambda levels, tail: "/".join(levels + (["#"] if tail else [])),
                   st.lists(FILTER_LEVEL, min_size=0, max_size=4), st.booleans()).filter(bool)


@given(st.lists(FILTER, min_size=0, max_size=3), TOPIC)
def test_matches_like_paho(filters: list[str], topic: str) -> None:
    expected = any(mqtt.topic_matches_sub(f, topic) for f in filters)
    assert filter_matcher(filters)(topic) is expected


def test_examples() -> None:
    match = filter_matcher(["edgeops/devices/+/reported", "edgeops/releases/#"])
    assert match("edgeops/devices/d1/reported")
    assert not match("edgeops/devices/d1/status")
    assert not match("edgeops/devices/d1/x/reported")
    assert match("edgeops/releases") and match("edgeops/releases/churn/3/manifest")
    assert not filter_matcher(["#"])("$SYS/broker/uptime")
    assert not filter_matcher([])("a")

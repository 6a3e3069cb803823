import pytest

from edge_agent.protocol import (
    LIFECYCLE_STATES,
    TRANSIENT_STATES,
    AgentEvent,
    Counts,
    Desired,
    ProtocolError,
    Reported,
    Status,
    TelemetryWindow,
    Topics,
    check_labels,
    parse_json,
    parse_version,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "message",
    [
        Desired(device="press-17", model="churn", version=3, rollout_id="r1"),
        Reported(device="press-17", state="serving", model="churn", version=3, labels={"site": "berlin"}),
        Status(device="press-17", status="offline"),
        AgentEvent(device="press-17", event="rejected", model="churn", version=4, reason="bad signature"),
        TelemetryWindow(device="d1", seq=7, model="churn", version=3, start="a", end="b", count=10,
                        errors={"invalid_input": 1}, latency_ms={"p50": 0.1, "p95": 0.2},
                        features={"age in years": Counts((1, 2, 3), overflow=4)}, predictions=Counts((5, 5))),
    ],
)
def test_messages_round_trip_through_bytes(message: object) -> None:
    assert type(message).parse(message.to_bytes()) == message  # type: ignore[attr-defined]


def test_unknown_major_version_is_rejected_with_the_field_named() -> None:
    obj = Desired(device="d1", model="m", version=1).to_json()
    obj["schema"]["version"] = "2.0"
    with pytest.raises(ProtocolError, match=r"schema\.version"):
        Desired.from_json(obj)


def test_minor_version_bump_is_accepted() -> None:
    obj = Desired(device="d1", model="m", version=1).to_json()
    obj["schema"]["version"] = "1.7"
    obj["future_field"] = True
    assert Desired.from_json(obj).version == 1


@pytest.mark.parametrize("name", ["../etc", "a/b", "a+b", "#", "", ".hidden", "a..b", "x" * 65])
def test_unsafe_model_names_never_make_topics(name: str) -> None:
    with pytest.raises(ProtocolError):
        Topics().manifest(name, 1)


@pytest.mark.parametrize("payload", [b"", b"\xff\xfe", b"[]", b"{", b'{"a": NaN}', b"1" * (2 << 20),
                                     b'{"a": 1e999}', b'{"a": [-2.5E400]}'])
def test_parse_json_rejects_garbage(payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_json(payload)


def test_release_topic_parsing_round_trips() -> None:
    topics = Topics("fleet/a")
    assert topics.parse_release_topic(topics.artifact("churn", 12, 3)) == ("churn", 12, "artifact", 3)
    assert topics.parse_release_topic(topics.manifest("churn", 12)) == ("churn", 12, "manifest", None)
    assert topics.parse_device_topic(topics.device("d-1", "telemetry")) == ("d-1", "telemetry")
    with pytest.raises(ProtocolError):
        topics.parse_release_topic("fleet/a/releases/churn/012/manifest")


def test_only_the_steps_of_an_update_are_reported_at_qos_0() -> None:
    qos = {state: Reported(device="d1", state=state).qos for state in LIFECYCLE_STATES}
    assert {s for s, q in qos.items() if q == 0} == {"fetching", "verifying", "self_testing", "activating"}
    assert TRANSIENT_STATES.issubset(LIFECYCLE_STATES)
    # what a verdict or the fleet view stands on is never sent at QoS 0
    assert all(qos[s] == 1 for s in ("idle", "serving", "probation", "rejected", "rolled_back"))


@pytest.mark.parametrize("name", ["churn\n", "churn\r\n", "\nchurn", "ch\nurn", "churn\x00", "churn ", "chürn"])
def test_names_are_full_matches_so_a_trailing_newline_is_refused(name: str) -> None:
    """``$`` matches before a final newline: ``"churn\\n"`` passed the old rule and went into a subscription,
    which Mosquitto answers by dropping the connection (tests/integration/test_agent_names.py)."""
    obj = Desired(device="press-17", model="churn", version=3).to_json()
    with pytest.raises(ProtocolError, match=r"^model: "):
        Desired.from_json({**obj, "model": name})
    with pytest.raises(ProtocolError, match=r"^device: "):
        Desired.from_json({**obj, "device": name})
    with pytest.raises(ProtocolError):
        Topics().release_filter(name, 3)
    with pytest.raises(ProtocolError, match=r"^labels: "):
        check_labels({"site": name})
    with pytest.raises(ProtocolError, match=r"^labels: "):
        check_labels({name: "berlin"})


@pytest.mark.parametrize("text", ["3\n", "\u00b2", "\u0663", "03", "0", "+3", " 3", "9" * 5000, "2147483648"])
def test_version_levels_are_ascii_digits_read_exactly(text: str) -> None:
    with pytest.raises(ProtocolError, match=r"^version: "):
        parse_version(text)


@pytest.mark.parametrize("version", ["1.0\n", "\u00b2.0", "1.\u00b2", "\u0661.0", "9" * 5000 + ".0", "1", ".1"])
def test_schema_versions_are_full_matches_of_ascii_digits(version: str) -> None:
    obj = Desired(device="d1", model="m", version=1).to_json()
    obj["schema"]["version"] = version
    with pytest.raises(ProtocolError, match=r"^schema\.version: "):  # not a ValueError from int('²')
        Desired.from_json(obj)


@pytest.mark.parametrize("prefix", ["edgeops\n", "fleet\x00a", "fleet/\x7f", "fleet\u0085", "fleet\ufffe"])
def test_a_prefix_the_broker_would_refuse_is_refused(prefix: str) -> None:
    with pytest.raises(ProtocolError, match=r"^prefix: "):
        Topics(prefix)

"""Hostile input through the agent's message handling: nothing may crash it or stop it serving.

The handler is called directly (no broker: thousands of cases in seconds); a smaller batch goes over the real
broker in tests/integration/test_agent_lifecycle.py::test_garbage_on_every_subscribed_topic_keeps_it_serving.
"""

import dataclasses
import itertools
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from releases import Release, agent_config, build_release, new_key, preinstall, sign, signed_desired
from services import free_port

from edge_agent.agent import Agent
from edge_agent.link import Message
from edge_agent.protocol import Desired, ProtocolError, Topics, check_labels, parse_version
from edge_agent.protocol.names import is_name

pytestmark = pytest.mark.unit

ROW = {"age in years": 52.0, "income": 4.5, "plan": "pro"}
DEVICE = "dev-1"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return new_key()


@pytest.fixture(scope="module")
def releases(key: Ed25519PrivateKey) -> tuple[Release, Release]:
    return build_release("churn", 1, key), build_release("churn", 2, key, seed=1, chunk_size=400)


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory, key: Ed25519PrivateKey,
          releases: tuple[Release, Release]) -> Iterator[Agent]:
    tmp = tmp_path_factory.mktemp("fuzz")
    preinstall(tmp / "data", releases[0])
    # The link is never started: the handler is driven directly and publishes only queue in paho.
    agent = Agent(agent_config(tmp, f"mqtt://127.0.0.1:{free_port()}", "fz", key, DEVICE)).load()
    yield agent
    agent.stop()


versions = itertools.count(100)


def ensure_fetching(agent: Agent, key: Ed25519PrivateKey) -> int:
    """Keep an install waiting for data, so release-topic garbage reaches the collector."""
    job = agent.installer.job
    if job is None or job.collector is None:
        version = next(versions)
        agent.handle_message(agent.topics.device(DEVICE, "desired"), signed_desired(key, DEVICE, "churn", version))
        job = agent.installer.job
    assert job is not None
    return job.ref.version


def assert_still_serving(agent: Agent) -> None:
    assert agent.current == ("churn", 1)
    assert agent.predict(ROW).label in (0, 1)


def mutate(data: bytes, flips: list[tuple[int, int]], cut: int | None) -> bytes:
    out = bytearray(data)
    for pos, value in flips:
        if out:
            out[pos % len(out)] = value
    return bytes(out[:cut] if cut is not None else out)


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    channel=st.sampled_from(["desired", "manifest", "artifact", "chunk", "other"]),
    payload=st.one_of(
        st.binary(max_size=300),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.dictionaries(st.text(max_size=8), json_values, max_size=6).map(lambda d: json.dumps(d).encode()),
    ),
    chunk=st.integers(0, 9),
)
def test_garbage_on_any_topic_never_crashes(agent: Agent, key: Ed25519PrivateKey, channel: str, payload: bytes,
                                            chunk: int) -> None:
    version = ensure_fetching(agent, key)
    topics = agent.topics
    topic = {"desired": topics.device(DEVICE, "desired"), "manifest": topics.manifest("churn", version),
             "artifact": topics.artifact("churn", version), "chunk": topics.artifact("churn", version, chunk),
             "other": "fz/releases/../x/manifest"}[channel]
    agent.handle_event(Message(topic, payload, retained=True))
    agent.tick()
    assert_still_serving(agent)


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    field=st.sampled_from(["schema", "device", "model", "version", "rollout_id", "ts"]),
    value=json_values | st.sampled_from(["2.0", "1.x", "01.0", "..", "a/b", "#", "+", "", "dev-1", 0, -1, 2**40,
                                         "churn\n", "churn\r\n", "\nchurn", "ch\x00urn", "churn\u0085", "dev-1\n",
                                         "1.0\n", "\u00b2.0", "\u0661.0", "9" * 5000 + ".0"]),
    schema_version=st.sampled_from(["1.0", "1.9", "2.0", "0.1", "x", "", "1.0\n", "\u00b2.0", "\u0661.0"]),
)
def test_mangled_desired_messages_never_crash(agent: Agent, field: str, value: object, schema_version: str) -> None:
    obj = Desired(device=DEVICE, model="churn", version=next(versions)).to_json()
    obj["schema"]["version"] = schema_version
    obj[field] = value
    agent.handle_message(agent.topics.device(DEVICE, "desired"), json.dumps(obj).encode())
    agent.tick()
    assert_still_serving(agent)
    # a filter Mosquitto refuses (a control character in a topic level) drops the connection on every subscribe
    assert not [f for f in agent.link._filters if BROKER_REFUSES.search(f)]


BROKER_REFUSES = re.compile("[\x00-\x1f\x7f-\x9f]")
NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")


@settings(max_examples=3000, deadline=None)
@given(text=st.text(max_size=70) | st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\s?", fullmatch=True))
def test_only_whole_names_of_safe_characters_pass(text: str) -> None:
    """The name rules are full matches: a name, id or label that passes holds only the safe characters (no
    trailing newline, which ``$`` lets through), and a version level is ASCII digits that ``int`` reads as is."""
    if is_name(text):
        assert NAME_CHARS.issuperset(text) and 1 <= len(text) <= 64, repr(text)
    try:
        labels = check_labels({text: "x", "k": text})
    except ProtocolError:
        pass
    else:
        assert NAME_CHARS.issuperset(text), labels
    try:
        version = parse_version(text)
    except ProtocolError:
        pass
    else:
        assert str(version) == text
    for name_variant in (text + "\n", text + "\r\n", "\n" + text):
        assert not is_name(name_variant)
        with pytest.raises(ProtocolError):
            Topics().release_filter(name_variant, 1)


@settings(max_examples=1000, deadline=None)
@given(version=st.text(max_size=12) | st.sampled_from(["\u00b2.0", "1.\u00b2", "\u0661.0", "9" * 5000 + ".0", "1.0\n"]))
def test_schema_versions_are_full_matches_of_ascii_digits(version: str) -> None:
    obj = Desired(device=DEVICE, model="churn", version=1).to_json()
    obj["schema"]["version"] = version
    try:
        Desired.from_json(obj)
    except ProtocolError:
        return
    assert re.fullmatch(r"1\.[0-9]+", version), repr(version)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    target=st.sampled_from(["manifest", "artifact", "chunk"]),
    flips=st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=4),
    cut=st.none() | st.integers(0, 5000),
    chunk=st.integers(0, 5),
)
def test_corrupted_real_releases_are_rejected_not_crashing(agent: Agent, key: Ed25519PrivateKey,
                                                           releases: tuple[Release, Release], target: str,
                                                           flips: list[tuple[int, int]], cut: int | None,
                                                           chunk: int) -> None:
    version = ensure_fetching(agent, key)
    good = releases[1]
    manifest = sign(dataclasses.replace(good.manifest, version=version), key)
    topics = agent.topics
    manifest_bytes = manifest.to_bytes()
    size = manifest.artifact.chunk_size
    if target == "manifest":
        spoiled = mutate(manifest_bytes, flips, cut)
        assume(spoiled != manifest_bytes)  # an intact release would (rightly) be installed
        agent.handle_message(topics.manifest("churn", version), spoiled)
    else:
        data = mutate(good.data, flips, cut)
        piece = data[chunk * size:(chunk + 1) * size]
        # a flip elsewhere leaves the chunk sent intact: intact chunks gathered over several examples would make
        # a whole, correctly signed release, which the agent rightly installs
        assume(data != good.data if target == "artifact" else piece != good.data[chunk * size:(chunk + 1) * size])
        agent.handle_message(topics.manifest("churn", version), manifest_bytes)
        if target == "artifact":
            agent.handle_message(topics.artifact("churn", version), data)
        else:
            agent.handle_message(topics.artifact("churn", version, chunk), piece)
    agent.tick()
    assert_still_serving(agent)


def test_the_fuzzed_agent_reports_a_consistent_state(agent: Agent, tmp_path: Path) -> None:
    assert agent.state.current is not None and agent.state.current.version == 1
    assert agent.state.phase in ("serving", "fetching", "rejected")

"""MqttLink against real Mosquitto brokers: status and Last Will, persistent session, fast reconnect."""

import logging
import os
import queue
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from fresh_python import fresh_python
from paho.mqtt.enums import CallbackAPIVersion
from services import Mosquitto, running_mosquitto

from edge_agent.config import AgentConfig
from edge_agent.link import Connected, Disconnected, Message, MqttLink, Published, next_delay
from edge_agent.protocol import Status

pytestmark = pytest.mark.integration
TIMEOUT = 15.0


def host_port(url: str) -> tuple[str, int]:
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    return host, int(port)


class Observer:
    """A plain paho client (the control plane's view), collecting messages on a queue."""

    def __init__(self, url: str, *topics: str, reconnect_min: int = 1) -> None:
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.connects: queue.Queue[float] = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.reconnect_delay_set(reconnect_min, 120)  # paho's defaults: 1 s doubling to 120 s
        self.client.on_message = lambda _c, _u, msg: self.messages.put((msg.topic, msg.payload))
        self.client.on_connect = self._on_connect
        self.topics = topics
        self.client.connect(*host_port(url))
        self.client.loop_start()
        assert self.connects.get(timeout=TIMEOUT)

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, _reason: Any, _p: Any) -> None:
        for topic in self.topics:
            client.subscribe(topic, qos=1)
        self.connects.put(time.monotonic())

    def next(self, timeout: float = TIMEOUT) -> tuple[str, bytes]:
        return self.messages.get(timeout=timeout)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(TIMEOUT)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_for(inbox: "queue.Queue[Any]", kind: type, timeout: float = TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        event = inbox.get(timeout=max(0.01, deadline - time.monotonic()))
        if isinstance(event, kind):
            return event


def make_link(url: str, prefix: str, data_dir: Path, device: str = "dev-1") -> tuple[MqttLink, "queue.Queue[Any]"]:
    config = AgentConfig(device_id=device, data_dir=data_dir, broker_url=url, topic_prefix=prefix)
    inbox: queue.Queue[Any] = queue.Queue()
    return MqttLink(config, inbox), inbox


@pytest.fixture
def durable_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """Like own_broker, but its persistence really works (as root, Mosquitto would drop to a user that cannot
    write pytest's tmp dir) and is saved every second, so sessions survive even a kill."""
    extra = "autosave_interval 1\n" + ("user root\n" if os.geteuid() == 0 else "")
    with running_mosquitto(tmp_path / "durable", extra) as broker:
        yield broker


def wait_for_autosave(broker: Mosquitto, timeout: float = TIMEOUT) -> None:
    """Mosquitto writes its database only every autosave_interval; a kill before that loses the session."""
    db = broker.workdir / "mosquitto.db"
    since = time.time()
    deadline = time.monotonic() + timeout
    while not (db.exists() and db.stat().st_mtime > since):
        assert time.monotonic() < deadline, "the broker did not save its database"
        time.sleep(0.1)


def test_online_on_connect_offline_by_will_or_clean_stop(session_broker: str, topic_prefix: str,
                                                         tmp_path: Path) -> None:
    status_topic = f"{topic_prefix}/devices/dev-1/status"
    observer = Observer(session_broker, status_topic)
    try:
        link, inbox = make_link(session_broker, topic_prefix, tmp_path)
        link.start()
        assert wait_for(inbox, Connected).session_present is False
        assert Status.parse(observer.next()[1]).status == "online"
        link.stop(clean=False)  # like a crash: the broker publishes the Last Will
        assert Status.parse(observer.next()[1]).status == "offline"

        link, inbox = make_link(session_broker, topic_prefix, tmp_path)
        link.start()
        wait_for(inbox, Connected)
        assert Status.parse(observer.next()[1]).status == "online"
        link.stop(clean=True)
        assert Status.parse(observer.next()[1]).status == "offline"
        assert not link.connected
        observer.publish(status_topic, b"", retain=True)
    finally:
        observer.close()


def test_persistent_session_keeps_qos1_messages_while_the_agent_is_away(durable_broker: Mosquitto,
                                                                        tmp_path: Path) -> None:
    prefix = "edgeops"
    desired = f"{prefix}/devices/dev-1/desired"
    link, inbox = make_link(durable_broker.url, prefix, tmp_path)
    link.subscribe(desired)
    link.start()
    wait_for(inbox, Connected)
    link.stop(clean=True)

    control = Observer(durable_broker.url)
    control.publish(desired, b"sent while the agent was away")  # not retained: only the session keeps it
    wait_for_autosave(durable_broker)
    durable_broker.restart(down_for=0.5)  # even across a broker restart (kill -9)
    control.close()

    link, inbox = make_link(durable_broker.url, prefix, tmp_path)  # a new process: same client id
    link.start()
    assert wait_for(inbox, Connected).session_present is True
    message = wait_for(inbox, Message)
    assert (message.topic, message.payload, message.retained) == (desired, b"sent while the agent was away", False)
    link.stop()


def test_reconnects_soon_after_a_3s_outage_and_resubscribes(own_broker: Mosquitto, tmp_path: Path) -> None:
    prefix = "edgeops"
    desired = f"{prefix}/devices/dev-1/desired"
    link, inbox = make_link(own_broker.url, prefix, tmp_path)
    link.subscribe(desired)
    link.start()
    wait_for(inbox, Connected)
    paho_default = Observer(own_broker.url)  # paho's own backoff: waits 1, 2, 4 ... s

    own_broker.restart(down_for=3.0)  # kill -9; this broker keeps no session: the link must resubscribe
    back = time.monotonic()
    assert isinstance(wait_for(inbox, Disconnected), Disconnected)
    wait_for(inbox, Connected)
    ours = time.monotonic() - back
    theirs = paho_default.connects.get(timeout=TIMEOUT) - back
    print(f"\nreconnect after the broker was back: MqttLink {ours:.2f} s, paho default backoff {theirs:.2f} s; "
          f"first delays {[round(next_delay(i, 0.1, 30.0), 2) for i in range(8)]}")

    paho_default.publish(desired, b"after the outage")
    message = wait_for(inbox, Message)
    assert message.payload == b"after the outage"
    mid = link.publish(f"{prefix}/devices/dev-1/telemetry", b"{}")
    assert mid > 0 and wait_for(inbox, Published).mid in (mid, mid - 1)  # mid-1: the online status
    paho_default.close()
    link.stop()


def test_publish_while_offline_is_kept_and_sent_after_reconnect(own_broker: Mosquitto, tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    prefix = "edgeops"
    topic = f"{prefix}/devices/dev-1/events"
    observer = Observer(own_broker.url, topic)
    link, inbox = make_link(own_broker.url, prefix, tmp_path)
    link.start()
    wait_for(inbox, Connected)
    own_broker.stop(kill=True)
    wait_for(inbox, Disconnected)
    assert not link.connected
    mid = link.publish(topic, b"queued in paho", retain=True)  # retained: the observer may resubscribe later
    assert mid > 0
    with caplog.at_level(logging.WARNING, logger="edge_agent.link"):
        assert link.publish(topic, b"qos 0 is not kept", qos=0) == -1
    assert not caplog.records  # dropping QoS 0 offline is what its sender chose (a transient report): no warning
    own_broker.start()
    wait_for(inbox, Connected)
    acked = set()
    while mid not in acked:
        acked.add(wait_for(inbox, Published).mid)
    assert observer.next() == (topic, b"queued in paho")
    observer.publish(topic, b"", retain=True)
    observer.close()
    link.stop()


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    delays = [next_delay(i, 0.1, 30.0) for i in range(40)]
    assert 0.08 <= delays[0] <= 0.12
    assert all(d <= 30.0 for d in delays) and max(delays) >= 24.0
    assert len({round(next_delay(5, 0.1, 30.0), 6) for _ in range(20)}) > 1  # jittered


def make_tls_files(directory: Path, hostname: str) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for ``hostname`` (and 127.0.0.1), written as PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def cert(subject: str, key: Any, issuer: str, signer: Any, ca: bool, names: list[Any]) -> x509.Certificate:
        builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = cert("edgeops test CA", ca_key, "edgeops test CA", ca_key, True, [])
    names: list[Any] = [x509.DNSName(hostname)]
    if hostname[0].isdigit():
        names.append(x509.IPAddress(ipaddress.ip_address(hostname)))
    server = cert(hostname, server_key, "edgeops test CA", ca_key, False, names)
    paths = directory / "ca.crt", directory / "server.crt", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return paths


@pytest.mark.parametrize(("cert_host", "insecure", "connects"), [
    ("127.0.0.1", False, True), ("wrong.example", True, True), ("wrong.example", False, False)])
def test_tls_with_our_ca_file(tmp_path: Path, cert_host: str, insecure: bool, connects: bool) -> None:
    """mqtts:// with ca_file; a certificate for another host name is refused unless tls_insecure."""
    ca, cert, key = make_tls_files(tmp_path, cert_host)
    extra = f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n" + ("user root\n" if os.geteuid() == 0 else "")
    with running_mosquitto(tmp_path / "tls", extra) as broker:
        config = AgentConfig(device_id="dev-1", data_dir=tmp_path / "agent", broker_url=f"mqtts://127.0.0.1:{broker.port}",
                             ca_file=ca, tls_insecure=insecure)
        inbox: queue.Queue[Any] = queue.Queue()
        link = MqttLink(config, inbox)
        link.start()
        try:
            if connects:
                wait_for(inbox, Connected)
                assert link.connected
            else:
                with pytest.raises(queue.Empty):
                    wait_for(inbox, Connected, timeout=3.0)
                assert not link.connected
        finally:
            link.stop()


def test_a_control_client_whose_paho_loaded_without_ssl_verifies_and_talks_over_tls(tmp_path: Path) -> None:
    """paho loads with a stand-in for ``ssl`` (edge_agent/paho_import.py). In a fresh interpreter, where nothing
    loaded ssl first, the first TLS setup must load the real module, verify the broker against our CA and carry
    messages; a broker whose certificate another CA signed must still be refused."""
    ca, cert, key = make_tls_files(tmp_path, "127.0.0.1")
    (tmp_path / "other").mkdir()
    other_ca = make_tls_files(tmp_path / "other", "127.0.0.1")[0]  # a CA that did not sign the broker's cert
    extra = f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n" + ("user root\n" if os.geteuid() == 0 else "")
    with running_mosquitto(tmp_path / "tls", extra) as broker:
        out = fresh_python(f"""
            import sys
            from edgeops.errors import BrokerError
            from edgeops.mqtt import ControlClient
            print("ssl before:", "ssl" in sys.modules)
            with ControlClient("mqtts://127.0.0.1:{broker.port}", ca_file={str(ca)!r}) as client:
                client.publish_many([("t/tls", b"over tls", True)])
                print("retained:", client.collect_retained("t/#")["t/tls"].decode())
            try:
                ControlClient("mqtts://127.0.0.1:{broker.port}", ca_file={str(other_ca)!r}).connect()
            except BrokerError as exc:
                print("other CA refused:", "CERTIFICATE_VERIFY_FAILED" in str(exc))
        """)
    assert out.splitlines() == ["ssl before: False", "retained: over tls", "other CA refused: True"]

"""Mosquitto started from the shipped deployments/mosquitto files, and a blocking MQTT 5 test client for it.

Only ports and file locations are changed, each exactly once, so a test of this broker is a test of the file
an operator installs. The device listener is TLS, as shipped: the test makes a CA and a server certificate
for 127.0.0.1 (what an operator gets from their PKI) and the clients verify it.
"""

import contextlib
import ipaddress
import os
import queue
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion
from services import free_port, mosquitto_binary, wait_port

DEPLOY = Path(__file__).parents[1] / "deployments" / "mosquitto"
TIMEOUT = 10.0
CONTROL_USER = "edgeops-control"


@dataclass
class ShippedBroker:
    control_port: int  # plain, localhost: the control plane
    device_port: int   # TLS, client id bound to the username: the devices
    ca_file: Path
    creds: dict[str, str]
    proc: subprocess.Popen[bytes]
    log: Path


def make_tls(out: Path) -> Path:
    """A CA, and a server certificate it signed for 127.0.0.1; returns the CA file clients trust."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgeops test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(hours=1))
          .not_valid_after(now + timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
              .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=1))
              .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                          x509.DNSName("localhost")]), critical=False)
              .sign(ca_key, hashes.SHA256()))
    out.mkdir(parents=True, exist_ok=True)
    (out / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (out / "server.crt").write_bytes(server.public_bytes(serialization.Encoding.PEM))
    (out / "server.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    return out / "ca.crt"


def shipped_config(tmp_path: Path, control_port: int, device_port: int) -> Path:
    """The shipped mosquitto.conf with only ports and file locations changed (each exactly once); the device
    listener is bound to 127.0.0.1 instead of every interface."""
    text = (DEPLOY / "mosquitto.conf").read_text()
    shutil.copy(DEPLOY / "acl", tmp_path / "acl")
    for old, new in [("listener 1883 127.0.0.1", f"listener {control_port} 127.0.0.1"),
                     ("listener 8883\n", f"listener {device_port} 127.0.0.1\n"),
                     ("/etc/mosquitto/edgeops-control.passwd", str(tmp_path / "control.passwd")),
                     ("/etc/mosquitto/edgeops-devices.passwd", str(tmp_path / "devices.passwd")),
                     ("/etc/mosquitto/certs/server.crt", str(tmp_path / "tls" / "server.crt")),
                     ("/etc/mosquitto/certs/server.key", str(tmp_path / "tls" / "server.key")),
                     ("persistence_location /var/lib/mosquitto/", f"persistence_location {tmp_path}/"),
                     ("log_dest syslog", f"log_dest file {tmp_path}/mosquitto.log")]:
        assert text.count(old) == 1, f"shipped mosquitto.conf changed: {old!r} not found once"
        text = text.replace(old, new)
    assert text.count("/etc/mosquitto/edgeops.acl") == 2, "one ACL file for both listeners"
    text = text.replace("/etc/mosquitto/edgeops.acl", str(tmp_path / "acl"))
    left = [line for line in text.splitlines() if not line.startswith("#") and ("/etc/" in line or "/var/" in line)]
    assert not left, f"shipped paths the test did not replace: {left}"
    if os.geteuid() == 0:  # as root Mosquitto drops to user "mosquitto", who cannot read pytest's 0700 tmp dir
        text += "\nuser root\n"
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(text)
    return conf


def make_users(passwd: Path, creds: Path, users: list[str]) -> dict[str, str]:
    """Users added with the shipped make-passwd.sh; their passwords read back from the .env files it writes."""
    subprocess.run([str(DEPLOY / "make-passwd.sh"), str(passwd), str(creds), *users], check=True, capture_output=True)
    return {u: (creds / f"{u}.env").read_text().strip().split("=", 1)[1] for u in users}


@contextlib.contextmanager
def shipped_broker(tmp_path: Path, devices: list[str]) -> Iterator[ShippedBroker]:
    creds = make_users(tmp_path / "control.passwd", tmp_path / "creds", [CONTROL_USER])
    creds |= make_users(tmp_path / "devices.passwd", tmp_path / "creds", devices)
    ca_file = make_tls(tmp_path / "tls")
    control_port, device_port = free_port(), free_port()
    proc = subprocess.Popen([mosquitto_binary(), "-c", str(shipped_config(tmp_path, control_port, device_port))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_port("127.0.0.1", control_port)
        wait_port("127.0.0.1", device_port)
        yield ShippedBroker(control_port, device_port, ca_file, creds, proc, tmp_path / "mosquitto.log")
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr:
            proc.stderr.close()


@dataclass
class Client:
    """A blocking MQTT 5 test client that records reason codes, disconnects and received messages."""

    client: mqtt.Client
    messages: "queue.Queue[tuple[str, bytes]]" = field(default_factory=queue.Queue)
    acks: dict[int, Any] = field(default_factory=dict)
    acked: threading.Condition = field(default_factory=threading.Condition)
    disconnects: "queue.Queue[str]" = field(default_factory=queue.Queue)

    def publish(self, topic: str, payload: bytes = b"x", retain: bool = False) -> str:
        """'ok' when the broker accepted it ('No matching subscribers' is a success too), else the reason."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        reason = self._wait(info.mid)
        return str(reason) if reason.is_failure else "ok"

    def subscribe(self, topic: str) -> str:
        _rc, mid = self.client.subscribe(topic, qos=1)
        return str(self._wait(mid)[0])

    def _wait(self, mid: int) -> Any:
        with self.acked:
            assert self.acked.wait_for(lambda: mid in self.acks, TIMEOUT), f"no ack for mid {mid}"
            return self.acks.pop(mid)

    def received(self, timeout: float = 1.0) -> list[str]:
        return [topic for topic, _ in self.received_messages(timeout)]

    def take(self, n: int) -> list[tuple[str, bytes]]:
        """The next ``n`` messages, waiting up to TIMEOUT for each."""
        return [self.messages.get(timeout=TIMEOUT) for _ in range(n)]

    def received_messages(self, timeout: float = 1.0) -> list[tuple[str, bytes]]:
        out = []
        try:
            while True:
                out.append(self.messages.get(timeout=timeout))
                timeout = 0.2
        except queue.Empty:
            return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def connect(port: int, user: str | None, password: str | None, *, client_id: str = "",
            ca_file: Path | None = None) -> tuple[Client | None, str]:
    """Connect (TLS when ``ca_file`` is given) and wait for the CONNACK: (client, "Success") or (None, reason)."""
    raw = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client = Client(raw)
    result: queue.Queue[str] = queue.Queue()
    if user is not None:
        raw.username_pw_set(user, password)
    if ca_file is not None:
        raw.tls_set(ca_certs=str(ca_file))

    def on_ack(_c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        with client.acked:
            client.acks[mid] = reason
            client.acked.notify_all()

    def on_disconnect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        client.disconnects.put(str(reason))
        result.put(f"disconnected: {reason}")  # read only when it comes before the CONNACK

    raw.on_connect = lambda _c, _u, _f, reason, _p: result.put(str(reason))
    raw.on_disconnect = on_disconnect
    raw.on_publish = on_ack
    raw.on_subscribe = on_ack
    raw.on_message = lambda _c, _u, msg: client.messages.put((msg.topic, msg.payload))
    raw.connect("127.0.0.1", port)
    raw.loop_start()
    reason = result.get(timeout=TIMEOUT)
    if reason != "Success":
        raw.disconnect()
        raw.loop_stop()
        return None, reason
    return client, reason


def connect_control(broker: ShippedBroker, client_id: str = "") -> Client:
    client, reason = connect(broker.control_port, CONTROL_USER, broker.creds[CONTROL_USER], client_id=client_id)
    assert client is not None, reason
    return client


def connect_device(broker: ShippedBroker, device: str, client_id: str = "") -> Client:
    client, reason = connect(broker.device_port, device, broker.creds[device], client_id=client_id,
                             ca_file=broker.ca_file)
    assert client is not None, reason
    return client

"""Simulated devices for fast tests and fleet benchmarks: each one a real MQTT session (its own paho client,
Last Will, subscriptions) speaking the real protocol, but with no model runtime behind it.

A simulated device does what the agent's protocol side does — on a ``desired`` it enters ``fetching``
(reported, as by an agent, only if the update lasts ``report_steps_after_s``), fetches the retained release
(manifest + artifact or chunks), verifies the signature and the hashes with the agent's own
``edge_agent.verify`` code, then reports ``serving`` (or ``rejected``) and emits the event — and skips what
needs onnxruntime (self-test, inference, telemetry). Each device does the verification work an agent does for
an update, on its own bytes (no result is shared between devices): parse the manifest and check its signature
when it arrives (the agent's fetch), then check the signature again and hash the artifact (its ``verifying``
phase). ``verify_cpu_s`` adds up the CPU the fleet thread spent on that, which a real fleet spends in parallel,
each device on its own CPU. It obeys any well-formed desired state, signed or not:
the agent's replay and expiry checks (edge_agent/desired.py) are tested against real agents, and a simulated
fleet measures the control plane and the broker.

All clients run on one thread (tests/one_thread_clients.py, the transport half: a thousand paho network
threads would measure the Python scheduler, not the broker); all device logic runs on that thread, and the
test thread talks to it through ``call`` (a queue), never directly.
"""

import logging
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from one_thread_clients import OneThreadClients
from paho.mqtt.enums import MQTTProtocolVersion

from edge_agent.errors import VerificationError
from edge_agent.mqtt_client import ClientOptions, Will, connect, make_client
from edge_agent.protocol import (
    AgentEvent,
    Desired,
    ProtocolError,
    ReleaseManifest,
    Reported,
    Status,
    StepReports,
    Topics,
    parse_manifest,
)
from edge_agent.verify import KeyRing, public_key_id, verify_artifact, verify_manifest
from edgeops.mqtt import broker_address

log = logging.getLogger(__name__)
MAX_ARTIFACT_BYTES = 64 << 20
HOLD_POLL_S = 0.05  # how often a held install looks at its ``hold`` again


def _trust_error(manifest: ReleaseManifest, keyring: KeyRing, payload: bytes) -> str | None:
    """Why the signature over ``payload`` is not trusted, or None: the agent's check (edge_agent/fetch.py)."""
    try:
        verify_manifest(manifest, keyring, payload)
    except VerificationError as exc:
        return str(exc)
    except ProtocolError as exc:
        return f"manifest cannot be verified: {exc}"
    return None


@dataclass
class SimDevice:
    """One simulated device. ``reject`` makes it refuse every new release with that reason; ``install_s``
    is how long a verified release takes to become ``serving``; ``hold``, when given, keeps a verified release
    from installing until the test sets it (a rollout that stays in flight for as long as a test needs);
    ``public_keys`` the keys it trusts."""

    device: str
    labels: dict[str, str] = field(default_factory=dict)
    model: str | None = None
    version: int | None = None
    public_keys: tuple[Ed25519PublicKey, ...] = ()
    reject: str | None = None
    install_s: float = 0.0
    hold: threading.Event | None = None
    state: str = "idle"
    online: bool = False
    installs: int = 0
    _wanted: bool = True  # reconnect after a lost connection (like an agent), unless sent offline on purpose
    _target: Desired | None = None
    _pieces: dict[int | None, bytes] = field(default_factory=dict)
    _manifest_bytes: bytes | None = None
    _checked: tuple[ReleaseManifest, str | None] | None = None  # the manifest of _manifest_bytes, verified
    _key_ids: tuple[tuple[Ed25519PublicKey, ...], tuple[str, ...]] = ((), ())  # public_keys and their ids
    _steps: StepReports = field(default_factory=lambda: StepReports(0.0))  # set by the fleet
    _hello: mqtt.MQTTMessageInfo | None = None  # the first report of the current connection

    @property
    def announced(self) -> bool:
        """Online, and the broker has acknowledged the report it sent on connecting, so a controller or
        fleet view that reads the retained state now sees this device (``online`` alone comes earlier)."""
        return self.online and self._hello is not None and self._hello.is_published()

    def key_ids(self) -> tuple[str, ...]:
        """Ids of ``public_keys``, worked out again only when the keys were replaced."""
        if self._key_ids[0] is not self.public_keys:
            self._key_ids = (self.public_keys, tuple(public_key_id(k) for k in self.public_keys))
        return self._key_ids[1]


class SimFleet(OneThreadClients):
    """Hosts many ``SimDevice`` on one thread. Use as a context manager; ``call`` runs a function on it.
    ``report_steps_after_s`` is the agent setting of that name (the agent's default)."""

    def __init__(self, url: str, topics: Topics, devices: Iterable[SimDevice], *, keepalive: int = 60,
                 report_steps_after_s: float = 1.0) -> None:
        super().__init__("sim-fleet")
        self.address = broker_address(url)
        self.topics = topics
        self.devices = {d.device: d for d in devices}
        for dev in self.devices.values():
            dev._steps = StepReports(report_steps_after_s)
        self.keepalive = keepalive
        self._tag = uuid.uuid4().hex[:8]
        self._keyrings: dict[tuple[str, ...], KeyRing] = {}  # configuration: an agent loads its keys once
        self._parsed: dict[bytes, ReleaseManifest] = {}  # for the fetch-only baseline, which verifies nothing
        self.verify_cpu_s = 0.0
        """CPU seconds of the fleet thread spent verifying (manifest parse + signatures + artifact hashes)."""
        self.published = 0
        self.received = 0
        """PUBLISH messages the simulated devices sent and received (for messages-per-device figures)."""
        self.fetched: dict[str, int] = {}
        """Per device, how many complete releases it fetched with ``fetch_release`` (benchmark baseline)."""

    # lifecycle (test thread) ----------------------------------------------------------------------------
    def __enter__(self) -> "SimFleet":
        self._start()
        self.call(lambda: list(map(self._connect, self.devices.values())))
        self.wait_until(lambda: all(d.announced for d in self.devices.values()), 60.0,
                        "all simulated devices online and reported")
        return self

    def __exit__(self, *_exc: object) -> None:
        self.call(self._disconnect_all)
        self._stop()

    def go_offline(self, device: str) -> None:
        """Drop the device's connection without a DISCONNECT, so the broker publishes its Last Will; it stays
        offline until ``come_online``."""
        self.devices[device]._wanted = False
        self.call(lambda: self._drop(device))

    def come_online(self, device: str) -> None:
        self.devices[device]._wanted = True
        self.call(lambda: self._connect(self.devices[device]))

    def fetch_release(self, model: str, version: int) -> None:
        """Make every device fetch the retained release without any desired/reported round trip: the raw
        retained fan-out a rollout is compared against in benchmarks/fleet.py."""
        def start() -> None:
            for dev in self.devices.values():
                dev._target, dev._pieces, dev._manifest_bytes, dev._checked = None, {}, None, None
                dev._target = Desired(device=dev.device, model=model, version=version, rollout_id="#fetch-only")
                self._clients[dev.device].subscribe(self.topics.release_filter(model, version), qos=1)
        self.call(start)

    def _keyring(self, dev: SimDevice) -> KeyRing:
        ids = dev.key_ids()
        if ids not in self._keyrings:
            self._keyrings[ids] = KeyRing.from_public_keys(dev.public_keys)
        return self._keyrings[ids]

    def _manifest(self, payload: bytes, dev: SimDevice) -> tuple[ReleaseManifest, str | None]:
        """The device's manifest, parsed and its signature checked once, when it arrived. The fetch-only
        baseline only parses (once for all devices: it needs the number of chunks, not trust)."""
        if dev._target is not None and dev._target.rollout_id == "#fetch-only":
            if payload not in self._parsed:
                self._parsed[payload] = parse_manifest(payload)
            return self._parsed[payload], None
        if dev._checked is None:
            started = time.thread_time()
            try:
                manifest = parse_manifest(payload)
                dev._checked = manifest, _trust_error(manifest, self._keyring(dev), payload)
            finally:
                self.verify_cpu_s += time.thread_time() - started
        return dev._checked

    def _connect(self, dev: SimDevice) -> None:
        self._forget(dev.device)
        client = self._clients.get(dev.device)
        options = self._options(dev)
        if client is None:
            client = make_client(options)
            client.user_data_set(dev)
            client.on_connect = self._on_connect
            client.on_message = self._on_message
            client.on_disconnect = self._on_disconnect
            self._clients[dev.device] = client
        connect(client, options)
        self._attach(dev.device, client)

    def _options(self, dev: SimDevice) -> ClientOptions:
        """Like an agent's link: a retained ``offline`` status as the Will; MQTT 3.1.1, clean session."""
        return ClientOptions(broker=self.address, client_id=f"sim-{self._tag}-{dev.device}",
                             will=Will(self.topics.device(dev.device, "status"),
                                       Status(device=dev.device, status="offline").to_bytes()),
                             protocol=MQTTProtocolVersion.MQTTv311, keepalive_s=self.keepalive)

    def _reconnect_lost(self) -> None:
        """Devices whose connection broke (a broker restart) try again about once a second."""
        for dev in self.devices.values():
            if dev._wanted and not dev.online and dev.device not in self._socks and self._run:
                try:
                    self._connect(dev)
                except OSError:
                    return  # the broker is still away; try again at the next round

    def _disconnect_all(self) -> None:
        for dev in self.devices.values():
            dev._wanted = False  # leaving: a lost connection must not be reconnected (the loop would, at its next pass)
        for name, client in self._clients.items():
            if self.devices[name].online:
                self._publish(client, self.topics.device(name, "status"),
                              Status(device=name, status="offline").to_bytes(), retain=True)
                client.disconnect()
                client.loop_write()

    # device behaviour (fleet thread) -------------------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, dev: SimDevice, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.warning("simulated %s: connect refused: %s", dev.device, reason)
            return
        dev.online = True
        self._publish(client, self.topics.device(dev.device, "status"),
                      Status(device=dev.device, status="online").to_bytes(), retain=True)
        dev._hello = self._report(client, dev)
        client.subscribe(self.topics.device(dev.device, "desired"), qos=1)

    def _on_disconnect(self, _c: mqtt.Client, dev: SimDevice, _f: Any, _r: Any, _p: Any) -> None:
        dev.online = False
        dev._hello = None

    def _on_message(self, client: mqtt.Client, dev: SimDevice, msg: mqtt.MQTTMessage) -> None:
        self.received += 1
        try:
            if msg.topic.endswith("/desired"):
                desired = Desired.parse(bytes(msg.payload)) if msg.payload else None
                if desired is not None and not desired.clears:  # a clear keeps serving what runs, as for an agent
                    self._on_desired(client, dev, desired)
            elif dev._target is not None:
                self._on_release_piece(client, dev, msg.topic, bytes(msg.payload))
        except ProtocolError as exc:
            log.warning("simulated %s: bad message on %s: %s", dev.device, msg.topic, exc)

    def _on_desired(self, client: mqtt.Client, dev: SimDevice, desired: Desired) -> None:
        assert desired.model is not None and desired.version is not None   # a clear never comes here
        if (desired.model, desired.version) == (dev.model, dev.version):
            if dev.state != "serving" or dev._target is not None:  # back to what it runs (e.g. a rollback)
                dev.state, dev._target = "serving", None
                self._report(client, dev, desired)
            return
        dev._target, dev._pieces, dev._manifest_bytes, dev._checked = desired, {}, None, None
        dev.state = "fetching"
        self._report(client, dev)
        client.subscribe(self.topics.release_filter(desired.model, desired.version), qos=1)

    def _on_release_piece(self, client: mqtt.Client, dev: SimDevice, topic: str, payload: bytes) -> None:
        target = dev._target
        assert target is not None
        model, version, kind, chunk = self.topics.parse_release_topic(topic)
        if (model, version) != (target.model, target.version) or not payload:
            return
        if kind == "manifest":
            dev._manifest_bytes, dev._checked = payload, None
        else:
            dev._pieces[chunk] = payload
        if dev._manifest_bytes is None:
            return
        manifest, trust_error = self._manifest(dev._manifest_bytes, dev)
        info = manifest.artifact
        wanted: list[int | None] = [None] if info.chunks == 1 else list(range(info.chunks))
        if not all(i in dev._pieces for i in wanted):
            return
        client.unsubscribe(self.topics.release_filter(model, version))
        data = b"".join(dev._pieces[i] for i in wanted)
        manifest_bytes = dev._manifest_bytes
        assert manifest_bytes is not None
        dev._pieces, dev._manifest_bytes, dev._checked = {}, None, None
        if target.rollout_id == "#fetch-only":
            dev._target = None
            self.fetched[dev.device] = self.fetched.get(dev.device, 0) + 1
            return
        started = time.thread_time()
        try:
            if trust_error:  # checked once, on arrival, as the agent's fetch does (``verifying`` trusts that)
                raise VerificationError(trust_error)
            verify_artifact(manifest, data, MAX_ARTIFACT_BYTES)
            if dev.reject:
                raise VerificationError(dev.reject)
        except VerificationError as exc:
            self._finish(client, dev, target, str(exc))
            return
        finally:
            self.verify_cpu_s += time.thread_time() - started
        self._install(client, dev, target)

    def _install(self, client: mqtt.Client, dev: SimDevice, target: Desired) -> None:
        if dev.hold is not None and not dev.hold.is_set():
            self._later(HOLD_POLL_S, dev.device, lambda: self._install(client, dev, target))
        elif dev.install_s > 0:
            self._later(dev.install_s, dev.device, lambda: self._finish(client, dev, target, None))
        else:
            self._finish(client, dev, target, None)

    def _finish(self, client: mqtt.Client, dev: SimDevice, target: Desired, error: str | None) -> None:
        if dev._target is not target:
            return  # a newer desired state replaced this one meanwhile
        dev._target = None
        assert target.model is not None and target.version is not None   # a target is never a clear
        if error is None:
            dev.model, dev.version, dev.state, dev.installs = target.model, target.version, "serving", dev.installs + 1
        else:
            dev.state = "rejected"
        self._report(client, dev, target, error)
        event = AgentEvent(device=dev.device, event="installed" if error is None else "rejected",
                           model=target.model, version=target.version, reason=error, rollout_id=target.rollout_id)
        self._publish(client, self.topics.device(dev.device, "events"), event.to_bytes())

    def _report(self, client: mqtt.Client, dev: SimDevice, target: Desired | None = None,
                error: str | None = None) -> mqtt.MQTTMessageInfo | None:
        """Report like an agent: a step of a young update is held (``StepReports``) and sent by a timer if the
        update is still on it when that is due. Returns the publish, if one was made now."""
        target = target or dev._target
        report = Reported(device=dev.device, state=dev.state, model=dev.model, version=dev.version,
                          desired_version=None if target is None else target.version,
                          rollout_id=None if target is None else target.rollout_id, last_error=error,
                          agent_version="sim", labels=dev.labels)
        now = time.monotonic()
        if dev._steps.offer(report, now) is not None:
            return self._send_report(client, report)
        if dev._steps.next_due is not None:
            self._later(dev._steps.next_due - now, dev.device, lambda: self._send_due(client, dev))
        return None

    def _send_due(self, client: mqtt.Client, dev: SimDevice) -> None:
        report = dev._steps.due(time.monotonic())
        if report is not None and dev.online:
            self._send_report(client, report)

    def _send_report(self, client: mqtt.Client, report: Reported) -> mqtt.MQTTMessageInfo:
        return self._publish(client, self.topics.device(report.device, "reported"), report.to_bytes(),
                             retain=True, qos=report.qos)

    def _publish(self, client: mqtt.Client, topic: str, payload: bytes, retain: bool = False,
                 qos: int = 1) -> mqtt.MQTTMessageInfo:
        self.published += 1
        return client.publish(topic, payload, qos=qos, retain=retain)

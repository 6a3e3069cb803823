"""Test releases: small real ONNX models made by skl2onnx, signed manifests, and ways to spoil them.

Tests may use scikit-learn and skl2onnx (the agent may not). A release is built exactly as the control plane
would: real pipeline → ONNX → golden samples from scikit-learn → reference bins → canonical JSON → Ed25519.
"""

import dataclasses
import functools
import hashlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.protocol import (
    ArtifactInfo,
    CategoricalBins,
    Counts,
    Desired,
    GoldenSamples,
    InputSpec,
    Lineage,
    NumericBins,
    OutputSpec,
    Reference,
    ReleaseManifest,
    Signature,
    Topics,
    key_id,
)

PLANS = ("basic", "pro", "max")
COLUMNS = ("age in years", "income", "plan")  # user column names; ONNX names are made safe below
ONNX_NAMES = {"age in years": "age_in_years", "income": "income", "plan": "plan"}


def new_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def public_pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def kid(key: Ed25519PrivateKey) -> str:
    return key_id(key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def training_frame(seed: int, n: int = 240) -> tuple[Any, Any, Any]:
    """A small table with a missing value or two, a categorical column, a binary and a numeric target."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    age = rng.normal(40, 10, n).astype(np.float32)
    income = rng.normal(5, 2, n).astype(np.float32)
    age[::37] = np.nan
    frame = pd.DataFrame({"age_in_years": age, "income": income, "plan": rng.choice(PLANS, n)})
    label = ((np.nan_to_num(age, nan=40) + rng.normal(0, 6, n)) > 40).astype(int)
    value = income * 2 + (frame["plan"] == "pro") * 3
    return frame, label, value


@functools.lru_cache(maxsize=8)
def trained(task: str, seed: int = 0) -> tuple[Any, bytes, Any]:
    """(fitted pipeline, ONNX bytes, training frame) — cached, every test reuses the same few models."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame, label, value = training_frame(seed)
    pre = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(), StandardScaler()), ["age_in_years", "income"]),
        ("cat", OneHotEncoder(handle_unknown="ignore"), ["plan"]),
    ])
    final = LogisticRegression(C=0.5 + seed) if task == "binary" else Ridge(alpha=1.0 + seed)
    pipe = Pipeline([("pre", pre), ("final", final)]).fit(frame, label if task == "binary" else value)
    types = [("age_in_years", FloatTensorType([None, 1])), ("income", FloatTensorType([None, 1])),
             ("plan", StringTensorType([None, 1]))]
    options = {id(final): {"zipmap": False}} if task == "binary" else None
    onx = convert_sklearn(pipe, initial_types=types, options=options, target_opset=17)
    return pipe, onx.SerializeToString(), frame


def _golden(pipe: Any, frame: Any, task: str, rows: int = 12) -> GoldenSamples:
    sample = frame.iloc[:rows]
    inputs = {col: [None if (isinstance(v, float) and np.isnan(v)) else (v if isinstance(v, str) else float(v))
                    for v in sample[ONNX_NAMES[col]].tolist()] for col in COLUMNS}
    if task == "binary":
        return GoldenSamples(inputs=inputs, tolerance=1e-4, labels=[int(v) for v in pipe.predict(sample)],
                             probabilities=pipe.predict_proba(sample).astype(float).tolist())
    return GoldenSamples(inputs=inputs, tolerance=1e-3, values=pipe.predict(sample).astype(float).tolist())


def _reference(frame: Any, pipe: Any, task: str) -> tuple[dict[str, Reference], Reference]:
    refs: dict[str, Reference] = {}
    for col in ("age in years", "income"):
        values = frame[ONNX_NAMES[col]].to_numpy(dtype=float)
        edges = tuple(float(e) for e in np.unique(np.nanquantile(values, np.linspace(0, 1, 6))))
        bins = NumericBins(edges)
        counts = [0] * bins.size
        for v in values[~np.isnan(values)]:
            counts[bins.index(float(v))] += 1
        refs[col] = Reference(bins, Counts(tuple(counts), missing=int(np.isnan(values).sum())))
    cats = CategoricalBins(PLANS)
    refs["plan"] = Reference(cats, Counts(tuple(int((frame["plan"] == p).sum()) for p in PLANS)))
    predicted = pipe.predict(frame)
    if task == "binary":
        pred_bins: Any = CategoricalBins(("0", "1"))
        pred_counts = Counts(tuple(int((predicted == c).sum()) for c in (0, 1)))
    else:
        pred_bins = NumericBins(tuple(float(e) for e in np.unique(np.quantile(predicted, [0, 0.5, 1]))))
        pred_counts = Counts(tuple([0] * pred_bins.size))
    return refs, Reference(pred_bins, pred_counts)


def artifact_info(data: bytes, chunk_size: int, opset: int = 17) -> ArtifactInfo:
    chunks = tuple(hashlib.sha256(data[i:i + chunk_size]).hexdigest() for i in range(0, len(data), chunk_size))
    return ArtifactInfo(sha256=hashlib.sha256(data).hexdigest(), size=len(data), opset=opset,
                        chunk_size=chunk_size, chunk_sha256=chunks)


def sign(manifest: ReleaseManifest, key: Ed25519PrivateKey, claimed_key_id: str | None = None) -> ReleaseManifest:
    manifest = dataclasses.replace(manifest, signature=None)
    value = key.sign(manifest.signing_bytes())
    return manifest.with_signature(Signature(key_id=claimed_key_id or kid(key), value=value))


@dataclass(frozen=True)
class Release:
    manifest: ReleaseManifest
    data: bytes

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> int:
        return self.manifest.version


def build_release(name: str, version: int, key: Ed25519PrivateKey, *, task: str = "binary", seed: int = 0,
                  chunk_size: int = 1 << 20, data: bytes | None = None, calibrated: bool = False) -> Release:
    """A signed release of a real model; ``data`` overrides the ONNX bytes (the manifest describes them).
    ``calibrated`` adds the calibration table (manifest 1.2) measured on the training frame."""
    pipe, onnx_bytes, frame = trained(task, seed)
    data = onnx_bytes if data is None else data
    refs, pred_ref = _reference(frame, pipe, task)
    outputs = (OutputSpec(task="binary", label="label", probabilities="probabilities", classes=(0, 1))
               if task == "binary" else OutputSpec(task="regression", value="variable"))
    inputs = (InputSpec("age in years", "age_in_years", "float32"),
              InputSpec("income", "income", "float32", nullable=False),
              InputSpec("plan", "plan", "string", categories=PLANS, missing_token=""))
    manifest = ReleaseManifest(
        name=name, version=version, created="2026-11-27T12:00:00.000Z", artifact=artifact_info(data, chunk_size),
        inputs=inputs, outputs=outputs, reference=refs, prediction_reference=pred_ref,
        golden=_golden(pipe, frame, task), lineage=Lineage(data_sha256="0" * 64, config_sha256="1" * 64),
        metrics={"accuracy": 0.8} if task == "binary" else {"r2": 0.9},
        calibration=_calibration(pipe, seed, task, pred_ref) if calibrated else None)
    return Release(sign(manifest, key), data)


def write_manifests(folder: Path, releases: Iterable[tuple[str, int, str]]) -> list[Path]:
    """``folder/<name>-<version>.json`` for each (name, version, task), signed by one new key: the manifests a
    monitor or a label import reads releases from, without a registry."""
    key, paths = Ed25519PrivateKey.generate(), []
    for name, version, task in releases:
        path = folder / f"{name}-{version}.json"
        path.write_bytes(build_release(name, version, key, task=task).manifest.to_bytes())
        paths.append(path)
    return paths


def _calibration(pipe: Any, seed: int, task: str, pred_ref: Reference) -> Any:
    from edgeops.train.calibration import error_calibration, score_calibration

    frame, label, value = training_frame(seed)
    if task == "binary":
        return score_calibration(pipe.predict_proba(frame), np.asarray(label))
    return error_calibration(pipe.predict(frame), np.asarray(value, dtype=float), pred_ref.bins)


# ways to spoil a release ------------------------------------------------------------------------------
def tampered_artifact(release: Release) -> Release:
    """Same signed manifest, one flipped byte in the ONNX bytes."""
    data = bytearray(release.data)
    data[len(data) // 2] ^= 0xFF
    return Release(release.manifest, bytes(data))


def with_wrong_golden(release: Release, key: Ed25519PrivateKey) -> Release:
    """Correctly signed, but the golden labels disagree with what the model computes."""
    golden = release.manifest.golden
    spoiled = dataclasses.replace(golden, labels=[1 - v for v in golden.labels or []],
                                  probabilities=[[p[1], p[0]] for p in golden.probabilities or []])
    return Release(sign(dataclasses.replace(release.manifest, golden=spoiled), key), release.data)


def with_bytes(release: Release, data: bytes, key: Ed25519PrivateKey) -> Release:
    """Correctly signed manifest describing other bytes (e.g. something that is not ONNX at all)."""
    manifest = dataclasses.replace(release.manifest, artifact=artifact_info(data, release.manifest.artifact.chunk_size))
    return Release(sign(manifest, key), data)


_SIGNERS: dict[str, Any] = {}


def signed_desired(key: Ed25519PrivateKey, device: str, model: str | None, version: int | None,
                   rollout_id: str | None = None) -> bytes:
    """A desired state signed as the rollout controller signs it, by one signer per key for the whole session,
    so every call has a higher counter than the one before (as a real control plane's would)."""
    from edgeops.rollout.signer import DesiredSigner

    signer = _SIGNERS.setdefault(kid(key), DesiredSigner(key))
    return signer.sign(device, model, version, rollout_id)  # type: ignore[no-any-return]


# MQTT side of a test: publish releases and desired state, watch what the agent reports ----------------
class Control:
    """A tiny control plane for tests, on paho (VERSION2). Clears the retained topics it set on close. With
    ``key`` (the release key the agents trust) its desired states are signed as the rollout controller signs
    them (edgeops.rollout.signer); without one they are unsigned, as a 1.0 control plane sent them."""

    def __init__(self, url: str, prefix: str, key: Ed25519PrivateKey | None = None) -> None:
        self.key = key
        host, port = url.split("://", 1)[1].rsplit(":", 1)
        self.topics = Topics(prefix)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        self.received: list[tuple[str, bytes]] = []
        self.qos: list[int] = []  # the QoS each of ``received`` was delivered with (subscriptions are QoS 1)
        self.client.on_message = self._on_message
        self.client.connect(host, int(port))
        self.client.loop_start()
        self._retained: set[str] = set()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        self.qos.append(msg.qos)
        self.received.append((msg.topic, msg.payload))

    def publish(self, topic: str, payload: bytes, retain: bool = True) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)
        if retain:
            self._retained.add(topic)

    def publish_release(self, release: Release, *, manifest: bytes | None = None) -> None:
        m = release.manifest
        info = m.artifact
        if info.chunks == 1:
            self.publish(self.topics.artifact(m.name, m.version), release.data)
        else:
            for i in range(info.chunks):
                self.publish(self.topics.artifact(m.name, m.version, i),
                             release.data[i * info.chunk_size:(i + 1) * info.chunk_size])
        self.publish(self.topics.manifest(m.name, m.version), manifest or m.to_bytes())

    def set_desired(self, device: str, model: str | None, version: int | None, rollout_id: str | None = None) -> bytes:
        """Publish (retained) a desired state, signed when this control has a key; returns its bytes."""
        payload = self.desired_bytes(device, model, version, rollout_id)
        self.publish(self.topics.device(device, "desired"), payload)
        return payload

    def desired_bytes(self, device: str, model: str | None, version: int | None,
                      rollout_id: str | None = None) -> bytes:
        if self.key is None:
            return Desired(device=device, model=model, version=version, rollout_id=rollout_id).to_bytes()
        return signed_desired(self.key, device, model, version, rollout_id)

    def watch(self, device: str) -> None:
        for channel in ("reported", "events"):
            self.client.subscribe(self.topics.device(device, channel), qos=1)

    def wait_for(self, predicate: Callable[[str, bytes], bool], timeout: float = 30.0) -> tuple[str, bytes]:
        """First received message (from the start of the watch) that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for topic, payload in self.received[seen:]:
                if predicate(topic, payload):
                    return topic, payload
            seen = len(self.received)
            time.sleep(0.02)
        raise AssertionError(f"no matching message in {timeout}s; got {[t for t, _ in self.received][-10:]}")

    def messages(self, channel: str) -> Iterator[bytes]:
        return (p for t, p in list(self.received) if t.endswith("/" + channel))

    def close(self, clear: bool = True) -> None:
        """Disconnect; ``clear`` first deletes the retained messages this control set (shared brokers)."""
        for topic in self._retained if clear else ():
            self.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(10)
        self.client.loop_stop()
        self.client.disconnect()


# agents for tests ------------------------------------------------------------------------------------
def preinstall(data_dir: Path, release: Release, previous: Release | None = None) -> None:
    """Put a verified release on disk as the current model, as an earlier install would have."""
    from edge_agent.store import ModelRef, ModelStore, Pointer

    store = ModelStore(data_dir)
    store.install(release.manifest, release.data)
    prev = None
    if previous is not None:
        store.install(previous.manifest, previous.data)
        prev = ModelRef(previous.name, previous.version)
    store.write_pointer(Pointer(ModelRef(release.name, release.version), prev))


def agent_config(tmp: Path, url: str, prefix: str, key: Ed25519PrivateKey, device: str = "dev-1",
                 **overrides: Any) -> Any:
    from edge_agent.config import AgentConfig

    pub = tmp / "keys" / f"{kid(key)}.pub"
    pub.parent.mkdir(parents=True, exist_ok=True)
    pub.write_bytes(public_pem(key))
    values: dict[str, Any] = {"device_id": device, "data_dir": tmp / "data", "broker_url": url,
                              "public_keys": (pub,), "topic_prefix": prefix, "fetch_timeout_s": 20.0,
                              "probation_s": 0.0, "probation_min_predictions": 0, "reconnect_max_s": 1.0}
    values.update(overrides)
    return AgentConfig(**values)


def reported(topic: str, payload: bytes) -> dict[str, Any] | None:
    """The reported message as a dict, or None for other channels / cleared topics."""
    import json

    if not topic.endswith("/reported") or not payload:
        return None
    return json.loads(payload)


def is_reported(state: str | None, version: int | None = None, *, since: str = "",
                **fields: Any) -> Callable[[str, bytes], bool]:
    """Matches a reported message in ``state`` (None: any) running ``version``, sent at or after ``since``
    (an ISO timestamp; reports of an earlier, killed process may still be in flight)."""
    def check(topic: str, payload: bytes) -> bool:
        obj = reported(topic, payload)
        return obj is not None and (state is None or obj["state"] == state) and obj["ts"] >= since \
            and (version is None or obj["version"] == version) and all(obj.get(k) == v for k, v in fields.items())
    return check


def is_event(event: str, version: int) -> Callable[[str, bytes], bool]:
    import json

    def check(topic: str, payload: bytes) -> bool:
        if not topic.endswith("/events"):
            return False
        obj = json.loads(payload)
        return obj["event"] == event and obj["version"] == version
    return check


def with_runtime_trap(release: Release, key: Ed25519PrivateKey, limit: int = 64) -> Release:
    """The same model plus a trap that makes onnxruntime fail when ``income`` >= ``limit``: it passes the
    golden samples (incomes are small) and breaks in production — what probation exists to catch.

    The trap is a Gather from a ``limit``-long constant by ``int(income)``, multiplied by 0 and added to the
    probabilities, so the outputs are unchanged whenever it does not fail.
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load_from_string(release.data)
    graph = model.graph
    for node in graph.node:
        node.output[:] = ["probabilities_raw" if o == "probabilities" else o for o in node.output]
    table = helper.make_tensor("trap_table", TensorProto.FLOAT, [limit], [0.0] * limit)
    zero = helper.make_tensor("trap_zero", TensorProto.FLOAT, [], [0.0])
    graph.initializer.extend([table, zero])
    graph.node.extend([
        helper.make_node("Cast", ["income"], ["trap_index"], to=TensorProto.INT64),
        helper.make_node("Gather", ["trap_table", "trap_index"], ["trap_value"]),  # [N, 1]; fails out of range
        helper.make_node("Mul", ["trap_value", "trap_zero"], ["trap_nothing"]),
        helper.make_node("Add", ["probabilities_raw", "trap_nothing"], ["probabilities"]),
    ])
    return with_bytes(release, model.SerializeToString(), key)

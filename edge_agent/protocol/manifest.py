"""The release manifest: everything a device needs to verify, self-test, serve and monitor a model.

Parsing follows skops' rule for untrusted input: parse → check every field → only then build objects. The
signature covers the canonical JSON of the manifest without its ``signature`` member.
"""

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from .canonical import canonical_json, parse_json
from .errors import ProtocolError
from .fields import check_type, float_list, optional, require
from .histogram import Reference
from .names import check_name, check_version
from .performance import Calibration, ErrorCalibration, ScoreCalibration, parse_calibration
from .schema import MANIFEST, check_schema, tag
from .signature import Signature

Task = Literal["binary", "multiclass", "regression"]
TASKS: tuple[str, ...] = ("binary", "multiclass", "regression")
DTYPES: tuple[str, ...] = ("float32", "string")
MAX_INPUTS = 4096
MAX_GOLDEN_ROWS = 1000


@dataclass(frozen=True)
class InputSpec:
    """One model input = one data column. ``column`` is the user's text (any characters); ``name`` is the
    ONNX input name, made safe by the exporter. Every ONNX input has shape [N, 1].

    Missing strings are fed to the model as ``missing_token`` (skl2onnx cannot impute NaN on strings);
    missing numbers as NaN (the model's imputer handles them). ``nullable`` False makes the agent reject
    missing values for this column instead.
    """

    column: str
    name: str
    dtype: Literal["float32", "string"]
    nullable: bool = True
    categories: tuple[str, ...] | None = None
    missing_token: str = ""
    minimum: float | None = None
    maximum: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"column": self.column, "name": self.name, "dtype": self.dtype, "nullable": self.nullable,
                "categories": None if self.categories is None else list(self.categories),
                "missing_token": self.missing_token, "minimum": self.minimum, "maximum": self.maximum}

    @classmethod
    def from_json(cls, obj: Any, path: str) -> "InputSpec":
        obj = check_type(obj, dict, path)
        dtype = require(obj, "dtype", str, path)
        if dtype not in DTYPES:
            raise ProtocolError(f"dtype {dtype!r} is not one of {DTYPES}", field=f"{path}.dtype")
        cats = optional(obj, "categories", list, path)
        return cls(
            column=require(obj, "column", str, path),
            name=require(obj, "name", str, path),
            dtype=dtype,  # type: ignore[arg-type]
            nullable=optional(obj, "nullable", bool, path, True),
            categories=None if cats is None else tuple(check_type(c, str, f"{path}.categories") for c in cats),
            missing_token=optional(obj, "missing_token", str, path, ""),
            minimum=optional(obj, "minimum", float, path),
            maximum=optional(obj, "maximum", float, path),
        )


@dataclass(frozen=True)
class OutputSpec:
    """ONNX output names. Classifiers: ``label`` and ``probabilities`` (no ZipMap), columns in ``classes``
    order. Regressors: ``value`` only."""

    task: Task
    label: str | None = None
    probabilities: str | None = None
    value: str | None = None
    classes: tuple[str | int | float | bool, ...] | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ProtocolError(f"task {self.task!r} is not one of {TASKS}", field="outputs.task")
        if self.task == "regression" and not self.value:
            raise ProtocolError("a regressor needs a value output", field="outputs.value")
        if self.task != "regression" and not (self.label and self.probabilities and self.classes):
            raise ProtocolError("a classifier needs label, probabilities and classes", field="outputs")

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "label": self.label, "probabilities": self.probabilities,
                "value": self.value, "classes": None if self.classes is None else list(self.classes)}

    @classmethod
    def from_json(cls, obj: Any, path: str = "outputs") -> "OutputSpec":
        obj = check_type(obj, dict, path)
        classes = optional(obj, "classes", list, path)
        if classes is not None and not all(isinstance(c, str | int | float | bool) for c in classes):
            raise ProtocolError("classes must be scalars", field=f"{path}.classes")
        return cls(task=require(obj, "task", str, path),  # type: ignore[arg-type]
                   label=optional(obj, "label", str, path), probabilities=optional(obj, "probabilities", str, path),
                   value=optional(obj, "value", str, path), classes=None if classes is None else tuple(classes))


@dataclass(frozen=True)
class ArtifactInfo:
    """The ONNX bytes: whole hash and size, and per-chunk hashes when sent in several messages."""

    sha256: str
    size: int
    opset: int
    chunk_size: int
    chunk_sha256: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256):
            raise ProtocolError("must be 64 lowercase hex characters", field="artifact.sha256")
        if self.size < 1 or self.chunk_size < 1:
            raise ProtocolError("size and chunk_size must be positive", field="artifact")
        if len(self.chunk_sha256) != -(-self.size // self.chunk_size):
            raise ProtocolError("chunk_sha256 does not match size / chunk_size", field="artifact.chunk_sha256")

    @property
    def chunks(self) -> int:
        return len(self.chunk_sha256)

    def to_json(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "size": self.size, "opset": self.opset,
                "chunk_size": self.chunk_size, "chunk_sha256": list(self.chunk_sha256)}

    @classmethod
    def from_json(cls, obj: Any, path: str = "artifact") -> "ArtifactInfo":
        obj = check_type(obj, dict, path)
        chunks = require(obj, "chunk_sha256", list, path)
        return cls(sha256=require(obj, "sha256", str, path), size=require(obj, "size", int, path),
                   opset=require(obj, "opset", int, path), chunk_size=require(obj, "chunk_size", int, path),
                   chunk_sha256=tuple(check_type(c, str, f"{path}.chunk_sha256") for c in chunks))


@dataclass(frozen=True)
class GoldenSamples:
    """Rows the device must reproduce before it activates a model: inputs by column (None = missing) and
    scikit-learn's outputs. Labels must match exactly; probabilities/values within ``tolerance``."""

    inputs: dict[str, list[float | str | None]]
    tolerance: float
    labels: list[Any] | None = None
    probabilities: list[list[float]] | None = None
    values: list[float] | None = None

    @property
    def rows(self) -> int:
        return len(next(iter(self.inputs.values()), []))

    def to_json(self) -> dict[str, Any]:
        return {"inputs": self.inputs, "tolerance": self.tolerance, "labels": self.labels,
                "probabilities": self.probabilities, "values": self.values}

    @classmethod
    def from_json(cls, obj: Any, path: str = "golden") -> "GoldenSamples":
        obj = check_type(obj, dict, path)
        inputs = require(obj, "inputs", dict, path)
        rows = {len(check_type(v, list, f"{path}.inputs.{k}")) for k, v in inputs.items()}
        if len(rows) > 1 or (rows and rows.pop() > MAX_GOLDEN_ROWS):
            raise ProtocolError(f"columns must have equal length <= {MAX_GOLDEN_ROWS}", field=f"{path}.inputs")
        probs = optional(obj, "probabilities", list, path)
        values = optional(obj, "values", list, path)
        return cls(inputs=inputs, tolerance=require(obj, "tolerance", float, path),
                   labels=optional(obj, "labels", list, path),
                   probabilities=None if probs is None else
                   [float_list(p, f"{path}.probabilities[{i}]") for i, p in enumerate(probs)],
                   values=None if values is None else float_list(values, f"{path}.values"))


@dataclass(frozen=True)
class Lineage:
    """Where a release came from: its data, config, code and the champion it was trained to replace."""

    data_sha256: str
    config_sha256: str
    code_revision: str | None = None
    parent_version: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"data_sha256": self.data_sha256, "config_sha256": self.config_sha256,
                "code_revision": self.code_revision, "parent_version": self.parent_version}

    @classmethod
    def from_json(cls, obj: Any, path: str = "lineage") -> "Lineage":
        obj = check_type(obj, dict, path)
        return cls(data_sha256=require(obj, "data_sha256", str, path),
                   config_sha256=require(obj, "config_sha256", str, path),
                   code_revision=optional(obj, "code_revision", str, path),
                   parent_version=optional(obj, "parent_version", int, path))


@dataclass(frozen=True)
class ReleaseManifest:
    """Everything a device needs to verify, self-test and monitor a release (docs/protocol.md)."""

    name: str
    version: int
    created: str
    artifact: ArtifactInfo
    inputs: tuple[InputSpec, ...]
    outputs: OutputSpec
    reference: dict[str, Reference]
    prediction_reference: Reference
    golden: GoldenSamples
    lineage: Lineage
    metrics: dict[str, float] = field(default_factory=dict)
    signature: Signature | None = None
    calibration: Calibration | None = None
    """1.2: the reference for estimating performance without labels (performance.py); None in a 1.0 manifest."""

    def __post_init__(self) -> None:
        check_name(self.name, "name")
        check_version(self.version)
        if not 1 <= len(self.inputs) <= MAX_INPUTS:
            raise ProtocolError(f"needs 1 to {MAX_INPUTS} inputs", field="inputs")
        for attr in ("column", "name"):
            values = [getattr(spec, attr) for spec in self.inputs]
            if len(set(values)) != len(values):
                raise ProtocolError(f"input {attr}s must be distinct", field="inputs")
        columns = {spec.column for spec in self.inputs}
        if set(self.golden.inputs) != columns:
            raise ProtocolError("golden inputs must name every input column", field="golden.inputs")
        if not set(self.reference) <= columns:
            raise ProtocolError("reference names a column that is not an input", field="reference")
        self._check_calibration()

    def _check_calibration(self) -> None:
        """A calibration must fit the outputs it describes: one row per class, or one value per prediction bin
        plus underflow and overflow."""
        cal = self.calibration
        if cal is None:
            return
        if isinstance(cal, ScoreCalibration):
            if self.outputs.task == "regression" or cal.classes != len(self.outputs.classes or ()):
                raise ProtocolError(f"score calibration has {cal.classes} classes, the outputs "
                                    f"{len(self.outputs.classes or ())}", field="calibration")
        elif isinstance(cal, ErrorCalibration):
            wanted = self.prediction_reference.bins.size + 2
            if self.outputs.task != "regression" or self.prediction_reference.bins.kind != "numeric" \
                    or len(cal.rows) != wanted:
                raise ProtocolError(f"error calibration needs {wanted} values for a regressor's prediction bins",
                                    field="calibration")

    def input_spec(self, column: str) -> InputSpec:
        for spec in self.inputs:
            if spec.column == column:
                return spec
        raise KeyError(column)

    def to_json(self, *, signed: bool = True) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "schema": tag(MANIFEST), "name": self.name, "version": self.version, "created": self.created,
            "artifact": self.artifact.to_json(), "inputs": [spec.to_json() for spec in self.inputs],
            "outputs": self.outputs.to_json(),
            "reference": {"features": {col: ref.to_json() for col, ref in self.reference.items()},
                          "prediction": self.prediction_reference.to_json()},
            "golden": self.golden.to_json(), "lineage": self.lineage.to_json(), "metrics": self.metrics,
            "calibration": None if self.calibration is None else self.calibration.to_json(),
        }
        if signed and self.signature is not None:
            obj["signature"] = self.signature.to_json()
        return obj

    def signing_bytes(self) -> bytes:
        """The exact bytes the Ed25519 signature covers."""
        return canonical_json(self.to_json(signed=False))

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    def with_signature(self, signature: Signature) -> "ReleaseManifest":
        return replace(self, signature=signature)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "ReleaseManifest":
        check_schema(obj, MANIFEST)
        ref = require(obj, "reference", dict)
        features = require(ref, "features", dict, "reference")
        metrics = require(obj, "metrics", dict)
        sig = obj.get("signature")
        return cls(
            name=require(obj, "name", str), version=require(obj, "version", int),
            created=require(obj, "created", str), artifact=ArtifactInfo.from_json(require(obj, "artifact", dict)),
            inputs=tuple(InputSpec.from_json(s, f"inputs[{i}]")
                         for i, s in enumerate(require(obj, "inputs", list))),
            outputs=OutputSpec.from_json(require(obj, "outputs", dict)),
            reference={col: Reference.from_json(r, f"reference.features.{col}") for col, r in features.items()},
            prediction_reference=Reference.from_json(require(ref, "prediction", dict, "reference"),
                                                      "reference.prediction"),
            golden=GoldenSamples.from_json(require(obj, "golden", dict)),
            lineage=Lineage.from_json(require(obj, "lineage", dict)),
            metrics={k: check_type(v, float, f"metrics.{k}") for k, v in metrics.items()},
            signature=None if sig is None else Signature.from_json(sig),
            calibration=parse_calibration(obj.get("calibration")),
        )


def parse_manifest(payload: bytes | str) -> ReleaseManifest:
    """Parse and validate a manifest from untrusted bytes (does not verify the signature)."""
    return ReleaseManifest.from_json(parse_json(payload))

"""Export: scikit-learn pipeline → ONNX (skl2onnx), checked, parity-gated, with everything the manifest needs.

Steps: one typed ONNX input per column ([N, 1] float32 or string, with a safe name) → convert (no ZipMap, so
classifiers output a plain probability matrix) → ``onnx.checker`` → run the holdout through onnxruntime and
compare with scikit-learn (ParityError when outside the tolerance) → golden samples (holdout rows the device
must reproduce before it activates the model) → reference bins (reference.py) → calibration table of the
holdout (calibration.py: what lets the control plane estimate performance without labels) → ``build_manifest``.
"""

import re
import unicodedata
import warnings
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd

from edge_agent.protocol import (
    MAX_MESSAGE_BYTES,
    ArtifactInfo,
    Calibration,
    GoldenSamples,
    InputSpec,
    Lineage,
    NumericBins,
    OutputSpec,
    ProtocolError,
    Reference,
    ReleaseManifest,
    now_iso,
    sha256_hex,
)
from edge_agent.protocol.manifest import Task
from edgeops.config import ExportConfig
from edgeops.errors import ExportError, ParityError, one_line
from edgeops.train.calibration import class_indices, error_calibration, score_calibration
from edgeops.train.reference import categorical_reference, numeric_reference, prediction_reference
from edgeops.train.training import TrainedModel

MAX_INPUT_NAME = 48
MIN_GOLDEN_TOLERANCE = 1e-5
GOLDEN_MARGIN = 10.0
MANIFEST_SIGNATURE_ROOM = 256
"""Bytes the signature adds to the manifest (algorithm, key id, base64 of 64 bytes, JSON punctuation)."""


@dataclass(frozen=True)
class ParityReport:
    """ONNX vs scikit-learn on the holdout. ``max_abs_diff`` is over probabilities (classifiers) or predicted
    values (regressors); ``tolerance`` is the absolute bound it was held to."""

    rows: int
    max_abs_diff: float
    label_agreement: float | None
    tolerance: float
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "max_abs_diff": self.max_abs_diff, "label_agreement": self.label_agreement,
                "tolerance": self.tolerance, "passed": self.passed}


@dataclass(frozen=True)
class ExportResult:
    onnx_bytes: bytes
    opset: int
    inputs: tuple[InputSpec, ...]
    outputs: OutputSpec
    parity: ParityReport
    golden: GoldenSamples
    reference: dict[str, Reference]
    prediction_reference: Reference
    calibration: Calibration | None = None


def safe_input_names(columns: list[str]) -> dict[str, str]:
    """Map arbitrary column text to distinct ONNX input names made of [A-Za-z0-9_], starting with a letter.

    Accents are folded by Unicode decomposition (``café`` → ``cafe``), other characters become ``_``;
    collisions (also case-only ones) get ``_2``, ``_3``; every name starts with ``in_`` so it never meets an
    output name (``label``, ``probabilities``, ``variable``)."""
    names: dict[str, str] = {}
    used: set[str] = set()
    for col in columns:
        ascii_text = unicodedata.normalize("NFKD", col).encode("ascii", "ignore").decode("ascii")
        base = "in_" + (re.sub(r"[^A-Za-z0-9_]+", "_", ascii_text).strip("_") or "col")[:MAX_INPUT_NAME]
        name, n = base, 1
        while name.lower() in used:
            n += 1
            name = f"{base}_{n}"
        used.add(name.lower())
        names[col] = name
    return names


def input_specs(trained: TrainedModel) -> tuple[InputSpec, ...]:
    """One InputSpec per feature column, in the pipeline's column order (position i is ONNX input i)."""
    names = safe_input_names(trained.feature_columns)
    encoder = _encoder(trained)
    vocab: dict[str, tuple[str, ...]] = {}
    if encoder is not None:
        text_cols = [c for c in trained.feature_columns if trained.kinds[c] == "categorical"]
        for col, cats in zip(text_cols, encoder.categories_, strict=True):
            vocab[col] = tuple(str(c) for c in cats if c != trained.missing_token)
    specs = []
    for col in trained.feature_columns:
        if trained.kinds[col] == "numeric":
            values = trained.X_train[col].to_numpy(dtype="float64")
            finite = values[np.isfinite(values)]
            specs.append(InputSpec(column=col, name=names[col], dtype="float32",
                                   minimum=float(finite.min()) if finite.size else None,
                                   maximum=float(finite.max()) if finite.size else None))
        else:
            specs.append(InputSpec(column=col, name=names[col], dtype="string", categories=vocab.get(col, ()),
                                   missing_token=trained.missing_token))
    return tuple(specs)


def convert(trained: TrainedModel, inputs: tuple[InputSpec, ...], target_opset: int | None) -> onnx.ModelProto:
    """skl2onnx conversion + onnx.checker; converter failures become a one-line ExportError."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    initial_types = [(s.name, FloatTensorType([None, 1]) if s.dtype == "float32" else StringTensorType([None, 1]))
                     for s in inputs]
    estimator = trained.pipeline.steps[-1][1]
    options = {id(estimator): {"zipmap": False}} if trained.task != "regression" else None
    try:
        with warnings.catch_warnings():
            # protobuf 6 warns, and protobuf 7 fails, on the bool-in-ints attribute skl2onnx writes for
            # HistGradientBoosting; pyproject pins protobuf<7 and tests/unit/test_export.py guards the pin.
            warnings.filterwarnings("ignore", message="Field onnx.AttributeProto.ints", category=DeprecationWarning)
            # A fixed graph name (skl2onnx's default is a random uuid) keeps releases byte-reproducible.
            model: onnx.ModelProto = convert_sklearn(trained.pipeline, initial_types=initial_types, options=options,
                                                     target_opset=target_opset,
                                                     name=f"edgeops_{type(estimator).__name__}")
    except Exception as exc:  # skl2onnx raises anything (RuntimeError, protobuf errors, KeyError, ...)
        raise ExportError(f"skl2onnx cannot convert {trained.estimator or type(estimator).__name__}: "
                          f"{type(exc).__name__}: {one_line(exc, 200)}") from exc
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the converted ONNX model is invalid: {one_line(exc, 200)}") from exc
    return model


def onnx_feeds(inputs: tuple[InputSpec, ...], X: pd.DataFrame) -> dict[str, np.ndarray]:
    """Model-input frame (TrainedModel.prepare) → onnxruntime feeds: one [N, 1] array per input."""
    feeds = {}
    for spec in inputs:
        col = X[spec.column]
        if spec.dtype == "float32":
            feeds[spec.name] = col.to_numpy(dtype="float32").reshape(-1, 1)
        else:
            feeds[spec.name] = np.asarray(col.astype(str).to_numpy(), dtype=object).reshape(-1, 1)
    return feeds


def run_onnx(onnx_bytes: bytes, inputs: tuple[InputSpec, ...], X: pd.DataFrame) -> list[np.ndarray]:
    """Run the ONNX model on a model-input frame with onnxruntime (CPU); outputs in graph order."""
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    outputs: list[np.ndarray] = session.run(None, onnx_feeds(inputs, X))
    return outputs


def check_parity(trained: TrainedModel, onnx_bytes: bytes, inputs: tuple[InputSpec, ...],
                 cfg: ExportConfig) -> tuple[ParityReport, np.ndarray]:
    """Compare ONNX with scikit-learn on the holdout; returns the report and a per-row "agrees" mask.

    Classifiers: max |Δ| of probabilities ≤ ``parity_tolerance`` and label agreement ≥ ``min_label_agreement``
    (a different label on a tie between the two most likely classes counts as agreement, see ``_ties``).
    Regressors: max |Δ| of predictions ≤ ``parity_tolerance × max(1, range of the training target)``: the
    float32 model rounds relative to the values' size, so a fixed absolute bound would fail large targets."""
    X = trained.X_test
    out = run_onnx(onnx_bytes, inputs, X)
    if trained.task == "regression":
        expected = np.asarray(trained.pipeline.predict(X), dtype="float64")
        got = _column(out[0], len(X), "value")
        y = trained.y_train.to_numpy(dtype="float64")
        tolerance = cfg.parity_tolerance * max(1.0, float(y.max() - y.min()))
        diff = np.abs(expected - got.astype("float64"))
        agreement = None
        row_ok = diff <= tolerance
    else:
        expected_p = trained.pipeline.predict_proba(X)
        if len(out) < 2:
            raise ExportError("the ONNX classifier has no probability output")
        got_p = np.asarray(out[1], dtype="float64").reshape(len(X), -1)
        if got_p.shape != expected_p.shape:
            raise ExportError(f"ONNX probabilities have shape {got_p.shape}, scikit-learn {expected_p.shape}")
        diff = np.abs(expected_p - got_p).max(axis=1)
        tolerance = cfg.parity_tolerance
        got_labels = _column(out[0], len(X), "label")
        labels_ok = np.array([_same_label(a, b) for a, b in zip(trained.pipeline.predict(X), got_labels,
                                                                  strict=True)], dtype=bool)
        ties = _ties(expected_p, tolerance)
        agreement = float((labels_ok | ties).mean()) if len(labels_ok) else 1.0
        row_ok = labels_ok & ~ties & (diff <= tolerance)
    max_diff = float(diff.max()) if diff.size else 0.0
    passed = max_diff <= tolerance and (agreement is None or agreement >= cfg.min_label_agreement)
    report = ParityReport(rows=len(X), max_abs_diff=max_diff, label_agreement=agreement, tolerance=tolerance,
                          passed=passed)
    return report, row_ok


def golden_samples(trained: TrainedModel, row_ok: np.ndarray, parity: ParityReport, rows: int) -> GoldenSamples:
    """The first ``rows`` holdout rows on which ONNX agreed, with scikit-learn's outputs.

    The tolerance is what parity proved with a margin (observed max |Δ| × 10, at least 1e-5), so a device
    whose onnxruntime differs slightly still passes while a wrong model does not."""
    X = trained.X_test[row_ok].head(rows)
    inputs: dict[str, list[float | str | None]] = {}
    for col in trained.feature_columns:
        if trained.kinds[col] == "numeric":
            inputs[col] = [None if np.isnan(v) else float(v) for v in X[col].to_numpy(dtype="float64")]
        else:
            inputs[col] = [None if v == trained.missing_token else str(v) for v in X[col]]
    tolerance = max(parity.max_abs_diff * GOLDEN_MARGIN, MIN_GOLDEN_TOLERANCE)
    if trained.task == "regression":
        values = [float(v) for v in trained.pipeline.predict(X)]
        return GoldenSamples(inputs=inputs, tolerance=tolerance, values=values)
    labels = [_plain(v) for v in trained.pipeline.predict(X)]
    probabilities = [[float(p) for p in row] for row in trained.pipeline.predict_proba(X)]
    return GoldenSamples(inputs=inputs, tolerance=tolerance, labels=labels, probabilities=probabilities)


def feature_references(trained: TrainedModel, bins: int) -> dict[str, Reference]:
    """Training distribution of every feature on quantile bins (numeric) or its categories (text)."""
    refs = {}
    for col in trained.feature_columns:
        if trained.kinds[col] == "numeric":
            refs[col] = numeric_reference(trained.X_train[col].to_numpy(dtype="float64"), bins)
        else:
            refs[col] = categorical_reference(trained.X_train[col], trained.missing_token)
    return refs


def export_model(trained: TrainedModel, cfg: ExportConfig) -> ExportResult:
    """Convert, check, gate on parity (ParityError), and collect golden samples and reference bins."""
    inputs = input_specs(trained)
    model = convert(trained, inputs, cfg.target_opset)
    onnx_bytes = model.SerializeToString()
    parity, row_ok = check_parity(trained, onnx_bytes, inputs, cfg)
    if not parity.passed:
        agree = "" if parity.label_agreement is None else f", label agreement {parity.label_agreement:.4f}"
        raise ParityError(f"ONNX and scikit-learn disagree on the holdout: max |Δ| {parity.max_abs_diff:.3g} "
                          f"(tolerance {parity.tolerance:.3g}){agree}", parity)
    outputs = _output_spec(model, trained)
    preds = trained.pipeline.predict(trained.X_train)
    predicted = prediction_reference(preds, trained.task, trained.classes, cfg.numeric_bins)
    return ExportResult(onnx_bytes=onnx_bytes, opset=model_opset(model), inputs=inputs, outputs=outputs,
                        parity=parity, golden=golden_samples(trained, row_ok, parity, cfg.golden_rows),
                        reference=feature_references(trained, cfg.numeric_bins), prediction_reference=predicted,
                        calibration=holdout_calibration(trained, onnx_bytes, inputs, predicted))


def holdout_calibration(trained: TrainedModel, onnx_bytes: bytes, inputs: tuple[InputSpec, ...],
                        predicted: Reference) -> Calibration | None:
    """The calibration table of the ONNX model's outputs on the holdout (calibration.py); None when the holdout
    is empty or the classifier has too many classes to count scores."""
    if len(trained.X_test) == 0:
        return None
    out = run_onnx(onnx_bytes, inputs, trained.X_test)
    if trained.task == "regression":
        if not isinstance(predicted.bins, NumericBins):
            return None
        values = _column(out[0], len(trained.X_test), "value").astype("float64")
        return error_calibration(values, trained.y_test.to_numpy(dtype="float64"), predicted.bins)
    probabilities = np.asarray(out[1], dtype="float64").reshape(len(trained.X_test), -1)
    return score_calibration(probabilities, class_indices(trained.y_test.tolist(), trained.classes or []))


def build_manifest(name: str, version: int, export: ExportResult, lineage: Lineage, metrics: dict[str, float],
                   chunk_size: int, created: str | None = None) -> ReleaseManifest:
    """The unsigned release manifest: artifact hashes (whole and per chunk), inputs, outputs, bins, golden.

    A manifest over the protocol's message limit (1 MiB) would be refused by every device, so that is an
    ExportError here, naming what made it big (usually a text column with thousands of categories)."""
    data = export.onnx_bytes
    chunks = tuple(sha256_hex(data[i:i + chunk_size]) for i in range(0, len(data), chunk_size))
    try:
        artifact = ArtifactInfo(sha256=sha256_hex(data), size=len(data), opset=export.opset,
                                chunk_size=chunk_size, chunk_sha256=chunks)
        manifest = ReleaseManifest(name=name, version=version, created=created or now_iso(), artifact=artifact,
                                   inputs=export.inputs, outputs=export.outputs, reference=export.reference,
                                   prediction_reference=export.prediction_reference, golden=export.golden,
                                   lineage=lineage, metrics={k: float(v) for k, v in metrics.items()},
                                   calibration=export.calibration)
        size = len(manifest.to_bytes()) + MANIFEST_SIGNATURE_ROOM
    except ProtocolError as exc:
        raise ExportError(f"cannot build the release manifest: {exc}") from exc
    if size > MAX_MESSAGE_BYTES:
        widest = max(export.inputs, key=lambda spec: len(spec.categories or ()))
        raise ExportError(f"the manifest would be {size} bytes, over the {MAX_MESSAGE_BYTES} a device accepts; "
                          f"the widest input is {widest.column!r} with {len(widest.categories or ())} categories "
                          "(bucket or drop high-cardinality text columns, or lower export.golden_rows)")
    return manifest


def model_opset(model: onnx.ModelProto) -> int:
    """The default-domain (ai.onnx) opset the model imports."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise ExportError("the ONNX model imports no ai.onnx opset")


def _output_spec(model: onnx.ModelProto, trained: TrainedModel) -> OutputSpec:
    names = [o.name for o in model.graph.output]
    if trained.task == "regression":
        return OutputSpec(task="regression", value=names[0])
    # OutputSpec checks the task against TASKS itself; training keeps it as a plain str.
    return OutputSpec(task=cast(Task, trained.task), label=names[0], probabilities=names[1],
                      classes=tuple(trained.classes or ()))


def _encoder(trained: TrainedModel) -> Any:
    transformer = trained.pipeline.named_steps["preprocess"]
    return transformer.named_transformers_.get("categorical")


def _ties(expected: np.ndarray, tolerance: float) -> np.ndarray:
    """Rows whose two most likely classes are within ``tolerance`` of each other (a random forest voting
    50/50, say): there the label is a coin toss of float rounding, so a different label is no disagreement,
    and such rows are not used as golden samples."""
    if expected.shape[1] < 2:
        return np.zeros(len(expected), dtype=bool)
    top2 = np.sort(expected, axis=1)[:, -2:]
    ties: np.ndarray = (top2[:, 1] - top2[:, 0]) <= 2 * tolerance
    return ties


def _column(values: Any, rows: int, what: str) -> np.ndarray:
    """An ONNX output as one value per row (converters differ: [N], [N, 1])."""
    arr = np.asarray(values)
    if arr.size != rows:
        raise ExportError(f"the ONNX {what} output has {arr.size} values for {rows} rows (shape {arr.shape})")
    return arr.reshape(-1)


def _same_label(a: Any, b: Any) -> bool:
    a, b = _plain(a), _plain(b)
    if isinstance(b, bytes):
        b = b.decode("utf-8")
    return a == b or str(a) == str(b)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


__all__ = ["ExportResult", "ParityReport", "build_manifest", "check_parity", "convert", "export_model",
           "feature_references", "golden_samples", "holdout_calibration", "input_specs", "model_opset", "onnx_feeds",
           "run_onnx", "safe_input_names"]

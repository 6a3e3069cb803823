"""A small but complete release manifest built from protocol types only, for tests that need no real model."""

from edge_agent.protocol import (
    ArtifactInfo,
    CategoricalBins,
    Counts,
    GoldenSamples,
    InputSpec,
    Lineage,
    NumericBins,
    OutputSpec,
    Reference,
    ReleaseManifest,
    sha256_hex,
)

FAKE_ONNX = b"onnx" * 30


def fake_manifest(name: str = "churn", version: int = 1, onnx: bytes = FAKE_ONNX, chunk_size: int | None = None,
                  **changes: object) -> ReleaseManifest:
    """Unsigned manifest for ``onnx`` (any bytes): two inputs with odd column names, bins and golden rows.

    ``changes`` replace whole fields (``metrics=...``, ``golden=...``) to build inconsistent variants.
    """
    size = chunk_size or len(onnx)
    chunks = tuple(sha256_hex(onnx[i:i + size]) for i in range(0, len(onnx), size))
    fields: dict[str, object] = {
        "name": name, "version": version, "created": "2026-11-27T12:00:00Z",
        "artifact": ArtifactInfo(sha256=sha256_hex(onnx), size=len(onnx), opset=17, chunk_size=size,
                                 chunk_sha256=chunks),
        "inputs": (InputSpec(column="monthly charges", name="monthly_charges", dtype="float32"),
                   InputSpec(column="plan/type", name="plan_type", dtype="string", categories=("a", "b"))),
        "outputs": OutputSpec(task="binary", label="label", probabilities="probabilities", classes=(0, 1)),
        "reference": {
            "monthly charges": Reference(NumericBins((0.0, 1.5, 3.0)), Counts((4, 6), missing=1)),
            "plan/type": Reference(CategoricalBins(("a", "b")), Counts((7, 3))),
        },
        "prediction_reference": Reference(CategoricalBins(("0", "1")), Counts((8, 2))),
        "golden": GoldenSamples(inputs={"monthly charges": [1.0, None], "plan/type": ["a", None]},
                                tolerance=1e-4, labels=[0, 1], probabilities=[[0.9, 0.1], [0.2, 0.8]]),
        "lineage": Lineage(data_sha256="d" * 64, config_sha256="c" * 64, code_revision=None, parent_version=None),
        "metrics": {"accuracy": 0.9},
    }
    fields.update(changes)
    return ReleaseManifest(**fields)  # type: ignore[arg-type]

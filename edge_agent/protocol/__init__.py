"""The wire protocol: topics, messages, manifest and canonical JSON. Standard library only.

Both the control plane (``edgeops``) and the agent import this package; it is the single source of truth for
the contract described in docs/protocol.md.

The names are loaded on first use (PEP 562): a command that reads a manifest needs manifest.py and not the
message classes, and every module here costs import time that a CLI run pays before it answers.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the same names, for type checkers and readers
    from .bins import MISSING, OVERFLOW, UNDERFLOW, UNSEEN, categorical_bin, numeric_bin
    from .broker import BrokerAddress
    from .canonical import MAX_MESSAGE_BYTES, canonical_json, key_id, parse_json, sha256_hex
    from .errors import ProtocolError
    from .feedback import FeedbackCredit, PredictionRef, parse_prediction_id, prediction_id_head
    from .histogram import Bins, CategoricalBins, CountAccumulator, Counts, NumericBins, Reference
    from .manifest import (
        DTYPES,
        TASKS,
        ArtifactInfo,
        GoldenSamples,
        InputSpec,
        Lineage,
        OutputSpec,
        ReleaseManifest,
        parse_manifest,
    )
    from .messages import (
        EVENT_KINDS,
        LIFECYCLE_STATES,
        TRANSIENT_STATES,
        AgentEvent,
        Desired,
        Reported,
        Status,
        iso_ms,
        now_iso,
        parse_instant,
    )
    from .names import check_labels, check_name, check_version, parse_label, parse_version
    from .performance import (
        MAX_SCORED_CLASSES,
        SCORE_BINS,
        Calibration,
        ErrorCalibration,
        ScoreCalibration,
        ScoreCells,
        ScoreCounts,
        score_bin,
    )
    from .schema import CURRENT as SCHEMA_VERSIONS
    from .schema import check_schema
    from .signature import SIGNATURE_ALGORITHM, Signature
    from .steps import StepReports
    from .topics import DEFAULT_PREFIX, Topics
    from .window import TelemetryWindow

_MODULES: dict[str, tuple[str, ...]] = {  # module → the names it exports here (schema's CURRENT as SCHEMA_VERSIONS)
    "bins": ("MISSING", "OVERFLOW", "UNDERFLOW", "UNSEEN", "categorical_bin", "numeric_bin"),
    "broker": ("BrokerAddress",),
    "canonical": ("MAX_MESSAGE_BYTES", "canonical_json", "key_id", "parse_json", "sha256_hex"),
    "errors": ("ProtocolError",),
    "feedback": ("FeedbackCredit", "PredictionRef", "parse_prediction_id", "prediction_id_head"),
    "histogram": ("Bins", "CategoricalBins", "CountAccumulator", "Counts", "NumericBins", "Reference"),
    "manifest": ("DTYPES", "TASKS", "ArtifactInfo", "GoldenSamples", "InputSpec", "Lineage", "OutputSpec",
                 "ReleaseManifest", "parse_manifest"),
    "messages": ("EVENT_KINDS", "LIFECYCLE_STATES", "TRANSIENT_STATES", "AgentEvent", "Desired", "Reported", "Status",
                 "iso_ms", "now_iso", "parse_instant"),
    "names": ("check_labels", "check_name", "check_version", "parse_label", "parse_version"),
    "performance": ("MAX_SCORED_CLASSES", "SCORE_BINS", "Calibration", "ErrorCalibration", "ScoreCalibration",
                    "ScoreCells", "ScoreCounts", "score_bin"),
    "schema": ("SCHEMA_VERSIONS", "check_schema"),
    "signature": ("SIGNATURE_ALGORITHM", "Signature"),
    "steps": ("StepReports",),
    "topics": ("DEFAULT_PREFIX", "Topics"),
    "window": ("TelemetryWindow",),
}
_MODULE_OF = {name: module for module, names in _MODULES.items() for name in names}
_RENAMED = {"SCHEMA_VERSIONS": "CURRENT"}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), _RENAMED.get(name, name))
    globals()[name] = value  # the next lookup is an ordinary one
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_MODULE_OF])


__all__ = [
    "DEFAULT_PREFIX", "DTYPES", "EVENT_KINDS", "LIFECYCLE_STATES", "MAX_MESSAGE_BYTES", "MAX_SCORED_CLASSES",
    "MISSING", "OVERFLOW", "SCHEMA_VERSIONS", "SCORE_BINS", "SIGNATURE_ALGORITHM", "TASKS", "TRANSIENT_STATES",
    "UNDERFLOW", "UNSEEN", "AgentEvent", "ArtifactInfo", "Bins", "BrokerAddress", "Calibration",
    "CategoricalBins", "CountAccumulator", "Counts", "Desired", "ErrorCalibration", "FeedbackCredit",
    "GoldenSamples", "InputSpec", "Lineage", "NumericBins", "OutputSpec", "PredictionRef", "ProtocolError",
    "Reference", "ReleaseManifest", "Reported", "ScoreCalibration", "ScoreCells", "ScoreCounts", "Signature",
    "Status", "StepReports", "TelemetryWindow", "Topics", "canonical_json", "categorical_bin", "check_labels",
    "check_name", "check_schema", "check_version", "iso_ms", "key_id", "now_iso", "numeric_bin",
    "parse_instant", "parse_json", "parse_label", "parse_manifest", "parse_prediction_id", "parse_version",
    "prediction_id_head", "score_bin", "sha256_hex",
]

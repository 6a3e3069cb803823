"""Score counts (telemetry 1.2) and calibration references (manifest 1.2): parsing, limits, the binning rule."""

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from releases import build_release, new_key

from edge_agent.protocol import (
    ErrorCalibration,
    ProtocolError,
    ScoreCounts,
    TelemetryWindow,
    parse_manifest,
    score_bin,
)
from edgeops.train.calibration import score_bin_indices

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "protocol"


@pytest.mark.parametrize(("p", "expected"), [
    (0.0, 0), (0.0499999, 0), (0.05, 1), (0.5, 10), (0.95, 19), (0.9999999, 19), (1.0, 19), (1.0000001, 19),
    (-1e-9, 0), (math.inf, 19), (-math.inf, 0), (math.nan, -1),
])
def test_the_score_bin_rule(p: float, expected: int) -> None:
    assert score_bin(p, 20) == expected


def test_the_vectorised_score_bins_follow_the_rule_value_by_value() -> None:
    rng = np.random.default_rng(3)
    edges = np.arange(21) / 20
    values = np.concatenate([rng.random(2000), edges, np.nextafter(edges, -1), np.nextafter(edges, 2),
                             rng.random(50).astype(np.float32).astype(np.float64), [np.nan, -0.0, 1.5, -2.0]])
    for bins in (1, 7, 20):
        assert score_bin_indices(values, bins).tolist() == [score_bin(float(v), bins) for v in values]


def window_json(**scores: Any) -> dict[str, Any]:
    window = TelemetryWindow(device="d", seq=1, model="m", version=1, start="s", end="e", count=3,
                             scores=ScoreCounts(((1, 2), (0, 0)), ((0, 0), (2, 1)), bins=2)).to_json()
    window["scores"].update(scores)
    return window


@pytest.mark.parametrize(("change", "field"), [
    ({"bins": 3}, "scores.predicted[0]"),
    ({"bins": 0}, "scores.bins"),
    ({"other": [[0, 0]]}, "scores.other"),
    ({"predicted": [[1, -2], [0, 0]]}, "scores.predicted[0]"),
    ({"predicted": [[1, 2.0], [0, 0]]}, "scores.predicted[0][1]"),
    ({"predicted": [[0, 1]] * 65, "other": [[0, 1]] * 65}, "scores.predicted"),
])
def test_bad_score_counts_are_refused_with_the_field_named(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ProtocolError) as err:
        TelemetryWindow.from_json(window_json(**change))
    assert err.value.field == field


def test_a_window_without_scores_has_no_scores_member() -> None:
    window = TelemetryWindow(device="d", seq=1, model="m", version=1, start="s", end="e", count=3)
    assert "scores" not in window.to_json()
    assert TelemetryWindow.parse(window.to_bytes()).scores is None


def test_old_windows_and_manifests_have_no_estimation_parts() -> None:
    assert TelemetryWindow.parse((FIXTURES / "telemetry-1.1.json").read_bytes()).scores is None
    assert parse_manifest((FIXTURES / "manifest-1.0.json").read_bytes()).calibration is None
    new = TelemetryWindow.parse((FIXTURES / "telemetry-1.2-scores.json").read_bytes())
    assert new.scores is not None and new.scores.rows == 40 and new.scores.classes == 2
    assert parse_manifest((FIXTURES / "manifest-1.2.json").read_bytes()).calibration is not None


def calibrated_manifest(task: str = "binary") -> dict[str, Any]:
    return json.loads(build_release("churn", 1, new_key(), task=task, calibrated=True).manifest.to_bytes())


@pytest.mark.parametrize(("edit", "field"), [
    (lambda c: c["predicted"]["hits"][0].__setitem__(19, 10**6), "calibration.predicted.hits[0]"),
    (lambda c: c["other"]["mean"][1].__setitem__(0, 1.5), "calibration.other.mean[1]"),
    (lambda c: c["other"]["rows"].pop(), "calibration.other.rows"),
    (lambda c: c.__setitem__("kind", "magic"), "calibration.kind"),
    (lambda c: [c[side][part].append(c[side][part][0]) for side in ("predicted", "other")
                for part in ("rows", "hits", "mean")], "calibration"),   # three classes for two
])
def test_bad_score_calibrations_are_refused_with_the_field_named(edit: Any, field: str) -> None:
    obj = calibrated_manifest()
    edit(obj["calibration"])
    with pytest.raises(ProtocolError) as err:
        parse_manifest(json.dumps(obj))
    assert err.value.field == field


def test_an_error_calibration_must_fit_the_prediction_bins() -> None:
    manifest = build_release("churn", 1, new_key(), task="regression", calibrated=True).manifest
    assert isinstance(manifest.calibration, ErrorCalibration)
    assert len(manifest.calibration.rows) == manifest.prediction_reference.bins.size + 2
    short = ErrorCalibration(rows=(1, 2, 3), mean=(0.1, 0.2, 0.3), sd=(0.0, 0.0, 0.0))
    with pytest.raises(ProtocolError, match="error calibration needs"):
        dataclasses.replace(manifest, calibration=short)
    obj = json.loads(manifest.to_bytes())
    obj["calibration"]["sd"][0] = -1.0
    with pytest.raises(ProtocolError, match="non-negative"):
        parse_manifest(json.dumps(obj))

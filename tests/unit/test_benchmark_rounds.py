"""benchmarks/rounds.py: the one loop behind every interleaved measure, and the row each measure prints."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from rounds import Ratio, in_turn, ratios, rotating_rounds

pytestmark = pytest.mark.unit


def test_each_side_goes_first_in_turn_and_runs_once_a_round() -> None:
    calls: list[str] = []
    seen: list[tuple[int, dict[str, int]]] = []
    out = rotating_rounds({"baseline": lambda: calls.append("baseline") or len(calls),
                           "ours": lambda: calls.append("ours") or len(calls)}, 4,
                          lambda r, got: seen.append((r, got)))
    assert calls == ["baseline", "ours", "ours", "baseline", "baseline", "ours", "ours", "baseline"]
    assert out == {"baseline": [1, 4, 5, 8], "ours": [2, 3, 6, 7]}
    assert seen[1] == (1, {"baseline": 4, "ours": 3})
    assert [in_turn(["a", "b", "c"], r)[0] for r in range(4)] == ["a", "b", "c", "a"]


def test_a_row_shows_the_cpu_ratio_beside_the_wall_ratio_and_the_load() -> None:
    row = Ratio("predict", [1.0, 1.4, 1.2], 1.3, cpu=[2.0, 2.5, 3.0], load=3.25)
    line = row.line()
    assert "1.20× [1.00–1.40]" in line and "CPU   2.50× [2.00–3.00]" in line and "load  3.2" in line
    assert row.ok and "ok" in line
    assert not Ratio("http", [0.8, 0.85], 0.9, higher_is_better=True).ok


def test_a_baseline_too_fast_to_measure_gives_a_large_ratio_not_an_error() -> None:
    assert ratios([2.0, 1.0], [1.0, 0.0]) == [2.0, pytest.approx(1e9)]

"""The fast validation of count vectors must give exactly the verdicts of the element-by-element rules.

Counts.from_json and fields.count_list accept the common case (plain non-negative ints) in a few C-level passes
and fall back to the checked path otherwise. These tests compare them with the original rules, written out
here, on arbitrary JSON-like input: same Counts, or the same exception with the same message (field path).
"""

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.protocol import Counts, NumericBins, ProtocolError
from edge_agent.protocol.fields import check_type, count_list, optional, require

pytestmark = pytest.mark.unit

EXTRA = ("underflow", "overflow", "unseen", "missing")


class Flag(int):
    """An int subclass: the rules accept it (isinstance), the fast path must defer to them."""


def reference_count_list(value: Any, field: str) -> list[int]:
    counts = [check_type(v, int, f"{field}[{i}]") for i, v in enumerate(check_type(value, list, field))]
    if any(c < 0 for c in counts):
        raise ProtocolError("counts must be non-negative", field=field)
    return counts


def reference_counts(obj: Any, path: str, bins: NumericBins | None = None) -> Counts:
    obj = check_type(obj, dict, path)
    counts = reference_count_list(require(obj, "counts", list, path), f"{path}.counts")
    if bins is not None and len(counts) != bins.size:
        raise ProtocolError(f"has {len(counts)} counts for {bins.size} bins", field=f"{path}.counts")
    extra = {k: optional(obj, k, int, path, 0) for k in EXTRA}
    if any(v < 0 for v in extra.values()):
        raise ProtocolError("counts must be non-negative", field=path)
    return Counts(counts=tuple(counts), **extra)


def outcome(fn: Any, *args: Any) -> tuple[str, Any]:
    try:
        result = fn(*args)
    except Exception as exc:   # compare any failure by type and message
        return type(exc).__name__, str(exc)
    return "ok", (type(result).__name__, result)


scalars = st.one_of(st.integers(-3, 10**20), st.booleans(), st.floats(allow_nan=False), st.none(), st.text(max_size=3),
                    st.integers(0, 5).map(Flag))
small_ints = st.integers(-2, 50)
elements = st.one_of(small_ints, small_ints, small_ints, scalars)
count_vectors = st.one_of(st.lists(small_ints, max_size=6), st.lists(small_ints, max_size=6),
                          st.lists(elements, max_size=6), scalars,
                          st.dictionaries(st.text(max_size=2), st.integers(), max_size=2))
counts_objects = st.one_of(*[
    st.fixed_dictionaries({"counts": count_vectors},
                          optional={k: st.one_of(small_ints, small_ints, scalars) for k in EXTRA})] * 4,
    st.dictionaries(st.sampled_from(["counts", *EXTRA, "other"]), count_vectors, max_size=4),
    scalars, st.lists(st.integers(0, 3), max_size=2))


@settings(max_examples=400, deadline=None)
@given(count_vectors)
def test_count_list_matches_the_element_by_element_rules(value: Any) -> None:
    assert outcome(count_list, value, "f.counts") == outcome(reference_count_list, value, "f.counts")


@settings(max_examples=600, deadline=None)
@given(counts_objects, st.sampled_from([None, 2, 3]))
def test_counts_from_json_matches_the_checked_rules(obj: Any, size: int | None) -> None:
    bins = None if size is None else NumericBins(tuple(float(e) for e in range(size - 1)))
    assert outcome(Counts.from_json, obj, "features.f0", bins) == outcome(reference_counts, obj, "features.f0", bins)


@pytest.mark.parametrize(("obj", "message"), [
    ({"counts": [1, True]}, "features.f0.counts[1]: must be an integer"),
    ({"counts": [1, -1]}, "features.f0.counts: counts must be non-negative"),
    ({"counts": [1, 2.0]}, "features.f0.counts[1]: must be an integer"),
    ({"counts": (1, 2)}, "features.f0.counts: must be an array"),
    ({"counts": [1], "missing": -1}, "features.f0: counts must be non-negative"),
    ({"counts": [1], "unseen": False}, "features.f0.unseen: must be an integer"),
    ([1], "features.f0: must be an object"),
])
def test_fast_path_still_rejects_what_the_rules_reject(obj: Any, message: str) -> None:
    with pytest.raises(ProtocolError) as err:
        Counts.from_json(obj, "features.f0")
    assert str(err.value) == message


def test_accepted_counts_do_not_alias_the_input() -> None:
    raw = [1, 2, 3]
    listed = count_list(raw, "c")
    raw.append(4)
    assert listed == [1, 2, 3]
    assert Counts.from_json({"counts": [4, 5], "missing": 1}, "p") == Counts((4, 5), missing=1)

"""Typed access to fields of untrusted JSON objects; every failure names the field's dotted path."""

import math
from typing import Any, TypeVar, cast

from .errors import ProtocolError

T = TypeVar("T")

_JUST_INT = {int}
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
               dict: "an object", list: "an array"}


def require(obj: dict[str, Any], key: str, kind: type[T], path: str = "") -> T:
    """Return ``obj[key]`` checked to be of ``kind`` (ints are accepted as floats; bools never as ints)."""
    field = f"{path}.{key}" if path else key
    if key not in obj:
        raise ProtocolError("is missing", field=field)
    return check_type(obj[key], kind, field)


def optional(obj: dict[str, Any], key: str, kind: type[T], path: str = "", default: Any = None) -> Any:
    """Like :func:`require`, but a missing key or JSON null gives ``default``."""
    if obj.get(key) is None:
        return default
    return require(obj, key, kind, path)


def check_type(value: Any, kind: type[T], field: str) -> T:
    if type(value) is kind and kind is not float:  # the common case, decided by one test (a bool is not an int)
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            value = float(value)
        except OverflowError:   # an integer beyond any float (JSON has no size limit): not a usable number
            raise ProtocolError(f"must be {_TYPE_NAMES[float]}", field=field) from None
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if kind is float and ok and not math.isfinite(value):
        ok = False
    if not ok:
        raise ProtocolError(f"must be {_TYPE_NAMES.get(kind, kind.__name__)}", field=field)
    return cast(T, value)  # an instance of ``kind``: checked above


def float_list(value: Any, field: str) -> list[float]:
    return [check_type(v, float, f"{field}[{i}]") for i, v in enumerate(check_type(value, list, field))]


def count_list(value: Any, field: str) -> list[int]:
    """Counts arrive by the thousand on the ingest's hot path, so the common case (a list of plain ints) is
    checked in one C-level pass; anything else takes the element-by-element path, which gives the same
    verdict and names the first offending element (the error path is only built on failure)."""
    if type(value) is list and (not value or {*map(type, value)} == _JUST_INT):
        if value and min(value) < 0:
            raise ProtocolError("counts must be non-negative", field=field)
        return value[:]
    counts = [check_type(v, int, f"{field}[{i}]") for i, v in enumerate(check_type(value, list, field))]
    if any(c < 0 for c in counts):
        raise ProtocolError("counts must be non-negative", field=field)
    return counts

"""Inference: check records against the manifest's inputs, feed onnxruntime, shape the answer.

Input rules (docs/agent.md repeats them for users):

* every input column must be present in a record; JSON null means *missing*;
* numeric columns take numbers (not strings, not booleans); missing → NaN, which the model's imputer
  handles, unless the column is not ``nullable`` (then NaN and null are refused); infinities and numbers
  beyond float32 range (an integer of 400 digits included) are refused;
* string columns take strings (not numbers); missing → the manifest's ``missing_token``; a string that is
  not valid Unicode (a lone surrogate such as JSON's ``"\\ud800"``) is refused: onnxruntime must encode it
  as UTF-8, and its failure would otherwise look like the model's;
* a category not seen in training is accepted: the exported one-hot encoder ignores unknown categories, and
  the telemetry window counts the value as *unseen* so drift shows up on the control plane;
* fields that are not inputs are ignored (applications send whole records; a typo in an input name still
  fails as a missing field).

The hot path precomputes the feed layout once per model and builds one small array per input per call.
"""

import itertools
import math
import operator
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnxruntime as ort

from .errors import InputError, ModelError
from .predictions import Prediction, PredictionBatch
from .protocol import ReleaseManifest

__all__ = ["FLOAT32_MAX", "ModelRunner", "Prediction", "PredictionBatch"]

FLOAT32_MAX = float(np.finfo(np.float32).max)


def _check_number(value: Any, field: str, nullable: bool) -> float:
    if value is None:
        if not nullable:
            raise InputError(field, "is null but the model does not accept missing values")
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        kind = "a string" if isinstance(value, str) else type(value).__name__
        raise InputError(field, f"expected a number, got {kind}")
    try:
        number = float(value)
    except OverflowError:  # an int beyond float64 (JSON has no limit on digits)
        raise InputError(field, "must be a finite number within float32 range") from None
    if math.isnan(number):
        if not nullable:
            raise InputError(field, "is NaN but the model does not accept missing values")
    elif not -FLOAT32_MAX <= number <= FLOAT32_MAX:
        raise InputError(field, "must be a finite number within float32 range")
    return number


_PLAIN_NUMBERS = frozenset({float, int})
_PLAIN_OR_NULL = frozenset({float, int, type(None)})
_DICT = frozenset({dict})


def _plain_numbers(values: list[Any]) -> np.ndarray | None:
    """float32 values when every one is a plain finite number within float32 range, else None."""
    if not set(map(type, values)) <= _PLAIN_NUMBERS:
        return None  # null, NaN as None, bool, text, a numpy scalar: the per-value path decides
    try:
        array = np.array(values, dtype=np.float64)
    except OverflowError:  # an int beyond float64
        return None
    if not (np.abs(array) <= FLOAT32_MAX).all():  # also False for NaN and infinities
        return None
    return array.astype(np.float32)


def _plain_strings(values: list[Any]) -> np.ndarray | None:
    """An object array when every value is ASCII text (no null, no surrogate possible), else None."""
    if set(map(type, values)) != {str} or not all(map(str.isascii, values)):
        return None
    return np.array(values, dtype=object)


def _check_string(value: Any, field: str, nullable: bool, missing_token: str) -> str:
    if value is None:
        if not nullable:
            raise InputError(field, "is null but the model does not accept missing values")
        return missing_token
    if not isinstance(value, str):
        kind = "a number" if isinstance(value, int | float) else type(value).__name__
        raise InputError(field, f"expected a string, got {kind}")
    if not value.isascii():  # O(1) in CPython: only non-ASCII text pays for the encode below
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InputError(field, f"is not valid Unicode (a lone surrogate at character {exc.start})") from None
    return value


class ModelRunner:
    """A loaded, ready model. Build it only from a manifest and bytes that verify.py accepted."""

    def __init__(self, manifest: ReleaseManifest, onnx_bytes: bytes, *, threads: int = 1) -> None:
        self.manifest = manifest
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # single rows are latency-bound: one thread avoids handoffs
        options.inter_op_num_threads = 1
        options.log_severity_level = 4  # failures surface as ModelError; no duplicate on stderr
        try:
            self.session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises several unrelated types for a bad model
            raise ModelError(f"onnxruntime cannot load the model: {_one_line(exc)}") from exc
        self._check_signature()
        # The public ``run`` re-validates input names and ownership and handles GPU fallbacks on every call
        # (~2 µs, as long as a whole small model); our feeds are built from the checked layout as plain numpy
        # arrays on the CPU provider, so single rows go straight to the C++ session when it is exposed.
        inner_run = getattr(getattr(self.session, "_sess", None), "run", None)
        self._session_run = inner_run if callable(inner_run) else self.session.run
        # (column, onnx name, is_numeric, nullable, missing token): computed once, walked per call.
        self._layout = tuple((s.column, s.name, s.dtype == "float32", s.nullable, s.missing_token)
                             for s in manifest.inputs)
        numeric = [s for s in manifest.inputs if s.dtype == "float32"]
        self._numeric = tuple((s.column, s.name) for s in numeric)  # (column, onnx name) in matrix order
        self._numeric_columns = tuple(s.column for s in numeric)
        self._numeric_getter = operator.itemgetter(*(s.column for s in numeric)) if numeric else None
        strict = [j for j, s in enumerate(numeric) if not s.nullable]
        self._strict = np.array(strict, dtype=np.intp) if strict else None  # matrix columns refusing NaN
        out = manifest.outputs
        self._regression = self.regression = out.task == "regression"
        self._outputs = [out.value] if self._regression else [out.label, out.probabilities]
        self._classes = tuple(out.classes or ())
        self._class_of = {_key(c): c for c in self._classes}
        self._class_set = frozenset(c for c in self._classes if not isinstance(c, bool))
        self._json_classes = tuple(str(c) for c in self._classes)
        self._ids = itertools.count(1)
        self._batches = itertools.count(1)
        self._local = threading.local()
        self._id_prefix = os.urandom(4).hex() + "-"

    def _check_signature(self) -> None:
        """The ONNX graph must take exactly the manifest's inputs ([N, 1] each) and give its outputs."""
        graph_inputs = {i.name: i for i in self.session.get_inputs()}
        wanted = {s.name: s.dtype for s in self.manifest.inputs}
        if set(graph_inputs) != set(wanted):
            raise ModelError(f"ONNX inputs {sorted(graph_inputs)} differ from the manifest's {sorted(wanted)}")
        for name, dtype in wanted.items():
            onnx_type = graph_inputs[name].type
            if onnx_type != ("tensor(float)" if dtype == "float32" else "tensor(string)"):
                raise ModelError(f"ONNX input {name!r} has type {onnx_type}, the manifest says {dtype}")
        out = self.manifest.outputs
        names = {o.name for o in self.session.get_outputs()}
        for needed in (out.value,) if out.task == "regression" else (out.label, out.probabilities):
            if needed not in names:
                raise ModelError(f"ONNX graph has no output {needed!r} named by the manifest")

    # feeds ----------------------------------------------------------------------------------------
    def _feeds(self, records: Sequence[Mapping[str, Any]], single: bool, columns: dict[str, Any] | None = None,
               matrix_out: list[Any] | None = None) -> dict[str, np.ndarray]:
        """One array per input. The numeric columns of plain values (numbers in float32 range, null or NaN where
        the column takes missing values) are checked and converted as one float64 matrix; a text column of ASCII
        strings in one numpy call; anything else takes the per-value path, which names the record and the
        problem. For telemetry, ``matrix_out`` receives that matrix with its columns' names (NaN for missing), and
        ``columns`` every other input column's values as given."""
        n = len(records)
        feeds: dict[str, np.ndarray] = {}
        matrix = self._numeric_matrix(records) if self._numeric else None
        if matrix is not None:
            narrow = matrix.T.astype(np.float32, order="C")  # one row per input: each feed is a contiguous [n, 1] view
            for j, (_, name) in enumerate(self._numeric):
                feeds[name] = narrow[j].reshape(n, 1)
            if matrix_out is not None:
                matrix_out.append((matrix, self._numeric_columns))
        for column, name, numeric, nullable, token in self._layout:
            if numeric and matrix is not None:
                continue
            try:
                values = [record[column] for record in records]
            except (KeyError, TypeError):
                values = None
            fast = None if values is None else _plain_numbers(values) if numeric else _plain_strings(values)
            feeds[name] = (self._checked_column(records, column, numeric, nullable, token, single)
                           if fast is None else fast).reshape(n, 1)
            if columns is not None:
                columns[column] = values if values is not None else [record[column] for record in records]
        return feeds

    def _numeric_matrix(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray | None:
        """The numeric columns as a float64 matrix (rows × columns, NaN for null) when every value is a plain
        number within float32 range, or null/NaN in a column that takes missing values; else None (the per-value
        path decides, and names the problem)."""
        k, getter = len(self._numeric), self._numeric_getter
        assert getter is not None  # only called when there are numeric columns
        try:
            rows = map(getter, records)
            flat = list(rows if k == 1 else itertools.chain.from_iterable(rows))
        except (KeyError, TypeError):
            return None
        if not set(map(type, flat)) <= _PLAIN_OR_NULL:
            return None  # bool, text, a numpy scalar ...
        try:
            matrix = np.array(flat, dtype=np.float64).reshape(len(records), k)  # None → NaN
        except (OverflowError, TypeError, ValueError):  # an int beyond float64
            return None
        magnitude = np.abs(matrix)
        if magnitude.max() <= FLOAT32_MAX:  # False when a value is NaN (missing): checked below
            return matrix
        if np.fmax.reduce(magnitude, axis=None) > FLOAT32_MAX:  # the largest but NaN (infinity too)
            return None
        if self._strict is not None and np.isnan(matrix[:, self._strict]).any():
            return None  # missing where the column refuses it
        return matrix

    def _checked_column(self, records: Sequence[Mapping[str, Any]], column: str, numeric: bool, nullable: bool,
                        token: str, single: bool) -> np.ndarray:
        values = []
        for i, record in enumerate(records):
            field = column if single else f"records[{i}].{column}"
            try:
                raw = record[column]
            except KeyError:
                raise InputError(field, "is missing") from None
            except TypeError:
                raise InputError("record" if single else f"records[{i}]", "must be an object") from None
            values.append(_check_number(raw, field, nullable) if numeric
                          else _check_string(raw, field, nullable, token))
        return np.array(values, dtype=np.float32 if numeric else object)

    def _run(self, feeds: dict[str, np.ndarray]) -> list[Any]:
        try:
            outputs: list[Any] = self._session_run(self._outputs, feeds, None)
        except Exception as exc:  # a runtime failure is the model's fault, not the caller's
            raise ModelError(f"model failed to run: {_one_line(exc)}") from exc
        return outputs

    # public API -----------------------------------------------------------------------------------
    def predict(self, record: Mapping[str, Any]) -> Prediction:
        """One row. The hot path: plain types are checked inline, one tiny array per input."""
        if type(record) is not dict and not isinstance(record, Mapping):
            raise InputError("record", "must be an object of column values")
        feeds = getattr(self._local, "feeds", None)
        if feeds is None:  # one set of [1, 1] input arrays per thread, refilled on every call
            feeds = self._local.feeds = {name: np.empty((1, 1), np.float32 if numeric else object)
                                         for _, name, numeric, _, _ in self._layout}
        for column, name, numeric, nullable, token in self._layout:
            try:
                raw = record[column]
            except KeyError:
                raise InputError(column, "is missing") from None
            kind = type(raw)
            if numeric:
                if kind is not float or not -FLOAT32_MAX <= raw <= FLOAT32_MAX:  # NaN fails the range test too
                    if nullable and (raw is None or (kind is float and raw != raw)):
                        raw = math.nan  # missing, where the column takes it: no call
                    else:
                        raw = _check_number(raw, column, nullable)  # the slow path names the problem
            elif kind is not str or not raw.isascii():
                raw = _check_string(raw, column, nullable, token)  # also the UTF-8 check of non-ASCII text
            feeds[name][0, 0] = raw
        try:
            outputs = self._session_run(self._outputs, feeds, None)
        except Exception as exc:
            raise ModelError(f"model failed to run: {_one_line(exc)}") from exc
        if self._regression:  # the id's text is made when read (predictions.py); the agent renames it first
            return Prediction(None, None, None, float(outputs[0].tolist()[0][0]), self._id_prefix, next(self._ids))
        label = outputs[0].tolist()[0]
        if label not in self._class_set:
            label = self._class_of.get(_key(label), label)
        scores = outputs[1].tolist()[0]
        return Prediction(None, label, dict(zip(self._classes, scores, strict=False)), None, self._id_prefix,
                          next(self._ids), scores)

    def predict_many(self, records: Sequence[Mapping[str, Any]]) -> PredictionBatch | list[Prediction]:
        # The HTTP API hands over parsed JSON: check at run time what the annotation promises.
        if isinstance(records, str | bytes) or not isinstance(records, Sequence):  # type: ignore[redundant-expr, unreachable]
            raise InputError("records", "must be a list of objects")
        if not records:
            return []
        if not set(map(type, records)) <= _DICT:
            for i, record in enumerate(records):
                if not isinstance(record, Mapping):
                    raise InputError(f"records[{i}]", "must be an object of column values")
        columns: dict[str, Any] = {}
        numeric: list[Any] = []
        batch = self._shape(self._run(self._feeds(records, False, columns, numeric)), len(records))
        batch.columns = columns
        batch.numeric = numeric[0] if numeric else None
        return batch

    def raw(self, records: Sequence[Mapping[str, Any]]) -> list[Any]:
        """Outputs as onnxruntime returns them (self-test compares these with the golden samples)."""
        return self._run(self._feeds(records, False))

    def _shape(self, outputs: list[Any], n: int) -> PredictionBatch:
        key = f"{self._id_prefix}x{next(self._batches):x}."  # "x" is no hex digit: never a single row's id
        if self._regression:
            values = np.asarray(outputs[0], dtype=np.float64).reshape(n, -1)[:, 0]
            return PredictionBatch(key, values.tolist(), None, (), (), values=values)
        labels = outputs[0].reshape(n).tolist()
        matrix = np.asarray(outputs[1]).reshape(n, -1)  # as onnxruntime gave it: Python floats only when read
        class_of = self._class_of
        label_of = {label: class_of.get(_key(label), label) for label in set(labels)}  # each distinct label once
        return PredictionBatch(key, [label_of[label] for label in labels], None, self._classes,
                               self._json_classes, matrix)


def _key(value: Any) -> str:
    """Compare ONNX labels (int64, str) with manifest classes (JSON scalars) by their text."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__

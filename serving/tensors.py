"""JSON request bodies <-> the tensors of a SavedModel signature, in TF Serving's REST formats.

Only plain JSON is ever read: numbers, strings and `{"b64": "..."}` for bytes. Nothing in a
request is evaluated or unpickled.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import math
from typing import Any, Callable, Optional

import numpy as np
import tensorflow as tf

from serving import example_check
from serving.model_call import ModelCall

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class RequestError(ValueError):
    """An error answered to the client, with its HTTP status: 4xx for the client's mistakes
    (the message names the field and what was expected), 5xx for the server's faults (a
    generic message; the detail goes to the server log only)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


# dtype of each input -> how a JSON value becomes one element of it.
def _to_string(name: str, value: Any) -> bytes:
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate; the JSON parser refuses them first
            raise RequestError(f"input '{name}': the string is not valid Unicode") from None
    if value is None:
        return b""  # missing value, as serving_raw documents
    if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(f"input '{name}': invalid base64 in {{\"b64\": ...}}") from None
    raise RequestError(
        f"input '{name}' expects a string or {{\"b64\": ...}}, got {_describe(value)}"
    )


def _to_float(name: str, value: Any) -> float:
    if type(value) is float:  # the common case first
        return value
    if value is None:
        return math.nan  # missing value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(f"input '{name}' expects a number, got {_describe(value)}")
    try:
        return float(value)
    except OverflowError:  # an integer past the double range
        raise RequestError(f"input '{name}': {_describe(value)} is too large") from None


def _to_int(name: str, value: Any) -> int:
    if type(value) is int and INT64_MIN <= value <= INT64_MAX:  # the common case first
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"input '{name}' expects an integer, got {_describe(value)}")
    if not INT64_MIN <= value <= INT64_MAX:
        raise RequestError(f"input '{name}': {_describe(value)} is out of the int64 range")
    return value


def _describe(value: Any) -> str:
    """A JSON value in a message, in JSON's words and bounded (never the repr of a deep or
    long value)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        text = str(value) if isinstance(value, float) or abs(value) < 10**30 else "a huge number"
        return f"number {text}"
    if isinstance(value, str):
        return f"string {json.dumps(value[:40])}{'...' if len(value) > 40 else ''}"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        keys = ", ".join(json.dumps(str(k)[:20]) for k in list(value)[:3])
        return f"an object with keys {keys}{', ...' if len(value) > 3 else ''}"
    return "an unsupported value"


def _converter(dtype: tf.DType) -> Callable[[str, Any], Any]:
    """How a JSON value becomes one element of an input of this dtype."""
    if dtype == tf.string:
        return _to_string
    if dtype.is_floating:
        return _to_float
    if dtype.is_integer:
        return _to_int

    def unsupported(name: str, value: Any):
        raise RequestError(f"input '{name}' has unsupported dtype {dtype.name}")

    return unsupported


class Signature:
    """One signature of a loaded model: its scalar-per-row inputs and its outputs."""

    method_name = "tensorflow/serving/predict"  # the SignatureDef's; model_store sets it

    def __init__(self, name: str, function):
        self.name = name
        self.function = function
        _, kwargs = function.structured_input_signature
        self.inputs: dict[str, tf.DType] = {}
        for key, spec in kwargs.items():
            if spec.shape.rank != 1:
                raise ValueError(
                    f"signature '{name}': input '{key}' has shape {spec.shape}; "
                    "the server handles one value per row ([None]) only"
                )
            self.inputs[key] = spec.dtype
        # One converter per input, chosen once: a request converts every value it sends.
        self._converters = {key: _converter(dtype) for key, dtype in self.inputs.items()}
        self._input_names = frozenset(self.inputs)
        self._call = ModelCall(name, function, self.inputs)  # serving/model_call.py
        self.outputs = sorted(function.structured_outputs)
        # String inputs the signature parses as tf.Examples, with the spec it parses them by:
        # checked per request before requests are merged (serving/batching.py).
        self.example_specs = example_check.signature_specs(
            function, [k for k, dtype in self.inputs.items() if dtype == tf.string]
        )

    def problem(self, columns: dict[str, list]) -> Optional[example_check.Problem]:
        """Why the model would fail on these rows, where that is known without calling it
        (a serialized tf.Example it cannot parse); None otherwise."""
        for key, spec in self.example_specs.items():
            for i, value in enumerate(columns.get(key, ())):
                problem = example_check.check(spec, value)
                if problem is not None:
                    return dataclasses.replace(
                        problem, message=f"input '{key}' row {i}: {problem.message}"
                    )
        return None

    def convert(self, key: str, value: Any):
        return self._converters[key](key, value)

    # ---- requests -> columns -----------------------------------------------------------
    def columns_from_instances(self, instances: Any) -> dict[str, list]:
        """Row format: a list of instances, each a {input: value} object (or, for a
        single-input signature, the bare value)."""
        if not isinstance(instances, list):
            raise RequestError(f"'instances' must be a list, got {_describe(instances)}")
        if not instances:
            raise RequestError("'instances' is empty: send at least one instance")
        columns: dict[str, list] = {key: [] for key in self.inputs}
        converters = self._converters
        single = next(iter(self.inputs)) if len(self.inputs) == 1 else None
        for i, instance in enumerate(instances):
            if single and not (isinstance(instance, dict) and single in instance):
                instance = {single: instance}
            if not isinstance(instance, dict):
                raise RequestError(
                    f"instance {i} must be an object of inputs "
                    f"({', '.join(self.inputs)}), got {_describe(instance)}"
                )
            if instance.keys() != self._input_names:
                self._check_keys(instance, f"instance {i}")
            for key, value in instance.items():
                if isinstance(value, list):
                    raise RequestError(
                        f"instance {i}: input '{key}' takes one value per instance, got a list"
                    )
                columns[key].append(converters[key](key, value))
        return columns

    def columns_from_inputs(self, inputs: Any) -> dict[str, list]:
        """Columnar format: {input: [values]} (or, for a single-input signature, [values])."""
        if isinstance(inputs, list) and len(self.inputs) == 1:
            inputs = {next(iter(self.inputs)): inputs}
        if not isinstance(inputs, dict):
            raise RequestError(
                f"'inputs' must be an object of inputs ({', '.join(self.inputs)})"
                f", got {_describe(inputs)}"
            )
        self._check_keys(inputs, "'inputs'")
        columns, rows = {}, None
        for key, values in inputs.items():
            if not isinstance(values, list):
                values = [values]
            if rows is not None and len(values) != rows:
                raise RequestError(
                    f"'inputs': input '{key}' has {len(values)} values, others have {rows}"
                )
            rows = len(values)
            columns[key] = [self.convert(key, v) for v in values]
        if not rows:
            raise RequestError("'inputs' is empty: send at least one value per input")
        return columns

    def _check_keys(self, given: dict, where: str) -> None:
        unknown = sorted(set(given) - set(self.inputs))
        missing = sorted(set(self.inputs) - set(given))
        if unknown:
            raise RequestError(
                f"{where}: unknown input(s) {', '.join(unknown)} for signature "
                f"'{self.name}' (expects {', '.join(self.inputs)})"
            )
        if missing:
            raise RequestError(
                f"{where}: missing input(s) {', '.join(missing)} for signature '{self.name}'"
            )

    # ---- model call --------------------------------------------------------------------
    def __call__(self, columns: dict[str, list]) -> dict[str, np.ndarray]:
        # Straight from the Python lists (bytes, floats, ints: convert() made them so): one
        # conversion per input, not a numpy array first and a tensor from it.
        return self._call(columns)


def rows(columns: dict[str, list]) -> int:
    return len(next(iter(columns.values())))


def to_json_value(array: np.ndarray) -> Any:
    """A numpy output as JSON: bytes as UTF-8 text (base64 if not text), numbers as numbers."""
    if array.dtype == object:

        def text(value):
            if isinstance(value, bytes):
                try:
                    return value.decode("utf-8")
                except UnicodeDecodeError:
                    return {"b64": base64.b64encode(value).decode("ascii")}
            return [text(v) for v in value]

        return [text(v) for v in array]
    return array.tolist()


def row_response(outputs: dict[str, np.ndarray]) -> list:
    """TF Serving's row format: one entry per row; the bare value if there is one output."""
    values = {key: to_json_value(array) for key, array in outputs.items()}
    if len(values) == 1:
        return next(iter(values.values()))
    n = len(next(iter(values.values())))
    return [{key: column[i] for key, column in values.items()} for i in range(n)]


def columnar_response(outputs: dict[str, np.ndarray]) -> Any:
    """TF Serving's columnar format: {output: values}, or the bare values if one output."""
    values = {key: to_json_value(array) for key, array in outputs.items()}
    return next(iter(values.values())) if len(values) == 1 else values

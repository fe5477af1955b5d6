"""REST :classify / :regress bodies -> serialized tf.Examples, as TF Serving's json_tensor.cc
reads them: {"signature_name"?, "context"?: {feature: value(s)}, "examples": [{...}, ...]}.

A feature's value is one JSON value or a list of them. Strings and {"b64": ...} are bytes,
numbers with a fraction or exponent floats, other numbers int64, true/false int64 1/0; null,
nested lists and other objects are refused, and one feature's values must share one kind.
The messages are TF Serving's (without its echo of the whole JSON value).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Optional

import tensorflow as tf

from serving.tensors import RequestError

CONTEXT_KEY = "context"
EXAMPLES_KEY = "examples"
RESULTS_KEY = "results"  # the response's key, for both methods

_INT64_MIN, _INT64_MAX, _UINT64_MAX = -(2**63), 2**63 - 1, 2**64 - 1
_KIND_NAMES = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}


def examples_from_body(body: dict, method: str) -> tuple[Optional[bytes], list[bytes]]:
    """(the serialized context or None, the serialized examples) of a request body."""
    context = None
    if CONTEXT_KEY in body:
        context = _example(body[CONTEXT_KEY]).SerializeToString()
    if EXAMPLES_KEY not in body:
        # TF Serving says "classify" for :regress too (one parser for both).
        raise RequestError(
            f"When method is classify, key '{EXAMPLES_KEY}' is expected and was not found"
            f" (:{method})"
        )
    examples = body[EXAMPLES_KEY]
    if not isinstance(examples, list):
        raise RequestError(f"Expecting '{EXAMPLES_KEY}' value to be an list/array")
    if not examples:
        raise RequestError(f"'{EXAMPLES_KEY}' value is an empty array")
    return context, [_example(value).SerializeToString() for value in examples]


def _json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def _example(value: Any) -> tf.train.Example:
    if not isinstance(value, dict):
        raise RequestError(f"Example must be JSON object but got JSON {_json_type(value)}")
    example = tf.train.Example()
    for name, content in value.items():
        feature = tf.train.Feature()
        for element in content if isinstance(content, list) else [content]:
            _add(feature, name, element)
        example.features.feature[name].CopyFrom(feature)
    return example


def _add(feature: tf.train.Feature, name: str, value: Any) -> None:
    if isinstance(value, bool):
        _kind(feature, name, "int64_list").value.append(int(value))
    elif isinstance(value, str):
        try:
            data = value.encode("utf-8")
        except UnicodeEncodeError:
            raise RequestError(f"Feature: {name} has a string that is not valid UTF-8") from None
        _kind(feature, name, "bytes_list").value.append(data)
    elif isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        _kind(feature, name, "bytes_list").value.append(_b64(value["b64"]))
    elif isinstance(value, int) and _INT64_MIN <= value <= _UINT64_MAX:
        if value > _INT64_MAX:
            raise RequestError(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
        _kind(feature, name, "int64_list").value.append(value)
    elif isinstance(value, (int, float)):  # beyond 64 bits JSON parsers read a double too
        try:
            number = float(value)
        except OverflowError:
            raise RequestError(f"Feature: {name} has a number too big for a double") from None
        _kind(feature, name, "float_list").value.append(number)
    else:
        raise RequestError(
            f"Feature: {name} has element with unexpected JSON type: {_json_type(value)}"
        )


def _kind(feature: tf.train.Feature, name: str, kind: str):
    current = feature.WhichOneof("kind")
    if current not in (None, kind):
        raise RequestError(
            f"Unexpected element type in feature: {name} expecting type: {_KIND_NAMES[current]}"
        )
    return getattr(feature, kind)


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError("Unable to base64 decode") from None

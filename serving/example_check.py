"""Serialized tf.Examples checked against the feature spec a signature parses them with, in
Python, without calling the model: so that one request's bad examples are rejected on their
own instead of failing every request merged into the same model call (serving/batching.py).

The spec is read from the signature's graph (its ParseExample ops and their constant keys,
types, shapes and defaults), so it is whatever the model parses, with no column named here.
The checks are the ones TensorFlow's ParseExample fails a batch for: bytes that are not a
tf.Example, a feature holding another value type than the spec's, a fixed-length feature with
the wrong number of values or missing without a default.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Optional

from google.protobuf.message import DecodeError
from tensorflow.core.example import example_pb2
from tensorflow.core.framework import types_pb2
from tensorflow.python.framework import tensor_util

log = logging.getLogger(__name__)

_KINDS = {
    types_pb2.DT_FLOAT: "float_list",
    types_pb2.DT_INT64: "int64_list",
    types_pb2.DT_STRING: "bytes_list",
}
_TYPE_NAMES = {"float_list": "float", "int64_list": "int64", "bytes_list": "bytes"}


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    kind: str  # the tf.train.Feature oneof: float_list, int64_list or bytes_list
    size: Optional[int] = None  # values a fixed-length feature holds; None: any number
    required: bool = False  # fixed-length without a default


ExampleSpec = dict[bytes, FeatureSpec]


def signature_specs(function: Any, string_inputs: list[str]) -> dict[str, ExampleSpec]:
    """{signature input: spec} for the string inputs a signature parses as tf.Examples.
    Empty when none is found or the graph reads in an unexpected way: then nothing is checked
    ahead (the batcher's fallback still isolates a failing request)."""
    try:
        library = function.graph.as_graph_def().library
    except Exception:  # noqa: BLE001 (a signature without a readable graph: no checks)
        return {}
    found: dict[str, list[ExampleSpec]] = {}
    for function_def in library.function:
        nodes = {node.name: node for node in function_def.node_def}
        for node in function_def.node_def:
            if node.op not in ("ParseExampleV2", "ParseExample"):
                continue
            try:
                spec = _node_spec(node, nodes)
            except (KeyError, ValueError, IndexError, TypeError):
                log.debug("unreadable %s in %s", node.op, function_def.signature.name)
                continue
            source = _node_name(node.input[0])
            found.setdefault(source, []).append(spec)
    specs = {name: _merge(found[name]) for name in string_inputs if name in found}
    if not specs and len(string_inputs) == 1 and found:
        # One string input, parsed under another name inside the graph.
        candidates = [s for group in found.values() for s in group]
        if all(s == candidates[0] for s in candidates):
            specs = {string_inputs[0]: candidates[0]}
    return {name: spec for name, spec in specs.items() if spec}


def _node_name(ref: str) -> str:
    return ref.lstrip("^").split(":")[0]


def _const(ref: str, nodes: dict) -> Any:
    node = nodes[_node_name(ref)]
    for _ in range(4):  # through a few Identity ops
        if node.op == "Const":
            return tensor_util.MakeNdarray(node.attr["value"].tensor)
        if node.op != "Identity":
            break
        node = nodes[_node_name(node.input[0])]
    raise ValueError(f"not a constant: {ref}")


def _keys(ref: str, nodes: dict) -> list[bytes]:
    return [bytes(k) for k in _const(ref, nodes).reshape(-1).tolist()]


def _node_spec(node: Any, nodes: dict) -> ExampleSpec:
    inputs = [i for i in node.input if not i.startswith("^")]
    attr = node.attr
    dense_types = list(attr["Tdense"].list.type)
    shapes = list(attr["dense_shapes"].list.shape)
    if node.op == "ParseExampleV2":
        sparse_keys = _keys(inputs[2], nodes)
        dense_keys = _keys(inputs[3], nodes)
        ragged_keys = _keys(inputs[4], nodes)
        defaults = inputs[5 : 5 + len(dense_types)]
        sparse_types = list(attr["sparse_types"].list.type)
        ragged_types = list(attr["ragged_value_types"].list.type)
    else:  # ParseExample: one key tensor per feature
        n_sparse = attr["Nsparse"].i
        sparse_keys = [_keys(ref, nodes)[0] for ref in inputs[2 : 2 + n_sparse]]
        dense_refs = inputs[2 + n_sparse : 2 + n_sparse + len(dense_types)]
        dense_keys = [_keys(ref, nodes)[0] for ref in dense_refs]
        defaults = inputs[2 + n_sparse + len(dense_types) :]
        sparse_types = list(attr["sparse_types"].list.type)
        ragged_keys, ragged_types = [], []
    spec: ExampleSpec = {}
    for key, dtype in [*zip(sparse_keys, sparse_types), *zip(ragged_keys, ragged_types)]:
        spec[key] = FeatureSpec(_KINDS[dtype])
    for key, dtype, shape, default in zip(dense_keys, dense_types, shapes, defaults):
        dims = [d.size for d in shape.dim]
        if shape.unknown_rank or any(d < 0 for d in dims):
            spec[key] = FeatureSpec(_KINDS[dtype])  # a sequence of any length
            continue
        size = 1
        for d in dims:
            size *= d
        spec[key] = FeatureSpec(_KINDS[dtype], size, _const(default, nodes).size == 0)
    return spec


def _merge(specs: list[ExampleSpec]) -> ExampleSpec:
    """The features of every ParseExample reading the same input; a feature two of them read
    differently is left unchecked."""
    merged: ExampleSpec = {}
    conflicting = set()
    for spec in specs:
        for key, feature in spec.items():
            if merged.setdefault(key, feature) != feature:
                conflicting.add(key)
    return {k: v for k, v in merged.items() if k not in conflicting}


@dataclasses.dataclass(frozen=True)
class Problem:
    message: str
    # ParseExample fails on it for sure. Bytes protobuf cannot parse are not certain:
    # TensorFlow's own parser skips what it does not read (a key that is not UTF-8...).
    certain: bool = True


def check(spec: ExampleSpec, serialized: bytes) -> Optional[Problem]:
    """Why ParseExample would fail on this serialized tf.Example, or None."""
    example = example_pb2.Example()
    try:
        example.ParseFromString(serialized)
    except (DecodeError, RuntimeWarning, ValueError):
        return Problem("is not a serialized tf.Example", certain=False)
    problem = _problem(spec, example)
    return None if problem is None else Problem(problem)


def _problem(spec: ExampleSpec, example: Any) -> Optional[str]:
    features = example.features.feature
    for key, expected in spec.items():
        name = key.decode("utf-8", "replace")
        if name not in features:
            if expected.required:
                return (
                    f"feature '{name}' ({_TYPE_NAMES[expected.kind]}) is required but "
                    "could not be found"
                )
            continue
        feature = features[name]
        kind = feature.WhichOneof("kind")
        if kind is None:  # an empty feature: no values
            if expected.size:
                return f"feature '{name}': no values, expected {expected.size}"
            continue
        if kind != expected.kind:
            return (
                f"feature '{name}': data types don't match, expected {_TYPE_NAMES[expected.kind]}"
                f" values, got {_TYPE_NAMES[kind]}"
            )
        if expected.size is not None:
            count = len(getattr(feature, kind).value)
            if count != expected.size:
                return (
                    f"feature '{name}': {count} {_TYPE_NAMES[kind]} value(s), "
                    f"expected {expected.size}"
                )
    return None

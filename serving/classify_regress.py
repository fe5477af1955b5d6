"""TF Serving's Classify and Regress on serialized tf.Examples, shared by REST and gRPC.

A signature answers :classify only if TF Serving would accept it (classifier.cc): one input
`inputs` (fed a DT_STRING vector of serialized tf.Examples), one or two outputs among
`classes` (DT_STRING [batch, K]) and `scores` (DT_FLOAT [batch, K]); :regress (regressor.cc):
one input `inputs`, one output `outputs` (DT_FLOAT [batch] or [batch, 1]). TF Serving checks
these by default and, with --enable_signature_method_name_check, the method name instead:
here both are checked, so nothing answers here that either TF Serving setup would reject. The
errors are RequestError(400) with TF Serving's wording (its InvalidArgument).

The callers turn their request into serialized tf.Examples first: REST's {"examples",
"context"} (serving/example_json.py), gRPC's ExampleList / ExampleListWithContext
(with_context below does TF Serving's context merge).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2

from pipeline.names import (
    CLASSIFY_CLASSES_OUTPUT,
    CLASSIFY_METHOD_NAME,
    CLASSIFY_REGRESS_INPUT,
    CLASSIFY_SCORES_OUTPUT,
    REGRESS_METHOD_NAME,
    REGRESS_OUTPUT,
)
from serving.tensors import RequestError

if TYPE_CHECKING:  # the batcher imports the model store: no import cycle at run time
    from serving.batching import Batcher
    from serving.model_store import LoadedVersion
    from serving.tensors import Signature


def with_context(context: Optional[bytes], examples: Sequence[bytes]) -> list[bytes]:
    """ExampleListWithContext as TF Serving feeds it (util.cc): each example's bytes after the
    context's, which protobuf parses as one Example whose own features override the context's."""
    if not context:
        return list(examples)
    return [context + example for example in examples]


def _signature(model: LoadedVersion, name: str) -> Signature:
    if name not in model.signatures:
        raise RequestError(f"No signature was found with the name: {name}")
    return model.signatures[name]


def _describe(signature: Signature) -> str:
    """A short SignatureDef for messages (TF Serving prints its DebugString)."""
    inputs = ", ".join(f"{k}: {tf.as_dtype(v).name}" for k, v in signature.inputs.items())
    return (
        f"{{inputs: [{inputs}], outputs: [{', '.join(signature.outputs)}], "
        f'method_name: "{_method_name(signature)}"}}'
    )


def _method_name(signature: Signature) -> str:
    return signature.method_name


def _check_input(signature: Signature, kind: str) -> None:
    if len(signature.inputs) != 1:
        raise RequestError("Expected one input Tensor.")
    if CLASSIFY_REGRESS_INPUT not in signature.inputs:
        raise RequestError(f"No {kind} inputs found in SignatureDef: {_describe(signature)}")
    dtype = signature.inputs[CLASSIFY_REGRESS_INPUT]
    if dtype != tf.string:  # TF Serving's session.Run fails feeding it the string tensor
        raise RequestError(f"Expects arg[0] to be {tf.as_dtype(dtype).name} but string is provided")


def _check_method(signature: Signature, kind: str, method_name: str) -> None:
    if _method_name(signature) != method_name:
        raise RequestError(
            f"Expected {kind} signature method_name to be {method_name}. "
            f"Was: {_method_name(signature)}"
        )


def check_classification(signature: Signature) -> None:
    """PreProcessClassification (default) and the method-name check (the server flag)."""
    _check_input(signature, "classification")
    if len(signature.outputs) not in (1, 2):
        raise RequestError(f"Expected one or two output Tensors, found {len(signature.outputs)}")
    if not {CLASSIFY_CLASSES_OUTPUT, CLASSIFY_SCORES_OUTPUT} & set(signature.outputs):
        raise RequestError(
            "Expected classification signature outputs to contain at least one of "
            f'"{CLASSIFY_CLASSES_OUTPUT}" or "{CLASSIFY_SCORES_OUTPUT}". '
            f"Signature was: {_describe(signature)}"
        )
    _check_method(signature, "classification", CLASSIFY_METHOD_NAME)


def check_regression(signature: Signature) -> None:
    """PreProcessRegression (default) and the method-name check (the server flag)."""
    _check_input(signature, "regression")
    if len(signature.outputs) != 1:
        raise RequestError("Expected one output Tensor.")
    if REGRESS_OUTPUT not in signature.outputs:
        raise RequestError(f"No regression outputs found in SignatureDef: {_describe(signature)}")
    _check_method(signature, "regression", REGRESS_METHOD_NAME)


def _dtype_name(array: np.ndarray) -> str:
    if array.dtype == object or array.dtype.kind in "SU":
        return "DT_STRING"
    return types_pb2.DataType.Name(tf.as_dtype(array.dtype).as_datatype_enum)


def _shape(array: np.ndarray) -> str:
    return "[" + ",".join(str(d) for d in array.shape) + "]"


def _check_matrix(array: np.ndarray, name: str, dtype: str, n: int) -> None:
    if array.ndim != 2:
        raise RequestError(
            f"Expected Tensor shape: [batch_size num_classes] but got {_shape(array)}"
        )
    if _dtype_name(array) != dtype:
        raise RequestError(f"Expected {name} Tensor of {dtype}. Got: {_dtype_name(array)}")
    if array.shape[0] != n:
        raise RequestError(f"Expected {name} output batch size of {n}. Got: {array.shape[0]}")


async def _run(
    model: LoadedVersion, signature: Signature, examples: list[bytes], batcher: Batcher
) -> dict[str, np.ndarray]:
    if not examples:
        raise RequestError("Input is empty.")
    return await batcher.predict(model, signature, {CLASSIFY_REGRESS_INPUT: list(examples)})


async def classify(
    model: LoadedVersion, signature_name: str, examples: list[bytes], batcher: Batcher
) -> tuple[np.ndarray, np.ndarray]:
    """(classes, scores), each [n, K]: classes as bytes (b"" where the signature has no
    `classes`), scores float32 (0 where it has no `scores`), as TF Serving's
    ClassificationResult leaves an unset label or score."""
    signature = _signature(model, signature_name)
    check_classification(signature)
    n = len(examples)
    outputs = await _run(model, signature, examples, batcher)
    classes = outputs.get(CLASSIFY_CLASSES_OUTPUT)
    scores = outputs.get(CLASSIFY_SCORES_OUTPUT)
    if classes is not None:
        classes = np.asarray(classes)
        _check_matrix(classes, "classes", "DT_STRING", n)
    if scores is not None:
        scores = np.asarray(scores)
        _check_matrix(scores, "scores", "DT_FLOAT", n)
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise RequestError(
            "Tensors class and score should match in dim_size(1). Got "
            f"{classes.shape[1]} vs. {scores.shape[1]}"
        )
    if classes is None:
        classes = np.full(scores.shape, b"", dtype=object)
    if scores is None:
        scores = np.zeros(classes.shape, dtype=np.float32)
    return classes, scores


async def regress(
    model: LoadedVersion, signature_name: str, examples: list[bytes], batcher: Batcher
) -> np.ndarray:
    """The regression values, [n] float32."""
    signature = _signature(model, signature_name)
    check_regression(signature)
    n = len(examples)
    outputs = await _run(model, signature, examples, batcher)
    values = np.asarray(outputs[REGRESS_OUTPUT])
    if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
        raise RequestError(
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] "
            f"but got {_shape(values)}"
        )
    if values.shape[0] != n:
        raise RequestError(
            f"Input batch size did not match output batch size: {n} vs. {values.shape[0]}"
        )
    if _dtype_name(values) != "DT_FLOAT":
        raise RequestError(f"Expected output Tensor of DT_FLOAT.  Got: {_dtype_name(values)}")
    return values.reshape(n)

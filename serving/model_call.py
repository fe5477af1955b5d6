"""How the server calls a signature of a loaded SavedModel on the request path.

The public call, `function(**tensors)`, binds the keyword arguments against the function's
type and checks every tensor against its spec, each time: for a one-row call of 15 inputs that
Python cost more than the model's own work (measured in one process, calls alternating:
1.41 ms the public call, 0.77 ms the flat call below). The server builds its tensors itself,
of the signature's dtypes and rank [n], so nothing is left for those checks to catch: it calls
the function's flat form instead, the inputs in the function's order and then its captured
resources, which is where the public call ends up. The tensors are built as tf.constant builds
them in the end, an EagerTensor straight from each Python list, without the checks on the way
(15 inputs: 0.13 instead of 0.19 ms).

The call runs on TensorFlow's single-threaded executor where that executor takes the graph
(not with v1 control flow): the graph's ops run one after another in one thread instead of
each being scheduled on the inter-op pool (server p50 at c=1: 1.41 -> 1.19 ms; kernels still
use the intra-op pool, and batches of 8 to 2,048 rows were no slower).

All this rests on TensorFlow internals (ConcreteFunction._arg_keywords and
_inference_function, EagerTensor; as in TF 2.16). Where they are missing the public call is
used; and until one call has answered the same both ways (the warm-up row at load, normally),
every call is made the public way (tf.constant, keyword call) and then checked against the
flat one, so a SavedModel for which the shortcut does not hold is served the public way
(logged), never answered differently.
"""

from __future__ import annotations

import logging
from typing import Callable, Optional

import numpy as np
import tensorflow as tf
from tensorflow.python.eager import context
from tensorflow.python.framework.ops import EagerTensor

log = logging.getLogger(__name__)

Outputs = dict[str, np.ndarray]
SINGLE_THREADED = "SINGLE_THREADED_EXECUTOR"


def flat_order(function) -> Optional[list[str]]:
    """The input names in the order of the function's flat arguments, or None where this
    TensorFlow keeps them elsewhere."""
    keywords = getattr(function, "_arg_keywords", None)
    if not keywords or getattr(function, "_inference_function", None) is None:
        return None
    return [str(k) for k in keywords]


class ModelCall:
    """Calls one signature with columns (a list of values per input, of the input's dtype)
    and returns its outputs as numpy."""

    def __init__(self, name: str, function, inputs: dict[str, tf.DType]):
        self.name = name
        self.function = function
        self.inputs = inputs
        self.order = flat_order(function)
        self._dtype_enums = {key: dtype.as_datatype_enum for key, dtype in inputs.items()}
        # None: not yet checked against the public call; then True (the flat call, on
        # `executor`) or False (the public call).
        self.flat_verified: Optional[bool] = None if self.order else False
        self.executor: Optional[str] = None

    def __call__(self, columns: dict[str, list]) -> Outputs:
        if self.flat_verified:
            return self._flat(columns, self.executor)
        outputs = self._public(columns)  # raises for a bad input: nothing checked then
        if self.flat_verified is None:
            self._verify(columns, outputs)
        return outputs

    def _public(self, columns: dict[str, list]) -> Outputs:
        inputs = self.inputs
        tensors = {key: tf.constant(values, inputs[key]) for key, values in columns.items()}
        return _numpy(self.function(**tensors))

    def _flat(self, columns: dict[str, list], executor: Optional[str]) -> Outputs:
        function, enums = self.function, self._dtype_enums
        # What tf.constant(values, dtype) ends in, without its checks (~2 us a tensor):
        # each tensor straight from the Python list.
        device = context.context().device_name
        args = [EagerTensor(columns[key], device, enums[key]) for key in self.order]
        with tf.experimental.function_executor_type(executor):
            return _numpy(
                function._inference_function.call_preflattened(args + function.captured_inputs)
            )

    def _verify(self, columns: dict[str, list], expected: Outputs) -> None:
        """Takes the flat call if it answers as the public call did: on the single-threaded
        executor, else on the default one (the single-threaded executor refuses graphs with
        v1 control flow, which e.g. tf.debugging asserts lower to)."""
        problems = []
        for executor in (SINGLE_THREADED, None):
            try:
                problem = _difference(expected, self._flat(columns, executor))
            except Exception as error:  # noqa: BLE001 (any failure means: not this way)
                problem = f"{type(error).__name__}: {str(error)[:300]}"
            if problem is None:
                self.flat_verified, self.executor = True, executor
                return
            problems.append(f"{executor or 'default executor'}: {problem}")
        self.flat_verified = False
        log.warning(
            "signature '%s': called the public way (TensorFlow's keyword binding), the flat "
            "call did not answer the same: %s",
            self.name,
            "; ".join(problems),
        )


def _numpy(outputs: dict) -> Outputs:
    return {key: value.numpy() for key, value in outputs.items()}


def _difference(expected: Outputs, got: Outputs) -> Optional[str]:
    """Why two calls' outputs differ, or None if they are the same."""
    if set(expected) != set(got):
        return f"outputs {sorted(got)} instead of {sorted(expected)}"
    for key, value in expected.items():
        other = got[key]
        same: Callable[[np.ndarray, np.ndarray], bool] = (
            (lambda a, b: np.allclose(a, b, equal_nan=True))
            if value.dtype.kind in "fc"
            else np.array_equal
        )
        if value.shape != other.shape or value.dtype != other.dtype or not same(value, other):
            return f"output '{key}' differs"
    return None

"""How the server calls a signature of a loaded SavedModel on the request path.

The public call, `function(**tensors)`, binds the keyword arguments against the function's
type and checks every tensor against its spec, each time: for a one-row call of 15 inputs that
Python cost more than the model's own work (measured in one process, calls alternating:
1.41 ms the public call, 0.77 ms the flat call below). The server builds its tensors itself,
of the signature's dtypes and rank [n], so nothing is left for those checks to catch: it calls
the function's flat form instead, the inputs in the function's order and then its captured
resources, which is where the public call ends up. It runs that call on TensorFlow's
single-threaded executor where that executor runs the graph (not with v1 control flow): the
ops run on the calling thread instead of being handed to the inter-op pool, whose threads
sleep between requests and must be woken (server p50 at c=1: 1.41 -> 1.19 ms; its kernels
still use the intra-op pool, and batches of 8 to 2,048 rows were no slower).

Both rest on TensorFlow internals (ConcreteFunction._arg_keywords and _inference_function, as
in TF 2.16). Where they are missing the public call is used; and until one call has answered
the same through both paths (the warm-up row at load, normally), every call is made the public
way and then checked against the flat one, so a SavedModel for which the shortcut does not
hold is served the public way (logged), never answered differently.
"""

from __future__ import annotations

import logging
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

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
    """Calls one signature with tensors (by input name) and returns its outputs as numpy."""

    def __init__(self, name: str, function):
        self.name = name
        self.function = function
        self.order = flat_order(function)
        # None: not yet checked against the public call; then True (the flat call, on
        # `executor`) or False (the public call).
        self.flat_verified: Optional[bool] = None if self.order else False
        self.executor: Optional[str] = None

    def __call__(self, tensors: dict[str, tf.Tensor]) -> Outputs:
        if self.flat_verified:
            return self._flat(tensors, self.executor)
        outputs = self._public(tensors)  # raises for a bad input: nothing checked then
        if self.flat_verified is None:
            self._verify(tensors, outputs)
        return outputs

    def _public(self, tensors: dict[str, tf.Tensor]) -> Outputs:
        return _numpy(self.function(**tensors))

    def _flat(self, tensors: dict[str, tf.Tensor], executor: Optional[str]) -> Outputs:
        function = self.function
        args = [tensors[key] for key in self.order] + function.captured_inputs
        with tf.experimental.function_executor_type(executor):
            return _numpy(function._inference_function.call_preflattened(args))

    def _verify(self, tensors: dict[str, tf.Tensor], expected: Outputs) -> None:
        """Takes the flat call if it answers as the public call did: on the single-threaded
        executor, else on the default one (the single-threaded executor refuses graphs with
        v1 control flow, which e.g. tf.debugging asserts lower to)."""
        problems = []
        for executor in (SINGLE_THREADED, None):
            try:
                problem = _difference(expected, self._flat(tensors, executor))
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

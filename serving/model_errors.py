"""A model call's exception as the answer TF Serving would give: its HTTP status for the
TensorFlow error code (http_server.cc's ToHTTPStatusCode), a readable message for an input the
model rejects (400), and for the server's own faults a generic message, the detail going to
the server log only. No message carries a file path, a Python traceback or exception class.
"""

from __future__ import annotations

import logging
import re

import tensorflow as tf

from serving.tensors import RequestError

log = logging.getLogger("serving")

# TensorFlow error codes -> HTTP status, as TF Serving's REST server maps them.
_STATUS = {
    tf.errors.CANCELLED: 499,
    tf.errors.INVALID_ARGUMENT: 400,
    tf.errors.DEADLINE_EXCEEDED: 504,
    tf.errors.NOT_FOUND: 404,
    tf.errors.ALREADY_EXISTS: 409,
    tf.errors.PERMISSION_DENIED: 403,
    tf.errors.RESOURCE_EXHAUSTED: 429,
    tf.errors.FAILED_PRECONDITION: 400,
    tf.errors.ABORTED: 409,
    tf.errors.OUT_OF_RANGE: 400,
    tf.errors.UNIMPLEMENTED: 501,
    tf.errors.UNAVAILABLE: 503,
    tf.errors.UNAUTHENTICATED: 401,
}
# The codes that say the input was wrong: their message goes to the client.
_INPUT_CODES = {tf.errors.INVALID_ARGUMENT, tf.errors.FAILED_PRECONDITION, tf.errors.OUT_OF_RANGE}

SERVER_FAULT = "Internal error: the server could not answer this request (its log has the details)"

_NODE = re.compile(r"\s*\[\[\{\{node [^}]*\}\}\]\]")
_OP = re.compile(r"\s*\[Op:[^\]]*\]")
_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[\\/][\w.@+~-]+){2,}[\\/]?")


def readable(message: str) -> str:
    """A TensorFlow error message without what only its authors need: the "Graph execution
    error" header, the Python stack of where the op was defined (file paths), the node and op
    names; paths left in it are blanked."""
    kept, in_stack = [], False
    for line in message.splitlines():
        stripped = line.strip()
        if stripped.startswith("Graph execution error"):
            continue
        if stripped.startswith("Detected at node") or stripped.startswith("Detected unsupported"):
            in_stack = True
            continue
        if in_stack:
            if stripped == "<stack traces unavailable>":
                in_stack = False
                continue
            if not stripped or stripped.startswith("File ") or line.startswith((" ", "\t")):
                continue
            in_stack = False
        if stripped.startswith('File "'):
            continue
        stripped = _OP.sub("", _NODE.sub("", stripped)).strip()
        if stripped:
            kept.append(stripped)
    text = " ".join(kept)
    return _PATH.sub("<path>", text)[:1000]


def request_error(error: BaseException, signature_name: str, explanation: str = "") -> RequestError:
    """The answer to a request whose model call (alone, or with only requests that succeed
    alone) raised `error`. `explanation` (example_check's) says better what is wrong."""
    if isinstance(error, RequestError):
        return error
    if isinstance(error, tf.errors.OpError):
        status = _STATUS.get(error.error_code, 500)
        if error.error_code in _INPUT_CODES:
            detail = explanation or readable(error.message) or "the input does not fit it"
            return RequestError(
                f"the model rejected the input of signature '{signature_name}': {detail}", 400
            )
    elif isinstance(error, UnicodeDecodeError) or explanation:
        # TensorFlow failing to decode its own message, which quoted the input's bytes.
        detail = explanation or "the input does not fit it"
        return RequestError(
            f"the model rejected the input of signature '{signature_name}': {detail}", 400
        )
    else:
        status = 500
    log.error(
        "signature %s failed (answered %s): %s",
        signature_name,
        status,
        error,
        exc_info=(type(error), error, error.__traceback__),
    )
    return RequestError(SERVER_FAULT, status)

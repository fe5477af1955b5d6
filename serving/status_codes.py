"""One vocabulary of outcomes for both protocols: the canonical status codes (the names TF
Serving's gRPC API answers with and its request_count metric counts by), and how the HTTP
statuses the REST side answers with map onto them (the reverse of TF Serving's own
canonical-code -> HTTP table, where a status has one natural code)."""

from __future__ import annotations

import grpc

_BY_HTTP = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    409: grpc.StatusCode.ABORTED,
    412: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    414: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def from_http(status: int) -> grpc.StatusCode:
    """The canonical code of an HTTP status (2xx OK, other 4xx INVALID_ARGUMENT, other 5xx
    INTERNAL)."""
    if 200 <= status < 300:
        return grpc.StatusCode.OK
    return _BY_HTTP.get(
        status, grpc.StatusCode.INVALID_ARGUMENT if status < 500 else grpc.StatusCode.INTERNAL
    )


def name(code: grpc.StatusCode) -> str:
    """`INVALID_ARGUMENT`, as TF Serving writes codes."""
    return code.name

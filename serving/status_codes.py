"""One vocabulary of outcomes for both protocols: the canonical status codes (the names TF
Serving's gRPC API answers with and its request_count metric counts by), how the HTTP statuses
the REST side answers with map onto them (the reverse of TF Serving's own canonical-code ->
HTTP table, where a status has one natural code), and that table (the request log's status)."""

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


# TF Serving's REST statuses for the canonical codes (http_server.cc's ToHTTPStatusCode).
_HTTP = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


def to_http(code: grpc.StatusCode) -> int:
    """The HTTP status TF Serving's REST API answers for a canonical code (others 500)."""
    return _HTTP.get(code, 500)


def name(code: grpc.StatusCode) -> str:
    """`INVALID_ARGUMENT`, as TF Serving writes codes."""
    return code.name

"""Safe exposure: who may call the server.

On a loopback host (127.0.0.1, ::1, localhost) only this machine can connect, so no token is
needed. Any other host (0.0.0.0 in a container, a LAN address) needs a bearer token
(PIPELINE_SERVING_AUTH_TOKEN or PIPELINE_SERVING_AUTH_TOKEN_FILE), or the explicit
PIPELINE_SERVING_ALLOW_INSECURE=1 for a server that sits behind something that authenticates;
otherwise the server refuses to start. With a token, REST requests need
`Authorization: Bearer <token>` (401 otherwise) and gRPC calls the same `authorization`
metadata (UNAUTHENTICATED otherwise); the health endpoint stays open for probes. TLS is left to
what sits in front (docs/serving.md).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from typing import Iterable, Optional

from aiohttp import web

from pipeline.settings_model import SettingsError
from serving.settings import ServingSettings

log = logging.getLogger("serving")

MIN_TOKEN_LENGTH = 16
TOKEN_HINT = "e.g. PIPELINE_SERVING_AUTH_TOKEN=$(openssl rand -hex 32)"


def is_loopback(host: str) -> bool:
    """Only this machine can reach `host` (an empty host means every interface)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # another name: it may resolve to anything


def token(settings: ServingSettings) -> Optional[str]:
    """The bearer token of the settings, or None; a bad one is a SettingsError naming the
    variable."""
    if settings.auth_token and settings.auth_token_file:
        raise SettingsError(
            "set one of PIPELINE_SERVING_AUTH_TOKEN and PIPELINE_SERVING_AUTH_TOKEN_FILE, not both"
        )
    if settings.auth_token_file:
        variable = "PIPELINE_SERVING_AUTH_TOKEN_FILE"
        try:
            with open(settings.auth_token_file, encoding="utf-8") as f:
                value = f.read().strip()
        except (OSError, UnicodeDecodeError) as error:
            raise SettingsError(
                f"{variable}: cannot read {settings.auth_token_file!r} ({type(error).__name__})"
            ) from None
    elif settings.auth_token:
        variable, value = "PIPELINE_SERVING_AUTH_TOKEN", settings.auth_token.strip()
    else:
        return None
    if len(value) < MIN_TOKEN_LENGTH or not all(33 <= ord(c) <= 126 for c in value):
        raise SettingsError(
            f"{variable}: the token must be at least {MIN_TOKEN_LENGTH} printable ASCII "
            f"characters without spaces ({TOKEN_HINT})"
        )
    return value


def check_exposure(settings: ServingSettings) -> Optional[str]:
    """The token to require (or None), after refusing a non-loopback host that has neither a
    token nor PIPELINE_SERVING_ALLOW_INSECURE=1; logs the choice."""
    required = token(settings)
    where = settings.host or "every interface"
    if required:
        log.info("listening on %s: every request needs the bearer token", where)
    elif is_loopback(settings.host):
        log.info("listening on loopback %s only: no token", where)
    elif settings.allow_insecure:
        log.warning(
            "listening on %s WITHOUT authentication (PIPELINE_SERVING_ALLOW_INSECURE=1): "
            "anyone who can reach it can call the model",
            where,
        )
    else:
        raise SettingsError(
            f"refusing to listen on {where} (PIPELINE_SERVING_HOST={settings.host!r}) "
            "without authentication: set a bearer token (PIPELINE_SERVING_AUTH_TOKEN or "
            "PIPELINE_SERVING_AUTH_TOKEN_FILE; "
            f"{TOKEN_HINT}), or PIPELINE_SERVING_ALLOW_INSECURE=1 if something in front "
            "authenticates, or a loopback host (127.0.0.1)"
        )
    return required


def authorized(header: Optional[str], required: str) -> bool:
    """`header` is `Bearer <required>` (compared in constant time)."""
    if not header:
        return False
    scheme, _, given = header.strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), required.encode()
    )


def rest_middleware(required: str, open_paths: Iterable[str]):
    """aiohttp middleware: 401 with TF Serving's {"error": ...} unless the request carries
    the token; `open_paths` (the health probe) need none."""
    open_paths = frozenset(open_paths)

    @web.middleware
    async def check(request: web.Request, handler):
        if request.path in open_paths or authorized(request.headers.get("Authorization"), required):
            return await handler(request)
        return web.json_response(
            {"error": "missing or wrong bearer token: send 'Authorization: Bearer <token>'"},
            status=401,
            headers={"WWW-Authenticate": "Bearer"},
        )

    return check

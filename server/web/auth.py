"""Authentication helpers for every room's HTTP handlers: the bearer token of a request, and
how an API token is stored (its digest, never the token itself)."""

from __future__ import annotations

import hashlib
import hmac
import json

from aiohttp import web

__all__ = ["bearer_token", "token_digest"]


def token_digest(token: str) -> str:
    """How a token is stored: its SHA-256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def bearer_token(request: web.Request, what: str = "token") -> str:
    """The ``Authorization: Bearer`` token of a request; 401 (with ``WWW-Authenticate``)
    naming what is expected when there is none."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise web.HTTPUnauthorized(
            text=json.dumps({"error": f"missing Authorization: Bearer <{what}>"}),
            content_type="application/json",
            headers={"WWW-Authenticate": 'Bearer realm="linli"'},
        )
    return token


def is_operator(request: web.Request, admin_token: str | None) -> bool:
    """Whether the request carries the operator's admin token (never raises)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if admin_token is None or scheme.lower() != "bearer" or not token:
        return False
    return hmac.compare_digest(token.encode(), admin_token.encode())

"""JSON errors and query parameters for the HTTP API: every error is ``{"error": "..."}``
with a status that says whose fault it is, and the message names what was wrong."""

from __future__ import annotations

import json

from aiohttp import web

__all__ = ["MAX_ID", "int_param", "json_error", "json_too_large", "path_id"]

#: The largest id a path may name: SQL integer keys are signed 64-bit.
MAX_ID = 2**63 - 1
_ASCII_DIGITS = frozenset("0123456789")


def _ascii_int(raw: str) -> int | None:
    """``raw`` as an integer if it is an optional ``-`` and 1..19 ASCII digits; else None.
    (``int()`` also takes other scripts' digits, ``_`` and spaces.)"""
    digits = raw[1:] if raw.startswith("-") else raw
    if not 0 < len(digits) <= 19 or not set(digits) <= _ASCII_DIGITS:
        return None
    return int(raw)


def json_too_large(limit: int, size: int) -> web.HTTPError:
    """413 for a body of ``size`` bytes over ``limit`` (its class takes the sizes too)."""
    return web.HTTPRequestEntityTooLarge(
        max_size=limit,
        actual_size=size,
        text=json.dumps({"error": f"body is {size} bytes, over the limit of {limit}"}),
        content_type="application/json",
    )


def json_error(cls: type[web.HTTPError], message: str) -> web.HTTPError:
    """An HTTP error of class ``cls`` (e.g. ``web.HTTPBadRequest``) with a JSON body."""
    return cls(
        text=json.dumps({"error": message}, ensure_ascii=False), content_type="application/json"
    )


def int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    """Query parameter ``name`` as an integer in ``lo..hi``; 400 naming it otherwise."""
    raw = request.query.get(name)
    if raw is None:
        return default
    value = _ascii_int(raw)
    if value is None:
        message = f"query parameter {name}={raw!r} is not an integer"
        raise json_error(web.HTTPBadRequest, message)
    if not lo <= value <= hi:
        message = f"query parameter {name}={value} is outside {lo}..{hi}"
        raise json_error(web.HTTPBadRequest, message)
    return value


def path_id(request: web.Request, what: str) -> int:
    """The path's ``{id}`` as a positive integer key; 404 naming ``what`` for anything else
    (other scripts' digits, signs, out of range): no such record can exist."""
    raw = request.match_info["id"]
    value = _ascii_int(raw)
    if value is None or not 1 <= value <= MAX_ID:
        raise json_error(web.HTTPNotFound, f"no {what} {raw!r}")
    return value

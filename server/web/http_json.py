"""JSON errors and query parameters for the HTTP API: every error is ``{"error": "..."}``
with a status that says whose fault it is, and the message names what was wrong."""

from __future__ import annotations

import json

from aiohttp import web

__all__ = ["int_param", "json_error"]


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
    try:
        value = int(raw)
    except ValueError:
        message = f"query parameter {name}={raw!r} is not an integer"
        raise json_error(web.HTTPBadRequest, message) from None
    if not lo <= value <= hi:
        message = f"query parameter {name}={value} is outside {lo}..{hi}"
        raise json_error(web.HTTPBadRequest, message)
    return value

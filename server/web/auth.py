"""Who is calling, and what they may see: the one token model of every ``/api/`` route.

Every request under ``/api/`` carries ``Authorization: Bearer <token>``: the operator's
``admin_token`` (setting), or an organisation's token (``linli tokens create ORG``), stored
as its SHA-256 with a label, an expiry and, once revoked, when and by whom. The
:func:`api_guard` middleware checks it before any handler runs:

- no token, an unknown, expired or revoked one: **401** naming which;
- a route only the operator may call (``@operator_only``: gateway management, ingest
  diagnostics) with an organisation's token: **403**, whatever the path names;
- over the caller's request rate: **429** with ``Retry-After``;
- a body announced larger than the app's ``client_max_size``: **413** before a byte is read.

Every ``/api/`` route declares its access with :func:`operator_only` or :func:`scoped`;
:func:`check_routes` refuses to start an app with an undeclared one. A scoped handler sees
only its caller's :class:`Scope` (DOMAIN.md, "Who answers for what"; docs/security.md):
another organisation's community or device is **404**, worded as for one that does not exist.
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Final, Literal, TypeVar
from zoneinfo import ZoneInfo

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from alerts.routing import CommunityFacts, ContractTerm, company_on
from server.store import models

__all__ = [
    "Caller",
    "RateLimiter",
    "Scope",
    "api_guard",
    "bearer_token",
    "caller_of",
    "check_routes",
    "is_operator",
    "operator_only",
    "recheck_token",
    "scope_for",
    "scoped",
    "token_digest",
    "token_id",
]

Access = Literal["operator", "scoped"]
_ACCESS_ATTR: Final = "linli_access"
_CALLER: Final = "linli.caller"
#: The public id of a token: this many hex digits of its digest.
TOKEN_ID_LEN: Final = 12


def token_digest(token: str) -> str:
    """How a token is stored: its SHA-256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_id(digest: str) -> str:
    """A token's public id (shown in lists and the audit log): the start of its digest."""
    return digest[:TOKEN_ID_LEN]


def _refuse(cls: type[web.HTTPError], message: str, **headers: str) -> web.HTTPError:
    return cls(
        text=json.dumps({"error": message}, ensure_ascii=False),
        content_type="application/json",
        headers=headers or None,
    )


def _unauthorized(message: str, error: str | None = None) -> web.HTTPError:
    challenge = 'Bearer realm="linli"' + (f', error="{error}"' if error else "")
    return _refuse(web.HTTPUnauthorized, message, **{"WWW-Authenticate": challenge})


def bearer_token(request: web.Request, what: str = "token") -> str:
    """The ``Authorization: Bearer`` token of a request; 401 (with ``WWW-Authenticate``)
    naming what is expected when there is none."""
    given = request.headers.getall("Authorization", [])
    if len(given) > 1:
        raise _refuse(web.HTTPBadRequest, "send one Authorization header, not several")
    scheme, _, token = (given[0] if given else "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized(f"missing Authorization: Bearer <{what}>")
    return token.strip()


def is_operator(request: web.Request, admin_token: str | None) -> bool:
    """Whether the request carries the operator's admin token (never raises)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if admin_token is None or scheme.lower() != "bearer" or not token:
        return False
    return hmac.compare_digest(token.strip().encode(), admin_token.encode())


# --- scope --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """What a caller may see: everything (the operator), whole communities, and single
    devices in other communities (a maintenance unit's elevators, a bureau's district's
    elevators or fire lanes)."""

    everything: bool = False
    communities: frozenset[str] = frozenset()
    devices: frozenset[tuple[str, str]] = frozenset()
    _partly: frozenset[str] = field(default=frozenset(), init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_partly", frozenset(c for c, _ in self.devices))

    def community(self, community: str) -> bool:
        """Whether the caller sees this community, wholly or some of its devices."""
        return self.everything or community in self.communities or community in self._partly

    def whole(self, community: str) -> bool:
        """Whether the caller sees all of this community (its gateways too)."""
        return self.everything or community in self.communities

    def device(self, community: str, device: str) -> bool:
        """Whether the caller sees this device."""
        return (
            self.everything or community in self.communities or (community, device) in self.devices
        )


EVERYTHING: Final = Scope(everything=True)

#: Organisations that see single devices of a kind in their district, not whole communities.
_DISTRICT_DEVICES: Final = {
    "market_supervision": ("elevator",),  # special equipment (DOMAIN.md)
    "fire_rescue": ("fire_lane", "fire_panel"),
    "law_enforcement": ("fire_lane",),
    "police": ("fire_lane",),
}


async def scope_for(session: AsyncSession, org: models.Organisation, day: dt.date) -> Scope:
    """What ``org`` sees on ``day`` (a company's contracts are those of that day)."""
    communities = (await session.scalars(select(models.Community))).all()
    kind = org.kind
    if kind == "property_company":
        contracts = (await session.scalars(select(models.Contract))).all()
        terms: dict[str, list[ContractTerm]] = collections.defaultdict(list)
        for k in contracts:
            terms[k.community_id].append(ContractTerm(k.company_id, k.start, k.end))
        mine = {
            c.id
            for c in communities
            if company_on(CommunityFacts(c.id, "", "", "", tuple(terms[c.id])), day) == org.id
        }
        return Scope(communities=frozenset(mine))
    if kind == "community_committee":
        return Scope(communities=frozenset(c.id for c in communities if c.committee_id == org.id))
    if kind == "street_office":
        return Scope(
            communities=frozenset(c.id for c in communities if c.street_office_id == org.id)
        )
    if kind == "housing_bureau":
        district = org.district
        return Scope(
            communities=frozenset(c.id for c in communities if district and c.district == district)
        )
    if kind == "neighbourhood_centre":
        shown = await session.scalars(
            select(models.CentreCommunity.community_id).where(
                models.CentreCommunity.centre_id == org.id
            )
        )
        return Scope(communities=frozenset(shown.all()))
    if kind == "maintenance_unit":
        maintained = await session.execute(
            select(models.Device.community_id, models.Device.id).where(
                models.Device.maintenance_unit_id == org.id
            )
        )
        return Scope(devices=frozenset((c, d) for c, d in maintained.all()))
    kinds = _DISTRICT_DEVICES.get(kind)
    if kinds and org.district:
        in_district = [c.id for c in communities if c.district == org.district]
        watched = await session.execute(
            select(models.Device.community_id, models.Device.id).where(
                models.Device.kind.in_(kinds), models.Device.community_id.in_(in_district)
            )
        )
        return Scope(devices=frozenset((c, d) for c, d in watched.all()))
    return Scope()


# --- callers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """Who is asking: the operator (``org`` None), or an organisation through one token."""

    org: str | None
    kind: str | None = None
    token: str | None = None  # the token's public id; None for the operator
    scope: Scope = EVERYTHING
    digest: str | None = None  # the token's SHA-256 (not secret); None for the operator

    @property
    def operator(self) -> bool:
        return self.org is None

    @property
    def actor(self) -> str:
        """How the audit log names the caller."""
        return "operator" if self.org is None else self.org


def caller_of(request: web.Request) -> Caller:
    """The caller :func:`api_guard` authenticated for this request."""
    caller = request.get(_CALLER)
    if caller is None:  # a route outside /api/ asked: a programming error
        raise RuntimeError(f"{request.path}: no authenticated caller (not under /api/?)")
    assert isinstance(caller, Caller)
    return caller


async def _caller_for(session: AsyncSession, row: models.ApiToken, tz: ZoneInfo) -> Caller:
    """The caller a stored token stands for; 401 naming why it no longer works."""
    now = time.time_ns() // 1_000_000
    if row.revoked_t is not None:
        raise _unauthorized(f"token {token_id(row.sha256)} was revoked", "invalid_token")
    if row.expires_t is not None and row.expires_t <= now:
        when = dt.datetime.fromtimestamp(row.expires_t / 1000, tz).isoformat(timespec="minutes")
        raise _unauthorized(f"token {token_id(row.sha256)} expired at {when}", "invalid_token")
    org = await session.get(models.Organisation, row.org_id)
    if org is None:  # the registry lost it: the token is worth nothing
        raise _unauthorized("the token's organisation is gone", "invalid_token")
    today = dt.datetime.fromtimestamp(now / 1000, tz).date()
    scope = await scope_for(session, org, today)
    return Caller(row.org_id, org.kind, token_id(row.sha256), scope, row.sha256)


async def authenticate(
    request: web.Request, session: AsyncSession, admin_token: str | None, tz: ZoneInfo
) -> Caller:
    """The caller of ``request``; 401 for a missing, unknown, expired or revoked token."""
    token = bearer_token(request)
    if admin_token is not None and hmac.compare_digest(token.encode(), admin_token.encode()):
        return Caller(None)
    row = await session.get(models.ApiToken, token_digest(token))
    if row is None:
        raise _unauthorized("the token is not valid", "invalid_token")
    return await _caller_for(session, row, tz)


async def recheck_token(session: AsyncSession, caller: Caller, tz: ZoneInfo) -> Caller | None:
    """``caller`` as of now (its scope recomputed), or None once its token stopped working:
    for what outlives one request (an event stream)."""
    if caller.digest is None:
        return caller
    row = await session.get(models.ApiToken, caller.digest)
    if row is None:
        return None
    try:
        return await _caller_for(session, row, tz)
    except web.HTTPUnauthorized:
        return None


# --- access declarations -----------------------------------------------------------------

H = TypeVar("H", bound=Callable[[web.Request], Awaitable[web.StreamResponse]])


def _declare(access: Access) -> Callable[[H], H]:
    def mark(handler: H) -> H:
        setattr(handler, _ACCESS_ATTR, access)
        return handler

    return mark


#: Only the operator's admin token may call the route; an organisation's token gets 403.
operator_only: Final = _declare("operator")
#: Any valid token; the handler answers within :attr:`Caller.scope` (the operator's is all).
scoped: Final = _declare("scoped")


def _access(handler: object) -> Access | None:
    access = getattr(handler, _ACCESS_ATTR, None)
    return access if access in ("operator", "scoped") else None


def check_routes(app: web.Application) -> None:
    """Refuse an app with an ``/api/`` route that declares no access (at start-up)."""
    missing = [
        f"{route.method} {route.resource.canonical}"
        for route in app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith("/api/")
        and route.method != "HEAD"
        and _access(route.handler) is None
    ]
    if missing:
        raise RuntimeError(f"API routes without a declared access: {', '.join(missing)}")


# --- rate -----------------------------------------------------------------------------------


class RateLimiter:
    """A token bucket per key: ``rate`` requests a second, bursts of ``burst``. At most
    ``max_keys`` buckets are kept, the longest idle dropped first, so a flood of made-up
    keys cannot grow it."""

    def __init__(self, rate: float, burst: int, *, max_keys: int = 10_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()

    def _level(self, key: str, now: float) -> float:
        level, last = self._buckets.get(key, (float(self.burst), now))
        return min(float(self.burst), level + (now - last) * self.rate)

    def wait(self, key: str, now: float | None = None) -> float:
        """Seconds until ``key`` may make a request (0.0: now), taking nothing."""
        now = time.monotonic() if now is None else now
        return max(0.0, (1.0 - self._level(key, now)) / self.rate)

    def take(self, key: str, now: float | None = None) -> float:
        """Take one request for ``key``: 0.0 if allowed, else the seconds until it would be
        (and nothing is taken)."""
        now = time.monotonic() if now is None else now
        level = self._level(key, now)
        wait = 0.0
        if level >= 1.0:
            level -= 1.0
        else:
            wait = (1.0 - level) / self.rate
        self._buckets.pop(key, None)
        self._buckets[key] = (level, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait


# --- the middleware ----------------------------------------------------------------------


@dataclass(frozen=True)
class GuardConfig:
    """What :func:`api_guard` needs from the app, looked up per request."""

    session: Callable[[web.Application], AbstractAsyncContextManager[AsyncSession]]
    admin_token: Callable[[web.Application], str | None]
    timezone: Callable[[web.Application], ZoneInfo]
    #: Requests of one caller (a token, or the operator).
    limiter: Callable[[web.Application], RateLimiter]
    #: Refused tokens, per client address (guessing tokens is slowed down, not free).
    failures: Callable[[web.Application], RateLimiter]


def _too_many(limiter: RateLimiter, wait: float, what: str) -> web.HTTPError:
    return _refuse(
        web.HTTPTooManyRequests,
        f"over {limiter.rate:g} {what} a second; retry in {wait:.1f} s",
        **{"Retry-After": str(max(1, round(wait + 0.5)))},
    )


def api_guard(config: GuardConfig) -> Middleware:
    """The middleware that authenticates, limits and authorises every ``/api/`` request."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/api/"):
            return await handler(request)
        app = request.app
        limit = app._client_max_size  # aiohttp keeps it there, with no accessor
        length = request.content_length
        if length is not None and length > limit:
            # Refused from the header: the body is never read, the connection is closed.
            refused = web.json_response(
                {"error": f"a body of {length} bytes is over the limit of {limit}"}, status=413
            )
            refused.force_close()  # the body is never read: the connection ends here
            return refused
        failures = config.failures(app)
        address = request.remote or "unknown"
        wait = failures.wait(address)
        if wait > 0:
            raise _too_many(failures, wait, "refused tokens from this address")
        try:
            async with config.session(app) as session:
                caller = await authenticate(
                    request, session, config.admin_token(app), config.timezone(app)
                )
        except web.HTTPUnauthorized:
            failures.take(address)
            raise
        limiter = config.limiter(app)
        wait = limiter.take(caller.token or "operator")
        if wait > 0:
            raise _too_many(limiter, wait, "requests for this token")
        match = request.match_info
        operator_route = match.http_exception is None and _access(match.handler) == "operator"
        if operator_route and not caller.operator:
            raise _refuse(
                web.HTTPForbidden,
                f"{request.method} {request.path}: only the operator's admin token may call this",
            )
        request[_CALLER] = caller
        return await handler(request)

    return guard

"""``linli tokens``: organisations' API tokens, made, listed and revoked from the command line.

    linli tokens create ORG [--label L] [--days N]   a token (printed once), valid N days
    linli tokens list [ORG] [--all]                  id, organisation, label, dates, state
    linli tokens revoke ID [--reason R]              stops it at once (id from the list)

A token is stored only as its SHA-256; its public id is the first 12 hex digits of that
digest. Creation and revocation are written to the audit log. Open event streams notice a
revoked token within a minute (server/web/handlers.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import secrets
import sys
import time
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

from sqlalchemy import select

from collectors.yamlconf import ConfigError
from server.settings import Settings
from server.store import audit, models
from server.store.db import open_database
from server.web.auth import TOKEN_ID_LEN, token_digest, token_id

__all__ = ["add_tokens_parser", "run_tokens"]

DEFAULT_DAYS: Final = 365
MAX_DAYS: Final = 3 * 365
DAY_MS: Final = 86_400_000


def add_tokens_parser(sub: Any) -> None:
    """The ``tokens`` command and its actions."""
    t = sub.add_parser("tokens", help="organisations' API tokens")
    tsub = t.add_subparsers(dest="tokens_command", required=True, metavar="ACTION")
    tc = tsub.add_parser("create", help="make a token for an organisation (printed once)")
    tc.add_argument("org")
    tc.add_argument("--label", default="", help="what it is for (shown in lists)")
    tc.add_argument(
        "--days",
        type=int,
        default=DEFAULT_DAYS,
        help=f"valid this many days (default {DEFAULT_DAYS}, at most {MAX_DAYS})",
    )
    tl = tsub.add_parser("list", help="tokens with their state (never the tokens themselves)")
    tl.add_argument("org", nargs="?", help="only this organisation's")
    tl.add_argument("--all", action="store_true", help="also revoked and expired ones")
    tr = tsub.add_parser("revoke", help="stop a token at once")
    tr.add_argument("id", help=f"its id ({TOKEN_ID_LEN} hex digits, from `linli tokens list`)")
    tr.add_argument("--reason", default="", help="why (kept in the audit log)")
    for p in (tc, tl, tr):
        p.add_argument("--config", type=Path, help="settings TOML (for the database URL)")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _when(t: int | None, tz: ZoneInfo) -> str:
    if t is None:
        return "never"
    return dt.datetime.fromtimestamp(t / 1000, tz).strftime("%Y-%m-%d %H:%M")


def _state(row: models.ApiToken, now: int) -> str:
    if row.revoked_t is not None:
        return "revoked"
    if row.expires_t is not None and row.expires_t <= now:
        return "expired"
    return "active"


async def run_tokens(args: argparse.Namespace, settings: Settings) -> int:
    """Carry out ``linli tokens ACTION``; 0 on success (ConfigError for bad arguments)."""
    tz = ZoneInfo(settings.timezone)
    now = _now_ms()
    async with open_database(settings.database_url) as db, db.session(write=True) as session:
        if args.tokens_command == "create":
            if not 1 <= args.days <= MAX_DAYS:
                message = f"{args.days} is outside 1..{MAX_DAYS}"
                raise ConfigError.one("tokens create", None, "--days", message)
            if await session.get(models.Organisation, args.org) is None:
                message = f"no organisation {args.org!r} in the registry"
                raise ConfigError.one("tokens create", None, "org", message)
            token = "lk_" + secrets.token_urlsafe(32)
            row = models.ApiToken(sha256=token_digest(token), org_id=args.org, label=args.label,
                                  created_t=now, expires_t=now + args.days * DAY_MS)  # fmt: skip
            session.add(row)
            audit.record(session, actor=audit.cli_actor(), address=audit.CLI_ADDRESS,
                         action="token_created", target=args.org,
                         detail={"token": token_id(row.sha256), "label": args.label,
                                 "expires_t": row.expires_t})  # fmt: skip
            print(token)
            print(f"id {token_id(row.sha256)}, {args.org}, valid until {_when(row.expires_t, tz)}"
                  " (the token is shown only now)", file=sys.stderr)  # fmt: skip
            return 0
        if args.tokens_command == "list":
            query = select(models.ApiToken).order_by(models.ApiToken.created_t)
            if args.org:
                query = query.where(models.ApiToken.org_id == args.org)
            rows = [r for r in (await session.scalars(query)).all()
                    if args.all or _state(r, now) == "active"]  # fmt: skip
            print(f"{'id':<{TOKEN_ID_LEN}}  {'organisation':<24} {'state':<8} "
                  f"{'created':<17} {'expires':<17} label")  # fmt: skip
            for r in rows:
                created, expires = _when(r.created_t, tz), _when(r.expires_t, tz)
                print(f"{token_id(r.sha256)}  {r.org_id:<24} {_state(r, now):<8} "
                      f"{created:<17} {expires:<17} {r.label}")  # fmt: skip
            return 0
        # revoke
        wanted = args.id.strip().lower()
        if len(wanted) != TOKEN_ID_LEN or any(ch not in "0123456789abcdef" for ch in wanted):
            message = f"{args.id!r} is not a token id ({TOKEN_ID_LEN} hex digits)"
            raise ConfigError.one("tokens revoke", None, "id", message)
        found = (
            await session.scalars(
                select(models.ApiToken).where(models.ApiToken.sha256.startswith(wanted))
            )
        ).all()
        if not found:
            raise ConfigError.one("tokens revoke", None, "id", f"no token {wanted}")
        row = found[0]
        if row.revoked_t is not None:
            print(f"token {wanted} was already revoked at {_when(row.revoked_t, tz)}")
            return 0
        row.revoked_t = now
        row.revoked_by = audit.cli_actor()
        audit.record(session, actor=audit.cli_actor(), address=audit.CLI_ADDRESS,
                     action="token_revoked", target=row.org_id,
                     detail={"token": wanted, "label": row.label,
                             "reason": args.reason})  # fmt: skip
        print(f"token {wanted} of {row.org_id} revoked")
        return 0

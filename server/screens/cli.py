"""``linli screens``: live screens and their tokens from the command line.

    linli screens create ID --org ORG [--name N] [--communities a,b] [--lang zh|en]
                            [--density normal|compact] [--rotate S]
                                                   a screen and its token (printed once)
    linli screens list [ORG]                       screens, their communities and tokens
    linli screens token ID                         a new token; the old ones stop at once
    linli screens revoke ID                        stop every token of the screen

A screen declared in the registry (``screens:``) exists after ``linli registry import``;
``token`` gives it its first token. The page's address, with its token, is printed as
``http://<http_host>:<http_port>/screen/ID#token=…``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, update

from collectors.wire import ID_PATTERN
from collectors.yamlconf import ConfigError
from server.screens.hub import communities_of_screen, make_screen_token
from server.settings import Settings
from server.store import audit, models
from server.store.db import open_database
from server.store.registry import SCREEN_ORGS
from server.web.auth import token_digest

__all__ = ["add_screens_parser", "run_screens", "screen_url"]


def add_screens_parser(sub: Any) -> None:
    s = sub.add_parser("screens", help="live screens and their read-only tokens")
    ssub = s.add_subparsers(dest="screens_command", required=True, metavar="ACTION")
    c = ssub.add_parser("create", help="a screen and its token (printed once)")
    c.add_argument("id")
    c.add_argument("--org", required=True, help="its organisation (a centre, company, office)")
    c.add_argument("--name", default="")
    c.add_argument("--communities", help="comma-separated ids (default: the organisation's)")
    c.add_argument("--lang", choices=("zh", "en"), default="zh")
    c.add_argument("--density", choices=("normal", "compact"), default="normal")
    c.add_argument("--rotate", type=int, default=15, help="seconds per page (5..600)")
    lst = ssub.add_parser("list", help="screens and their token counts")
    lst.add_argument("org", nargs="?")
    t = ssub.add_parser("token", help="a new token for a screen; the old ones stop")
    t.add_argument("id")
    r = ssub.add_parser("revoke", help="stop every token of a screen")
    r.add_argument("id")
    for p in (c, lst, t, r):
        p.add_argument("--config", type=Path, help="settings TOML (database, address)")


def screen_url(settings: Settings, screen_id: str, token: str) -> str:
    base = settings.public_url or f"http://{settings.http_host}:{settings.http_port}"
    return f"{base.rstrip('/')}/screen/{screen_id}#token={token}"


async def run_screens(args: argparse.Namespace, settings: Settings) -> int:
    """Carry out ``linli screens ACTION``; ConfigError (exit 2) for a bad argument."""
    now = time.time_ns() // 1_000_000
    async with open_database(settings.database_url) as db:
        if args.screens_command == "list":
            async with db.session() as session:
                query = select(models.Screen).order_by(models.Screen.id)
                if args.org:
                    query = query.where(models.Screen.org_id == args.org)
                for s in (await session.scalars(query)).all():
                    live = await session.scalar(
                        select(func.count())
                        .select_from(models.ScreenToken)
                        .where(
                            models.ScreenToken.screen_id == s.id,
                            models.ScreenToken.revoked_t.is_(None),
                        )
                    )
                    coms = ", ".join(json.loads(s.communities)) if s.communities else "(its own)"
                    print(f"{s.id}\t{s.org_id}\t{s.name}\t{coms}\t{live} token(s)")
            return 0
        async with db.session(write=True) as session:
            if args.screens_command == "create":
                if not ID_PATTERN.match(args.id):
                    raise ConfigError.one(
                        "screens create", None, "id", f"{args.id!r} is not a slug like 'hall-1'"
                    )
                if not 5 <= args.rotate <= 600:
                    raise ConfigError.one("screens create", None, "rotate", "5..600 seconds")
                owner = await session.get(models.Organisation, args.org)
                if owner is None or owner.kind not in SCREEN_ORGS:
                    raise ConfigError.one(
                        "screens create",
                        None,
                        "org",
                        f"{args.org!r} cannot have screens ({', '.join(SCREEN_ORGS)} can)",
                    )
                if await session.get(models.Screen, args.id) is not None:
                    raise ConfigError.one("screens create", None, "id", f"{args.id!r} exists")
                wanted = (
                    [c.strip() for c in args.communities.split(",")] if args.communities else None
                )
                today = dt.datetime.now(ZoneInfo(settings.timezone)).date()
                probe = models.Screen(org_id=args.org)
                own = set(await communities_of_screen(session, probe, today))
                for cid in wanted or []:
                    if cid not in own:
                        raise ConfigError.one(
                            "screens create",
                            None,
                            "communities",
                            f"{args.org} does not serve {cid!r}: a screen shows its own",
                        )
                session.add(
                    models.Screen(
                        id=args.id,
                        org_id=args.org,
                        name=args.name or args.id,
                        communities=json.dumps(wanted) if wanted is not None else "",
                        lang=args.lang,
                        density=args.density,
                        rotate_s=args.rotate,
                    )
                )
                await session.flush()
            screen = await session.get(models.Screen, args.id)
            if screen is None:
                raise ConfigError.one("screens", None, "id", f"no screen {args.id!r}")
            await session.execute(
                update(models.ScreenToken)
                .where(
                    models.ScreenToken.screen_id == screen.id,
                    models.ScreenToken.revoked_t.is_(None),
                )
                .values(revoked_t=now)
            )
            if args.screens_command == "revoke":
                audit.record(
                    session,
                    actor=audit.cli_actor(),
                    address=audit.CLI_ADDRESS,
                    action="screen_revoke",
                    target=screen.id,
                )
                print(f"{screen.id}: every token revoked", file=sys.stderr)
                return 0
            token = make_screen_token()
            session.add(
                models.ScreenToken(sha256=token_digest(token), screen_id=screen.id, created_t=now)
            )
            audit.record(
                session,
                actor=audit.cli_actor(),
                address=audit.CLI_ADDRESS,
                action=f"screen_{args.screens_command}",
                target=screen.id,
            )
    print(screen_url(settings, screen.id, token))
    return 0

"""``linli gateway``: run one or more gateways from site configs until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from collectors.profile import Profile
from collectors.yamlconf import ConfigError
from gateway.queue import QueueError
from gateway.runtime import Gateway
from gateway.site import SiteConfig, load_site_with_profiles

__all__ = ["main"]

log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="linli gateway",
        description="Run gateways: read their collectors and publish to the central broker.",
    )
    p.add_argument(
        "--config",
        "-c",
        action="append",
        required=True,
        type=Path,
        metavar="SITE",
        help="a site config YAML (repeat to run several gateways in one process)",
    )
    p.add_argument(
        "--record",
        type=Path,
        metavar="FILE",
        help="append every item produced, one JSON line each (for checks)",
    )
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


async def _run(
    sites: list[SiteConfig], profiles: list[Mapping[str, Profile]], record: TextIO | None
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    gateways = [
        Gateway(site, profiles=p, record=record) for site, p in zip(sites, profiles, strict=True)
    ]
    failed = False
    try:
        async with asyncio.TaskGroup() as tg:
            for gw in gateways:
                tg.create_task(gw.run(stop), name=f"gateway-{gw.site.community}-{gw.site.gateway}")
    except* QueueError as group:
        for exc in group.exceptions:
            log.error("%s", exc)  # noqa: TRY400 (the message says it all; no traceback)
        failed = True
    if failed:
        return 1
    produced = sum(g.produced for g in gateways)
    published = sum(g.uplink.published_items for g in gateways)
    unsent = sum(g.uplink.unsent for g in gateways)
    log.info(
        "stopped: %d items produced, %d published, %d queued on disk for the next start",
        produced,
        published,
        unsent,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``linli gateway`` (and ``python -m gateway``)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    sites: list[SiteConfig] = []
    profiles: list[Mapping[str, Profile]] = []
    problems: list[str] = []
    for path in args.config:
        try:
            site, site_profiles = load_site_with_profiles(path)
            sites.append(site)
            profiles.append(site_profiles)
        except ConfigError as exc:
            problems.append(str(exc))
    seen: set[tuple[str, str]] = set()
    for site, path in zip(sites, args.config, strict=False):
        if (site.community, site.gateway) in seen:
            problems.append(f"{path}: gateway {site.community}/{site.gateway} is configured twice")
        seen.add((site.community, site.gateway))
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        record = None
        if args.record:
            try:
                record = stack.enter_context(args.record.open("a", encoding="utf-8"))
            except OSError as exc:
                print(f"{args.record}: cannot open for writing: {exc.strerror}", file=sys.stderr)
                return 2
        return asyncio.run(_run(sites, profiles, record))

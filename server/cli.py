"""The ``linli`` command.

    linli server   [--config FILE]            run the central server
    linli gateway  --config SITE [...]        run gateways (python -m gateway)
    linli firmware validate PATH...           check device profiles and site configs
    linli demo     [--mqtt-url …] [...]       everything on embedded defaults
    linli registry import FILE [--config F]   load a registry YAML into SQL (idempotent)
    linli registry check FILE                 validate a registry YAML, print every problem
    linli influx setup [--config F] [--backfill-days N]
                                              database/buckets, retention, hourly roll-ups
    linli gateways config|command|show …      manage gateways through the server's API
    linli tokens create ORG [--label L] [--days N]   an organisation's API token (printed once)
    linli tokens list [ORG] [--all] | revoke ID      its tokens' states; stop one at once
    linli report assessment|ranking|sign|correct TABLE PERIOD    assessments by city table
    linli report ledger|progress ORG PERIOD   the ledger (台账) and the progress table
    linli report tables [--check FILE…]       the city tables, or check table files
    linli screens create|list|token|revoke …  live screens and their tokens
    linli gateways provision C G [--rotate] [--site F]   a gateway's MQTT account
    linli broker user server|feed [ORG] [--rotate]      the server's or a feed's account
    linli broker write                        mosquitto's password and ACL files, reloaded
    linli evidence id REF…                    the opaque id stored for a device's evidence
                                              reference (to find a snapshot on site)
    linli keys public                         the public key gateways verify configs and
                                              commands with (uplink.server_keys)

Exit status: 0 success, 1 failure at run time, 2 bad usage or bad configuration (the message
names the file, line and key).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from pathlib import Path

from alerts.ladders import LadderError
from collectors.signed import public_key_text
from collectors.yamlconf import ConfigError
from server.app import evidence_key
from server.compliance.cli import add_report_parser, run_report
from server.compliance.reports import ReportError
from server.compliance.store import AssessmentError
from server.gateways.broker_auth import (
    BrokerAuthError,
    BrokerReloadError,
    provision,
    write_broker_files,
)
from server.gateways.cli import add_gateways_parser, run_gateways
from server.gateways.signing import SigningKeyError, load_or_create_signing_key
from server.ingest.pipeline import evidence_id
from server.screens.cli import add_screens_parser, run_screens
from server.serving import serve, stop_on_signals
from server.settings import Settings, influx_target, load_settings
from server.store import audit
from server.store.db import Database, open_database
from server.store.registry import import_registry, load_registry
from server.web.tokens import add_tokens_parser, run_tokens

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="linli", description="Linli (邻里) community safety platform")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("server", help="run the central server")
    s.add_argument("--config", type=Path, help="settings TOML (LINLI_* variables override it)")

    sub.add_parser(
        "gateway", help="run gateways from site configs (see linli gateway --help)", add_help=False
    )
    sub.add_parser(
        "firmware",
        help="validate device profiles and site configs (linli firmware validate PATH…)",
        add_help=False,
    )

    d = sub.add_parser("demo", help="run broker, server and simulated gateways on defaults")
    d.add_argument("--mqtt-url", help="use this broker instead of the embedded one")
    d.add_argument("--database-url", help="SQLAlchemy URL instead of SQLite under --state-dir")
    d.add_argument("--influx-url", help="also write telemetry to this InfluxDB (http://host:8086)")
    d.add_argument("--registry", type=Path, help="registry YAML instead of the Shancheng demo")
    d.add_argument(
        "--state-dir",
        type=Path,
        default=Path("var/demo"),
        help="where the demo keeps its databases and site configs (default var/demo)",
    )
    d.add_argument("--port", type=int, help="HTTP port (default LINLI_HTTP_PORT or 8080)")
    d.add_argument("--seed", type=int, default=1, help="simulation seed (default 1)")

    r = sub.add_parser("registry", help="registry files")
    rsub = r.add_subparsers(dest="registry_command", required=True, metavar="ACTION")
    ri = rsub.add_parser("import", help="load a registry YAML into the database (idempotent)")
    ri.add_argument("file", type=Path)
    ri.add_argument("--config", type=Path, help="settings TOML (for the database URL)")
    rc = rsub.add_parser("check", help="validate a registry YAML and print every problem")
    rc.add_argument("file", type=Path)

    i = sub.add_parser("influx", help="InfluxDB administration")
    isub = i.add_subparsers(dest="influx_command", required=True, metavar="ACTION")
    iset = isub.add_parser(
        "setup", help="create the database/buckets, retention policies and hourly roll-ups"
    )
    iset.add_argument("--config", type=Path, help="settings TOML (influx_* settings)")
    iset.add_argument(
        "--backfill-days",
        type=int,
        metavar="N",
        help="1.x: also recompute the hourly roll-ups of the last N days now",
    )
    add_gateways_parser(sub)

    b = sub.add_parser("broker", help="broker accounts and mosquitto's password and ACL files")
    bsub = b.add_subparsers(dest="broker_command", required=True, metavar="ACTION")
    bu = bsub.add_parser("user", help="the server's or an organisation feed's account")
    bu.add_argument("role", choices=["server", "feed"])
    bu.add_argument("org", nargs="?", help="the organisation (feed)")
    bu.add_argument("--rotate", action="store_true", help="replace its password")
    bu.add_argument("--config", type=Path, help="settings TOML")
    bw = bsub.add_parser("write", help="rewrite the files from the registry and reload")
    bw.add_argument("--config", type=Path, help="settings TOML")

    k = sub.add_parser("keys", help="the server's signing key for gateway configs and commands")
    ksub = k.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    kp = ksub.add_parser("public", help="print the public key for uplink.server_keys")
    kp.add_argument("--config", type=Path, help="settings TOML (for signing_key_path)")

    add_tokens_parser(sub)
    add_report_parser(sub)
    add_screens_parser(sub)
    e = sub.add_parser("evidence", help="opaque evidence ids")
    esub = e.add_subparsers(dest="evidence_command", required=True, metavar="ACTION")
    ei = esub.add_parser("id", help="the id the server stores for device evidence references")
    ei.add_argument("reference", nargs="+", help="a snapshot's reference as the device sent it")
    ei.add_argument("--config", type=Path, help="settings TOML (for signing_key_path)")
    return p


async def _serve_until_signal(settings: Settings) -> None:
    stop = asyncio.Event()
    with stop_on_signals(stop):
        await serve(settings, stop)


async def _broker(args: argparse.Namespace, settings: Settings) -> int:
    if args.broker_command == "user" and (args.role == "feed") != (args.org is not None):
        raise ConfigError.one("broker user", None, "org", "a feed needs ORG; the server none")
    async with open_database(settings.database_url) as db:
        if args.broker_command == "user":
            async with db.session(write=True) as session:
                creds = await provision(session, args.role, org=args.org, rotate=args.rotate)
                audit.record(session, actor=audit.cli_actor(), address=audit.CLI_ADDRESS,
                             action="broker_user", target=creds.username,
                             detail={"rotate": args.rotate})  # fmt: skip
            print(f"username: {creds.username}\npassword: {creds.password}  (shown once)")
        return await write_and_reload(db, settings)


async def write_and_reload(db: Database, settings: Settings) -> int:
    """Rewrite the broker's files from SQL and reload it; 1 (with the reason) if it could
    not be reloaded, 0 otherwise."""
    async with db.session() as session:
        try:
            written = await write_broker_files(session, settings)
        except BrokerReloadError as exc:
            print(f"linli: {exc}", file=sys.stderr)
            return 1
    if written is None:
        print("broker_auth_dir is not set: no broker files written", file=sys.stderr)
    return 0


async def _registry_import(path: Path, settings: Settings) -> int:
    reg = load_registry(path)
    async with open_database(settings.database_url) as db, db.session(write=True) as session:
        counts = await import_registry(session, reg)
        audit.record(session, actor=audit.cli_actor(), address=audit.CLI_ADDRESS,
                     action="registry_import", target=str(path),
                     detail={"created": counts.created, "updated": counts.updated})  # fmt: skip
    print(
        f"{path}: {len(reg.communities)} communities, {len(reg.organisations)} organisations, "
        f"{len(reg.contracts)} contracts; records created {counts.created}, "
        f"updated {counts.updated}, unchanged {counts.unchanged}"
    )
    if settings.broker_auth_dir is None:
        return 0
    async with open_database(settings.database_url) as db:
        return await write_and_reload(db, settings)  # gateways gone lose their access


async def _influx_setup(settings: Settings, backfill_days: int | None) -> int:
    from server.telemetry.influx_setup import SetupError, setup  # noqa: PLC0415

    if not settings.influx_url:
        raise ConfigError.one("settings", None, "influx_url", "is not set (LINLI_INFLUX_URL)")
    target = influx_target(settings)
    backfill = None
    if backfill_days is not None:
        if not 1 <= backfill_days <= settings.influx_raw_days:
            raise ConfigError.one(
                "--backfill-days",
                None,
                "",
                f"{backfill_days} must be between 1 and influx_raw_days "
                f"({settings.influx_raw_days}): older raw points are gone",
            )
        hour = 3_600_000
        now = time.time_ns() // 1_000_000 // hour * hour
        backfill = (now - backfill_days * 24 * hour, now)
    try:
        lines = await setup(
            target,
            raw_days=settings.influx_raw_days,
            rollup_days=settings.influx_rollup_days,
            backfill=backfill,
        )
    except SetupError as exc:
        print(f"linli influx setup: {exc}", file=sys.stderr)
        return 1
    for line in lines:
        print(line)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``linli`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["gateway"]:
        # The gateway is its own program (the server never imports edge code): hand over.
        os.execv(sys.executable, [sys.executable, "-m", "gateway", *argv[1:]])  # noqa: S606
    if argv[:1] == ["firmware"]:
        # Profiles and site configs are edge data, checked by the gateway's own code.
        os.execv(sys.executable, [sys.executable, "-m", "gateway.firmware", *argv[1:]])  # noqa: S606
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        if args.command == "server":
            asyncio.run(_serve_until_signal(load_settings(args.config)))
            return 0
        if args.command == "demo":
            from server.demo import run_demo  # noqa: PLC0415 (only the demo needs amqtt)

            return asyncio.run(run_demo(args))
        if args.command == "registry":
            if args.registry_command == "check":
                reg = load_registry(args.file)
                devices = sum(len(c.devices) for c in reg.communities)
                print(f"{args.file}: OK ({len(reg.communities)} communities, {devices} devices)")
                return 0
            return asyncio.run(_registry_import(args.file, load_settings(args.config)))
        if args.command == "tokens":
            return asyncio.run(run_tokens(args, load_settings(args.config)))
        if args.command == "report":
            return asyncio.run(run_report(args, load_settings(args.config)))
        if args.command == "screens":
            return asyncio.run(run_screens(args, load_settings(args.config)))
        if args.command == "evidence":
            settings = load_settings(args.config)
            if not Path(settings.signing_key_path).exists():  # never make a new key here
                raise ConfigError.one("evidence id", None, "signing_key_path",
                                      f"no key at {settings.signing_key_path}: run this with "
                                      "the server's settings (--config)")  # fmt: skip
            secret = evidence_key(settings)
            for ref in args.reference:
                print(f"{evidence_id(secret, ref)}  {ref}")
            return 0
        if args.command == "broker":
            return asyncio.run(_broker(args, load_settings(args.config)))
        if args.command == "keys":
            key = load_or_create_signing_key(Path(load_settings(args.config).signing_key_path))
            print(public_key_text(key.public_key()))
            return 0
        if args.command == "gateways":
            return asyncio.run(run_gateways(args, load_settings(args.config)))
        if args.command == "influx":
            return asyncio.run(_influx_setup(load_settings(args.config), args.backfill_days))
    except (ConfigError, LadderError, SigningKeyError, BrokerAuthError, AssessmentError) as exc:
        print(exc, file=sys.stderr)
        return 2
    except ReportError as exc:
        print(f"linli {args.command}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"linli {args.command}: {exc}", file=sys.stderr)
        return 1
    return 2

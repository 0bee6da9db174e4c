"""``linli gateways …``: the operator's side of gateway management, through the server's API.

    linli gateways config  COMMUNITY GATEWAY FILE        publish FILE (YAML or JSON)
    linli gateways command COMMUNITY GATEWAY OP [--device D] [--ttl S]
    linli gateways show    COMMUNITY GATEWAY             versions, answers, recent commands

The server is ``--server`` (default ``http://127.0.0.1:<http_port>``) and the token is the
server's ``admin_token`` (``LINLI_ADMIN_TOKEN`` or the settings file). ``config`` and
``command`` wait up to ``--wait`` seconds for the gateway's answer and print it.

Exit status: 0 the gateway accepted (or ``--wait 0``), 1 refused, no answer in time or the
server refused, 2 bad usage or an unreadable file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from collectors.mqtturl import parse_mqtt_url
from collectors.signed import public_key_text
from collectors.wire import COMMAND_OPS
from collectors.yamlconf import ConfigError
from server.gateways.broker_auth import BrokerReloadError, provision, write_broker_files
from server.gateways.signing import load_or_create_signing_key
from server.settings import Settings
from server.store import audit
from server.store.db import open_database

__all__ = ["add_gateways_parser", "run_gateways"]

POLL_S = 0.25


def add_gateways_parser(sub: Any) -> None:
    """The ``gateways`` subcommand and its actions."""
    g = sub.add_parser("gateways", help="publish configs and commands to gateways, show answers")
    g.add_argument("--config", type=Path, help="settings TOML (http_port, admin_token)")
    g.add_argument("--server", help="server URL (default http://127.0.0.1:<http_port>)")
    gsub = g.add_subparsers(dest="gateways_command", required=True, metavar="ACTION")
    c = gsub.add_parser("config", help="publish a versioned config (YAML or JSON file)")
    c.add_argument("community")
    c.add_argument("gateway")
    c.add_argument("file", type=Path)
    c.add_argument("--wait", type=float, default=15.0, help="seconds to wait for the answer")
    m = gsub.add_parser("command", help="send a command")
    m.add_argument("community")
    m.add_argument("gateway")
    m.add_argument("op", choices=sorted(COMMAND_OPS))
    m.add_argument("--device", help="the device to act on (all but ping)")
    m.add_argument("--ttl", type=int, default=60, help="seconds before it expires (default 60)")
    m.add_argument("--wait", type=float, default=15.0, help="seconds to wait for the answer")
    s = gsub.add_parser("show", help="config versions, their answers and recent commands")
    s.add_argument("community")
    s.add_argument("gateway")
    p = gsub.add_parser("provision", help="the gateway's MQTT account (password shown once)")
    p.add_argument("community")
    p.add_argument("gateway")
    p.add_argument("--rotate", action="store_true", help="replace its password")
    p.add_argument("--site", type=Path, help="write a site-config skeleton here (mode 0600)")
    p.add_argument("--broker", default="mqtt://127.0.0.1:1883",
                   help="the broker URL the gateway uses (for the skeleton)")  # fmt: skip


def _load_config_file(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError.one(str(path), None, "", f"cannot read: {exc.strerror}") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError.one(str(path), line, "", f"not valid YAML/JSON: {exc}") from exc


class _Api:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base.rstrip("/")

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.session.request(method, self.base + path, json=body) as resp:
            text = await resp.text()
            try:
                return resp.status, json.loads(text)
            except json.JSONDecodeError:
                return resp.status, {"error": text.strip()[:300]}


def _print(body: Any) -> None:
    print(json.dumps(body, ensure_ascii=False, indent=2))


async def _wait_for_ack(api: _Api, path: str, pick: Any, wait: float) -> int:
    """Poll ``path`` until ``pick(body)`` has an answer; print it; the exit status."""
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        status, body = await api.call("GET", path)
        if status != 200:
            print(f"linli gateways: {status} {body.get('error', body)}", file=sys.stderr)
            return 1
        found = pick(body)
        if found is not None and found.get("ack") is not None:
            _print(found)
            return 0 if found["ack"]["ok"] else 1
        if asyncio.get_running_loop().time() >= deadline:
            print(f"linli gateways: no answer from the gateway within {wait:g} s", file=sys.stderr)
            return 1
        await asyncio.sleep(POLL_S)


async def run_gateways(args: argparse.Namespace, settings: Settings) -> int:
    """Run one ``linli gateways`` action."""
    if args.gateways_command == "provision":
        return await _provision(args, settings)
    if not settings.admin_token:
        raise ConfigError.one("settings", None, "admin_token", "is not set (LINLI_ADMIN_TOKEN)")
    base = args.server or f"http://127.0.0.1:{settings.http_port}"
    path = f"/api/gateways/{args.community}/{args.gateway}"
    body: Any = None
    if args.gateways_command == "config":
        body = _load_config_file(args.file)
    headers = {"Authorization": f"Bearer {settings.admin_token}"}
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
        api = _Api(session, base)
        try:
            if args.gateways_command == "show":
                status, configs = await api.call("GET", f"{path}/config")
                if status == 200:
                    status, commands = await api.call("GET", f"{path}/commands?limit=20")
                    if status == 200:
                        _print({**configs, "commands": commands["commands"]})
                        return 0
                    configs = commands
                print(f"linli gateways: {status} {configs.get('error')}", file=sys.stderr)
                return 1
            if args.gateways_command == "config":
                status, sent = await api.call("PUT", f"{path}/config", body)
                version = sent.get("version")

                def pick(b: Any) -> Any:
                    return next((v for v in b["versions"] if v["version"] == version), None)

                ack_path = f"{path}/config"
            else:
                request = {"op": args.op, "ttl_s": args.ttl}
                if args.device:
                    request["device"] = args.device
                status, sent = await api.call("POST", f"{path}/commands", request)
                ack_path = f"{path}/commands/{sent.get('id')}"

                def pick(b: Any) -> Any:
                    return b

            if status != 202:
                print(f"linli gateways: {status} {sent.get('error', sent)}", file=sys.stderr)
                return 1
            if args.wait <= 0:
                _print(sent)
                return 0
            return await _wait_for_ack(api, ack_path, pick, args.wait)
        except aiohttp.ClientError as exc:
            print(f"linli gateways: cannot reach the server at {base}: {exc}", file=sys.stderr)
            return 1


async def _provision(args: argparse.Namespace, settings: Settings) -> int:
    """Make (or rotate) the gateway's broker account, rewrite the broker's files, print the
    password once and, with ``--site``, write a site-config skeleton that uses it."""
    async with open_database(settings.database_url) as db:
        async with db.session(write=True) as session:
            creds = await provision(session, "gateway", community=args.community,
                                    gateway=args.gateway, rotate=args.rotate)  # fmt: skip
            audit.record(session, actor=audit.cli_actor(), address=audit.CLI_ADDRESS,
                         action="gateway_provisioned", target=creds.username,
                         detail={"rotate": args.rotate})  # fmt: skip
        print(f"username: {creds.username}\npassword: {creds.password}  (shown once)")
        status = 0
        async with db.session() as session:
            try:
                if await write_broker_files(session, settings) is None:
                    print("broker_auth_dir is not set: no broker files written", file=sys.stderr)
            except BrokerReloadError as exc:
                print(f"linli: {exc}", file=sys.stderr)
                status = 1
    if args.site is not None:
        broker = parse_mqtt_url(args.broker)
        scheme = "mqtts" if broker.tls else "mqtt"
        key = load_or_create_signing_key(Path(settings.signing_key_path)).public_key()
        skeleton = {
            "version": 1, "gateway": args.gateway, "community": args.community,
            "state_dir": f"/var/lib/linli/{args.community}-{args.gateway}",
            "uplink": {"url": f"{scheme}://{creds.username}:{creds.password}@"
                              f"{broker.host}:{broker.port}",
                       "server_keys": [public_key_text(key)]},
            "collectors": [],
        }  # fmt: skip
        fd = os.open(args.site, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(
                "# Site config skeleton from `linli gateways provision`: add collectors,\n"
                "# outputs and edge settings (docs/gateway.md). It holds the password.\n"
            )
            yaml.safe_dump(skeleton, f, allow_unicode=True, sort_keys=False)
        print(f"site skeleton written to {args.site}")
    return status

"""``linli demo``: broker, server and one simulated gateway per community, on defaults.

With nothing configured it starts an embedded MQTT broker (amqtt, in process, on a free
loopback port), imports the Shancheng registry into SQLite under ``--state-dir``, writes one
gateway site config per community, starts the server, and runs all the gateways in one
child process (``python -m gateway``). ``Ctrl-C`` stops the gateways (they drain and say
offline), then the server, then the broker; nothing is left running.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import msgspec
import yaml
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from collectors.signed import public_key_text
from server.gateways.signing import load_or_create_signing_key
from server.screens.hub import make_screen_token
from server.serving import serve, stop_on_signals
from server.settings import load_settings
from server.store import models
from server.store.db import open_database
from server.store.registry import RegistryFile, import_registry, load_registry
from server.web.auth import token_digest

__all__ = ["DEMO_REGISTRY", "run_demo", "site_configs"]

log = logging.getLogger(__name__)

DEMO_REGISTRY: Final = Path(__file__).parent / "demo_data" / "shancheng.yaml"
GATEWAY_STOP_TIMEOUT_S: Final = 20.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def _embedded_broker() -> AsyncIterator[str]:
    """An amqtt broker on a free loopback port, for the demo only."""
    from amqtt.broker import Broker  # noqa: PLC0415 (demo-only dependency)

    logging.getLogger("amqtt").setLevel(logging.WARNING)
    logging.getLogger("transitions").setLevel(logging.WARNING)  # amqtt's state machines
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # one line per poll is noise
    port = _free_port()
    broker = Broker(
        {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
    )
    await broker.start()
    try:
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        await broker.shutdown()


def site_configs(
    reg: RegistryFile, mqtt_url: str, prefix: str, state_dir: Path, seed: int
) -> dict[str, dict[str, Any]]:
    """One simulated gateway site config per registered gateway, keyed by file name."""
    sites: dict[str, dict[str, Any]] = {}
    for n, com in enumerate(reg.communities):
        for gw in com.gateways:
            devices = [
                {"id": d.id, "kind": d.kind, **({"floors": d.floors} if d.floors else {})}
                for d in com.devices
                if d.gateway == gw.id and d.kind in {"elevator", "fire_lane", "gate"}
            ]
            sites[f"{com.id}--{gw.id}.yaml"] = {
                "version": 1,
                "gateway": gw.id,
                "community": com.id,
                "state_dir": str(state_dir / "gateways" / f"{com.id}--{gw.id}"),
                "uplink": {"url": mqtt_url, "prefix": prefix},
                # 22 simulated gateways on one machine: survive a crash, skip the fsyncs.
                "queue": {"synchronous": "normal"},
                "collectors": [{"type": "simulator", "seed": seed * 1000 + n, "devices": devices}],
                # As on a real site, each lane's warning plays through a speaker: here one
                # that listens on the demo's broker (linli-demo/<community>/<lane>/speaker).
                "outputs": [
                    {
                        "device": d["id"],
                        "action": "voice_warning",
                        "mqtt": {
                            "url": mqtt_url,
                            "topic": f"linli-demo/{com.id}/{d['id']}/speaker",
                            "payload": '{"play": "fire_lane_warning"}',
                        },
                    }
                    for d in devices
                    if d["kind"] == "fire_lane"
                ],
            }
    return sites


async def _stop_process(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), GATEWAY_STOP_TIMEOUT_S)
    except TimeoutError:
        log.warning("gateways did not stop in %.0f s; killing them", GATEWAY_STOP_TIMEOUT_S)
        proc.kill()
        await proc.wait()


async def run_demo(args: argparse.Namespace) -> int:
    """Run the demo until SIGINT/SIGTERM; return the exit status."""
    state_dir: Path = args.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (start-up, before any I/O loop)
    flags = {
        "mqtt_url": args.mqtt_url,
        "database_url": args.database_url,
        "influx_url": args.influx_url,
        "http_port": args.port,
    }
    # Validated like any settings before anything starts: a bad flag is a clear error.
    settings = load_settings(None, overrides={k: v for k, v in flags.items() if v is not None})
    if args.database_url is None:
        settings = msgspec.structs.replace(
            settings, database_url=f"sqlite+aiosqlite:///{state_dir / 'linli.db'}"
        )
    settings = msgspec.structs.replace(
        settings,
        telemetry_path=str(state_dir / "telemetry.db"),
        signing_key_path=str(state_dir / "signing-key.pem"),
        # Every /api/ route wants a token: the demo's operator gets one for this run (in the
        # printed address) unless LINLI_ADMIN_TOKEN names one.
        admin_token=settings.admin_token or secrets.token_urlsafe(24),
    )
    # The demo's gateways take configs and commands signed by this server, as real ones do.
    server_key = public_key_text(
        load_or_create_signing_key(Path(settings.signing_key_path)).public_key()
    )
    registry_path = args.registry or DEMO_REGISTRY
    reg = load_registry(registry_path)
    stop = asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        stack.enter_context(stop_on_signals(stop))
        if args.mqtt_url is None:
            mqtt_url = await stack.enter_async_context(_embedded_broker())
            # amqtt has no shared subscriptions.
            settings = msgspec.structs.replace(settings, mqtt_url=mqtt_url, mqtt_shared_group="")
        async with open_database(settings.database_url) as db, db.session(write=True) as session:
            counts = await import_registry(session, reg)
            screen_tokens = await _screen_tokens(session, reg)
        log.info(
            "registry %s: %d created, %d updated, %d unchanged",
            registry_path,
            counts.created,
            counts.updated,
            counts.unchanged,
        )
        sites_dir = state_dir / "sites"
        sites_dir.mkdir(exist_ok=True)
        paths = []
        for name, site in site_configs(
            reg, settings.mqtt_url, settings.mqtt_prefix, state_dir, args.seed
        ).items():
            site["uplink"]["server_keys"] = [server_key]
            path = sites_dir / name
            text = yaml.safe_dump(site, allow_unicode=True, sort_keys=False)
            path.write_text(text)
            paths.append(path)

        gateways: asyncio.subprocess.Process | None = None

        async def started(url: str) -> None:
            nonlocal gateways
            cmd = [sys.executable, "-m", "gateway", "--log-level", "WARNING"]
            for path in paths:
                cmd += ["--config", str(path)]
            # start_new_session: the terminal's Ctrl-C reaches only us; we stop the child.
            gateways = await asyncio.create_subprocess_exec(
                *cmd, start_new_session=True, env=dict(os.environ)
            )
            token = f"#token={settings.admin_token}"
            screens = "".join(
                f"  Screen {sid}: {url.rstrip('/')}/screen/{sid}#token={tok}\n"
                for sid, tok in screen_tokens.items()
            )
            print(
                f"\n  Linli demo: {len(paths)} simulated gateways, "
                f"{sum(len(c.devices) for c in reg.communities)} devices\n"
                f"  Open {url}{token}\n  (English: {url}?lang=en{token})\n"
                "  The token is the operator's admin token for this run.\n"
                f"{screens}  Ctrl-C to stop.\n",
                flush=True,
            )

        async def stopping() -> None:
            if gateways is not None:
                await _stop_process(gateways)

        try:
            await serve(settings, stop, started=started, stopping=stopping)
        finally:
            await stopping()
    print("Linli demo stopped.", flush=True)
    return 0


async def _screen_tokens(session: AsyncSession, reg: RegistryFile) -> dict[str, str]:
    """A fresh token for each screen of the registry (the old ones stop): the demo prints
    each screen's address with it."""
    now = time.time_ns() // 1_000_000
    out: dict[str, str] = {}
    for sc in reg.screens:
        await session.execute(
            update(models.ScreenToken)
            .where(models.ScreenToken.screen_id == sc.id, models.ScreenToken.revoked_t.is_(None))
            .values(revoked_t=now)
        )
        token = make_screen_token()
        session.add(models.ScreenToken(sha256=token_digest(token), screen_id=sc.id, created_t=now))
        out[sc.id] = token
    return out

"""One gateway at run time: collectors ▸ disk queue ▸ edge rules and outputs ▸ uplink.

Every item a collector produces is committed to the disk queue first; only then do the edge
rules see it. What the rules decide (a voice warning, gates released on a fire alarm, an
inferred trapped passenger) happens here, on site, whether or not the uplink is up: outputs
are driven through the gateway's own lines and local broker, never through the server.

The server manages the gateway through the uplink connection:

* ``config`` (retained): a :class:`~gateway.site.RemoteConfig` with a ``config_version``. It
  is checked like a local file; a valid newer version is applied at once (edge thresholds,
  outputs, batching, the queue budget and the health interval in place; a change of
  collectors restarts the collectors, not the process), saved in the state directory so
  that it survives a restart, and acknowledged with its version. An invalid one is refused
  with the reasons and the running config is kept.
* ``cmd``: ``{"id", "op", "device"?, "expires"?, "sent"?}`` with ``op`` one of ``unlock``,
  ``lock``, ``voice_warning``, ``reread`` or ``ping``, answered on ``cmd/ack`` with
  ``{"id", "op", "ok", "result" | "error", "t"}``. ``sent`` (server time) gives the clock
  offset that the health item reports.

A health item (kind ``gateway``) goes through the queue every ``health_interval_s``.

Stopping: collectors are cancelled first (no new items), then the uplink drains what is
pending for up to ``drain_timeout`` seconds; what is left stays on disk for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final, Literal, TextIO, cast

import aiomqtt
import msgspec

from collectors.base import Collector
from collectors.framed import FramedCollector, FramedDevice
from collectors.local_mqtt import LocalMqttCollector, MqttDevice
from collectors.modbus import ModbusCollector, ModbusDevice
from collectors.mqtturl import parse_mqtt_url, tls_context
from collectors.profile import FramedProfile, ModbusProfile, MqttProfile, Profile
from collectors.signed import SignatureError, Verified, public_key_from_text, verify
from collectors.sim_collector import SimulatorCollector
from collectors.simulators import make_simulator
from collectors.tracker import DeviceTracker
from collectors.wire import (
    BUS_PREFIX,
    DEV_PREFIX,
    POLL_OK_PREFIX,
    Event,
    Item,
    Reading,
    WireError,
    decode_command,
    topic_for,
)
from collectors.yamlconf import ConfigError
from gateway.edge import Action, Decision, EdgeRules
from gateway.queue import DiskQueue
from gateway.site import (
    ModbusBusConfig,
    OutputConfig,
    SerialBusConfig,
    SimulatorConfig,
    SiteConfig,
    parse_remote,
)
from gateway.uplink import Uplink

__all__ = ["Gateway", "build_collectors"]

log = logging.getLogger(__name__)

_encode = msgspec.json.Encoder().encode
#: How often the edge rules look at the clock.
TICK_S = 0.5
#: The remote configuration last applied, kept in the state directory.
REMOTE_CONFIG_FILE = "remote-config.json"
#: Nonces of the commands acted on, kept until they expire (no replay across a restart).
NONCES_FILE = "command-nonces.json"
#: How far the gateway's clock may be behind the server's for a command's expiry.
CLOCK_SKEW_MS = 60_000
OUTPUT_TIMEOUT_S = 5.0


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _write_durably(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically, fsynced first: a crash leaves the old
    file or the new one, never half of either."""
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def _software() -> str:
    try:
        return "linli " + importlib.metadata.version("linli")
    except importlib.metadata.PackageNotFoundError:
        return "linli (source)"


def build_collectors(site: SiteConfig, profiles: Mapping[str, Profile]) -> list[Collector]:
    """The collectors a (checked) site config declares, with their profiles."""
    collectors: list[Collector] = []
    for i, conf in enumerate(site.collectors):
        if isinstance(conf, SimulatorConfig):
            # Each simulator's seed also depends on its position, so two collectors with the
            # same seed do not mirror each other.
            sims = [
                make_simulator(d.id, d.kind, conf.seed + i, floors=d.floors) for d in conf.devices
            ]
            collectors.append(SimulatorCollector(conf.name, sims))
        elif isinstance(conf, ModbusBusConfig):
            devices = [
                ModbusDevice(d.id, d.unit, cast(ModbusProfile, profiles[d.profile]))
                for d in conf.devices
            ]
            serial = conf.serial or devices[0].profile.serial
            collectors.append(ModbusCollector(conf.name, conf.port, serial, devices))
        elif isinstance(conf, SerialBusConfig):
            framed = cast(FramedProfile, profiles[conf.profile])
            collectors.append(
                FramedCollector(
                    conf.name,
                    conf.port,
                    conf.serial or framed.serial,
                    framed,
                    [FramedDevice(d.id, d.address) for d in conf.devices],
                )
            )
        else:
            mqtt_devices = [
                MqttDevice(d.id, cast(MqttProfile, profiles[d.profile]), str(d.address))
                for d in conf.devices
            ]
            client_id = f"linli-{site.community}-{site.gateway}-{conf.name}"
            collectors.append(
                LocalMqttCollector(conf.name, conf.url, mqtt_devices, client_id=client_id)
            )
    return collectors


#: A device's error counters in the health item (DeviceTracker.counts).
DEVICE_COUNTERS: Final = (
    "misses",
    "value_problems",
    "exceptions",
    "offline",
    "timeouts",
    "crc_errors",
    "retries",
)


def _trackers(collector: Collector) -> Iterable[DeviceTracker]:
    if isinstance(collector, ModbusCollector):
        return [d.tracker for d in collector.devices]
    if isinstance(collector, FramedCollector | LocalMqttCollector):
        return collector.session.trackers.values()
    return ()  # simulators have nothing to miss


class Gateway:
    """Runs one site's collectors, queue, edge rules and uplink until stopped."""

    def __init__(
        self,
        site: SiteConfig,
        *,
        profiles: Mapping[str, Profile] | None = None,
        record: TextIO | None = None,
    ) -> None:
        self.site = site
        self.profiles: Mapping[str, Profile] = profiles or {}
        self.state_dir = Path(site.state_dir)
        self.queue = DiskQueue(
            self.state_dir / "queue.sqlite3",
            gateway=site.gateway,
            community=site.community,
            budget_bytes=int(site.queue.budget_mb * 1024 * 1024),
            synchronous=site.queue.synchronous,
            legacy_seq_file=self.state_dir / "seq",
        )
        self.uplink = Uplink(site, self.queue, on_message=self._on_message)
        self.edge = EdgeRules(
            site.edge,
            site.device_kinds(self.profiles),
            site.self_reporting_lanes(self.profiles),
        )
        self.collectors: list[Collector] = []
        self.produced = 0
        self.clock_offset_ms: int | None = None
        self._record = record
        self._collector_tasks: list[asyncio.Task[None]] = []
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._poll_seen: dict[str, tuple[int, int]] = {}
        self._counters_logged: dict[str, int] = {}
        self._started = time.monotonic()
        self._failure: asyncio.Future[None] | None = None
        self._nonces: dict[str, int] = {}

    # --- items ---------------------------------------------------------------------

    async def _commit(self, item: Item) -> None:
        await self.queue.put(item)
        self.produced += 1
        if self._record is not None:
            # One JSON line per item once committed, so a test can count what the server holds.
            line = _encode(
                {"community": self.site.community, "gw": self.site.gateway, "item": item}
            )
            self._record.write(line.decode() + "\n")
            self._record.flush()

    async def _emit(self, item: Item) -> None:
        """A collector's item: committed first, then shown to the edge rules."""
        await self._commit(item)
        await self._decide(self.edge.observe(item, _now_ms()))

    async def _decide(self, decision: Decision) -> None:
        for item in decision.items:
            await self._commit(item)
        for action in decision.actions:
            self._spawn(self._act(action, by="edge"))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    # --- outputs -------------------------------------------------------------------

    def _output(self, device: str, action: str) -> OutputConfig | None:
        for out in self.site.outputs:
            if out.device == device and out.action == action:
                return out
        return None

    async def drive(self, action: Action) -> str | None:
        """Carry out an on-site action; ``None`` when done, else why it was not."""
        out = self._output(action.device, action.kind)
        if out is None:
            return f"no output is configured for {action.kind} on {action.device}"
        try:
            if out.mqtt is not None:
                addr = parse_mqtt_url(out.mqtt.url)
                async with (
                    asyncio.timeout(OUTPUT_TIMEOUT_S),
                    aiomqtt.Client(
                        addr.host,
                        addr.port,
                        username=addr.username,
                        password=addr.password,
                        tls_context=tls_context(addr),
                    ) as client,
                ):
                    await client.publish(out.mqtt.topic, out.mqtt.payload.encode(), qos=1)
                return None
        except (aiomqtt.MqttError, TimeoutError, OSError) as exc:
            return f"{action.kind} on {action.device}: {exc or type(exc).__name__}"
        assert out.modbus is not None
        for c in self.collectors:
            if isinstance(c, ModbusCollector) and c.name == out.modbus.collector:
                return await c.write_coil(out.modbus.unit, out.modbus.coil, out.modbus.value)
        return f"modbus collector {out.modbus.collector!r} is not running"

    async def _act(self, action: Action, *, by: str, cmd_id: str | None = None) -> str | None:
        error = await self.drive(action)
        if error is None:
            log.warning("on site: %s %s (%s)", action.kind, action.device, action.reason)
        else:
            log.error("on site: %s %s failed: %s", action.kind, action.device, error)
        data: dict[str, Any] = {"by": by, "reason": action.reason, "done": error is None}
        if error is not None:
            data["error"] = error
        if cmd_id is not None:
            data["cmd"] = cmd_id
        t = _now_ms()
        event: Item | None = None
        if action.kind == "voice_warning":
            event = Event(t, action.device, "fire_lane", "voice_warning", "instant", data)
        elif by == "edge":  # fire release and its end
            state: Literal["start", "end"] = "start" if action.kind == "unlock" else "end"
            event = Event(t, action.device, "gate", "fire_release", state, data)
        elif action.kind == "unlock":
            event = Event(t, action.device, "gate", "remote_open", "instant", data)
        if event is not None:
            await self._commit(event)
        return error

    # --- time ----------------------------------------------------------------------

    async def _tick_forever(self) -> None:
        while True:
            await self._decide(self.edge.tick(_now_ms()))
            await asyncio.sleep(TICK_S)

    async def _health_forever(self) -> None:
        while True:
            interval = self.site.health_interval_s
            if interval <= 0:
                await asyncio.sleep(5)
                continue
            await asyncio.sleep(interval)
            await self._commit(await self.health())

    async def health(self) -> Reading:
        """The health item: queue, disk, drops, poll success per device, clock, versions."""
        stats = await self.queue.stats()
        now = _now_ms()
        fields: dict[str, bool | int | float | str] = {
            "queue_depth": stats.depth,
            "oldest_unsent_s": round(max(0, now - stats.oldest_t) / 1000, 1)
            if stats.oldest_t is not None
            else 0.0,
            "disk_bytes": stats.disk_bytes,
            "budget_bytes": self.queue.budget_bytes,
            "thinned": stats.thinned,
            "reconnects": self.uplink.reconnects,
            "software": _software(),
            "config_version": self.site.config_version,
            "uptime_s": round(time.monotonic() - self._started, 1),
        }
        if self.clock_offset_ms is not None:
            fields["clock_offset_ms"] = self.clock_offset_ms
        ok = total = 0
        for collector in self.collectors:
            for tracker in _trackers(collector):
                good, missed = tracker.counts["samples"], tracker.counts["misses"]
                was_good, was_missed = self._poll_seen.get(tracker.dev, (0, 0))
                self._poll_seen[tracker.dev] = (good, missed)
                tries = (good - was_good) + (missed - was_missed)
                share = (good - was_good) / tries if tries else (0.0 if tracker.offline else 1.0)
                fields[POLL_OK_PREFIX + tracker.dev] = round(float(share), 3)
                total += 1
                ok += share == 1.0
        fields["devices"] = total
        fields["devices_ok"] = ok
        counters = self._counters()
        fields.update({name: n for name, n in counters.items() if n > 0})
        self._log_new_errors(counters)
        return Reading(now, self.site.gateway, "gateway", fields)

    def _counters(self) -> dict[str, int]:
        """Every line's and device's error counters (collectors/wire.py BUS_PREFIX)."""
        out: dict[str, int] = {}
        for collector in self.collectors:
            diagnostics = getattr(collector, "diagnostics", None)
            if diagnostics is not None:
                for counter, n in diagnostics().items():
                    out[f"{BUS_PREFIX}{collector.name}.{counter}"] = n
            for tracker in _trackers(collector):
                for counter in DEVICE_COUNTERS:
                    out[f"{DEV_PREFIX}{tracker.dev}.{counter}"] = tracker.counts[counter]
        return out

    def _log_new_errors(self, counters: dict[str, int]) -> None:
        """One WARNING line per line or device whose error counters grew since the last
        health item (so at most one a health interval each), naming what grew by how much."""
        grown: dict[str, list[str]] = {}
        for name, n in counters.items():
            was = self._counters_logged.get(name, 0)
            if n > was:
                owner, _, counter = name.rpartition(".")
                grown.setdefault(owner, []).append(f"{n - was} {counter.replace('_', ' ')}")
        self._counters_logged = counters
        for owner, what in grown.items():
            log.warning("%s: %s since the last health report", owner, ", ".join(what))

    # --- remote management ---------------------------------------------------------

    async def _on_message(self, topic: str, payload: bytes) -> None:
        if topic.endswith("/config"):
            if payload:  # an empty retained message clears it: nothing to apply
                await self.uplink.reply(_encode(await self.signed_config(topic, payload)))
        elif topic.endswith("/cmd"):
            await self.uplink.reply(_encode(await self.signed_command(topic, payload)))

    def _verify(self, topic: str, payload: bytes) -> Verified:
        keys = [public_key_from_text(k) for k in self.site.uplink.server_keys]
        return verify(payload, topic, keys, now=_now_ms(), skew_ms=CLOCK_SKEW_MS)

    async def signed_config(self, topic: str, payload: bytes) -> dict[str, Any]:
        """A config from the broker: applied only if the server signed it for this topic."""
        try:
            signed = self._verify(topic, payload)
        except SignatureError as exc:
            log.error("remote config on %s refused: %s", topic, exc)  # noqa: TRY400
            return {"type": "config", "ok": False, "version": None,
                    "running": self.site.config_version, "t": _now_ms(),
                    "error": f"refused: {exc}"}  # fmt: skip
        return await self.apply_config(signed.body, saved=payload)

    async def signed_command(self, topic: str, payload: bytes) -> dict[str, Any]:
        """A command from the broker: acted on only if the server signed it for this topic,
        it has not expired, and its nonce was never seen (remembered across restarts)."""
        now = _now_ms()
        try:
            signed = self._verify(topic, payload)
        except SignatureError as exc:
            # Unauthenticated: its id is not to be trusted, so the answer names none.
            log.error("command on %s refused: %s", topic, exc)  # noqa: TRY400
            return {"id": None, "ok": False, "error": f"refused: {exc}", "t": now}
        cmd_id = None
        with contextlib.suppress(msgspec.DecodeError, AttributeError):
            cmd_id = msgspec.json.decode(signed.body).get("id")
        problem = None
        if signed.expires is None:
            problem = "a command must carry an expiry"
        elif signed.nonce in self._nonces:
            problem = "replayed: this command was already received"
        if problem is not None:
            log.error("command %s on %s refused: %s", cmd_id, topic, problem)
            return {"id": cmd_id, "ok": False, "error": f"refused: {problem}", "t": now}
        assert signed.expires is not None
        self._nonces = {n: e for n, e in self._nonces.items() if e + CLOCK_SKEW_MS >= now}
        self._nonces[signed.nonce] = signed.expires
        await asyncio.to_thread(self._save_nonces)  # before acting: a crash cannot replay it
        return await self.command(signed.body)

    def _load_nonces(self) -> dict[str, int]:
        path = self.state_dir / NONCES_FILE
        try:
            return {str(k): int(v) for k, v in msgspec.json.decode(path.read_bytes()).items()}
        except FileNotFoundError:
            return {}
        except (msgspec.DecodeError, AttributeError, TypeError, ValueError) as exc:
            log.error("%s unreadable (%s): commands received before are forgotten", path, exc)  # noqa: TRY400
            return {}

    def _save_nonces(self) -> None:
        _write_durably(self.state_dir / NONCES_FILE, _encode(self._nonces))

    async def apply_config(self, payload: bytes, *, saved: bytes | None = None) -> dict[str, Any]:
        """Check and apply a remote config (its verified body); the ack to send (``ok``
        false keeps the old one). ``saved``: the signed message, kept for the next start."""
        running = self.site.config_version
        try:
            site = parse_remote(payload, self.site, self.profiles)
        except ConfigError as exc:
            log.error("remote config refused, keeping version %d:\n%s", running, exc)  # noqa: TRY400
            version = None
            with contextlib.suppress(msgspec.DecodeError, AttributeError):
                version = msgspec.json.decode(payload).get("config_version")
            return {"type": "config", "ok": False, "version": version, "running": running,
                    "error": str(exc), "t": _now_ms()}  # fmt: skip
        if site.config_version < running:
            older = f"version {site.config_version} is older than the running {running}"
            return {"type": "config", "ok": False, "version": site.config_version,
                    "running": running, "t": _now_ms(), "error": older}  # fmt: skip
        if site.config_version == running:
            return {"type": "config", "ok": True, "version": running, "running": running,
                    "result": "already running", "t": _now_ms()}  # fmt: skip
        notes = await self._switch(site)
        if saved is not None:
            await asyncio.to_thread(self._save_remote, saved)
        log.info("remote config version %d applied", site.config_version)
        return {"type": "config", "ok": True, "version": site.config_version,
                "running": site.config_version, "result": "; ".join(notes) or "applied",
                "t": _now_ms()}  # fmt: skip

    async def _switch(self, site: SiteConfig) -> list[str]:
        old, self.site = self.site, site
        notes: list[str] = []
        self.uplink.site = site
        self.edge.reconfigure(
            site.edge, site.device_kinds(self.profiles), site.self_reporting_lanes(self.profiles)
        )
        self.queue.budget_bytes = int(site.queue.budget_mb * 1024 * 1024)
        if site.queue.synchronous != old.queue.synchronous:
            notes.append("queue.synchronous applies at the next start")
        if site.collectors != old.collectors:
            await self._stop_collectors()
            self._start_collectors()
            notes.append("collectors restarted")
        return notes

    def _save_remote(self, payload: bytes) -> None:
        _write_durably(self.state_dir / REMOTE_CONFIG_FILE, payload)

    async def command(self, payload: bytes) -> dict[str, Any]:
        """Act on one command; the ack to send."""
        now = _now_ms()
        try:
            cmd = decode_command(payload)
        except WireError as exc:
            cmd_id = None
            with contextlib.suppress(msgspec.DecodeError, AttributeError):
                cmd_id = msgspec.json.decode(payload).get("id")
            return {"id": cmd_id, "ok": False, "error": f"not a command: {exc}", "t": now}
        if cmd.sent is not None:
            self.clock_offset_ms = cmd.sent - now  # server minus gateway, plus the latency
        reply: dict[str, Any] = {"id": cmd.id, "op": cmd.op, "t": now}
        if cmd.expires is not None and cmd.expires < now:
            return reply | {"ok": False, "error": f"expired {now - cmd.expires} ms ago"}
        if cmd.op == "ping":
            return reply | {"ok": True, "result": "pong"}
        kinds = self.site.device_kinds(self.profiles)
        if cmd.device is None or cmd.device not in kinds:
            return reply | {"ok": False, "error": f"no device {cmd.device!r} on this gateway"}
        if cmd.op == "reread":
            for c in self.collectors:
                if isinstance(c, ModbusCollector) and c.reread(cmd.device):
                    return reply | {"ok": True, "result": "polling now"}
            return reply | {"ok": False, "error": f"{cmd.device} pushes its data; nothing to poll"}
        wanted = "fire_lane" if cmd.op == "voice_warning" else "gate"
        if kinds[cmd.device] != wanted:
            mismatch = f"{cmd.op} is for a {wanted}; {cmd.device} is of kind {kinds[cmd.device]}"
            return reply | {"ok": False, "error": mismatch}
        error = await self._act(Action(cmd.op, cmd.device, "command"), by="cmd", cmd_id=cmd.id)
        if error is not None:
            return reply | {"ok": False, "error": error}
        return reply | {"ok": True, "result": "done"}

    # --- running -------------------------------------------------------------------

    def _start_collectors(self) -> None:
        self.collectors = build_collectors(self.site, self.profiles)
        self._collector_tasks = [
            asyncio.create_task(c.run(self._emit), name=f"collector-{self.site.community}-{c.name}")
            for c in self.collectors
        ]
        for task in self._collector_tasks:
            task.add_done_callback(self._collector_done)

    def _collector_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._failure is None or self._failure.done():
            return
        exc = task.exception()
        if exc is not None:
            self._failure.set_exception(exc)

    async def _stop_collectors(self) -> None:
        for task in self._collector_tasks:
            task.cancel()
        for task in self._collector_tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._collector_tasks = []

    async def _load_saved_config(self) -> None:
        path = self.state_dir / REMOTE_CONFIG_FILE
        if not path.exists():
            return
        payload = await asyncio.to_thread(path.read_bytes)
        topic = topic_for(self.site.uplink.prefix, self.site.community, self.site.gateway,
                          "config")  # fmt: skip
        try:
            signed = self._verify(topic, payload)
        except SignatureError as exc:
            log.error("the saved remote config %s is not applied: %s", path, exc)  # noqa: TRY400
            return
        reply = await self.apply_config(signed.body)
        if not reply["ok"]:
            log.error("the saved remote config %s no longer applies: %s", path, reply["error"])

    async def run(self, stop: asyncio.Event, *, drain_timeout: float = 10.0) -> None:
        """Run until ``stop`` is set, then stop collectors, drain the uplink, and return."""
        await self.queue.open()
        self._failure = asyncio.get_running_loop().create_future()
        where = f"{self.site.community}-{self.site.gateway}"
        self._nonces = await asyncio.to_thread(self._load_nonces)
        await self._load_saved_config()
        if self.queue.pending:
            log.info("%s: %d items waiting in the queue from before", where, self.queue.pending)
        uplink_task = asyncio.create_task(self.uplink.run(), name=f"uplink-{where}")
        background = [
            asyncio.create_task(self._tick_forever(), name=f"edge-{where}"),
            asyncio.create_task(self._health_forever(), name=f"health-{where}"),
        ]
        self._start_collectors()
        try:
            waits: list[asyncio.Future[Any]] = [
                asyncio.ensure_future(stop.wait()),
                uplink_task,
                self._failure,
                *background,
            ]
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            waits[0].cancel()
            for task in done:
                failure = None if task is waits[0] else task.exception()
                if failure is not None:
                    raise failure
        finally:
            await self._stop_collectors()
            for task in background:
                task.cancel()
            for side in list(self._side_tasks):
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    await asyncio.wait_for(side, OUTPUT_TIMEOUT_S)
            if self._record is not None:
                self._record.flush()
            if not uplink_task.done():
                try:
                    await asyncio.wait_for(self.uplink.drain(), drain_timeout)
                except TimeoutError:
                    log.warning(
                        "%s stopped with %d items queued on disk (sent at the next start)",
                        where,
                        self.uplink.unsent,
                    )
                uplink_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await uplink_task
            await self.queue.close()

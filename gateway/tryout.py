"""``linli firmware try PROFILE --input FILE``: decode a capture with a profile, offline.

Before a profile meets a site, check it against what the device really sends: a Modbus
register dump, a serial line capture, or JSON messages. The capture goes through the same
decoders and the same per-device tracker the gateway runs, and every item the gateway would
send is printed as one JSON line; problems (values the profile cannot map, bad checksums,
stray bytes) are printed to stderr with counts. Capture formats (``#`` starts a comment):

Modbus (``modbus_rtu``): one poll per paragraph (paragraphs are separated by a blank line);
each line sets registers from an address, as hex words::

    0x0010: 0726 0002 0010 AFC8 0000 1170 0001
    input 0x0000: 0001                 # another table: holding (default), input, coil, discrete

Coils and discrete inputs take 0/1 values instead of words.

Framed serial (``framed_serial``): the bytes of the line as hex, in any layout (``AA 55 01``,
``aa5501``); a blank line is a pause on the line (a torn frame is dropped there).

MQTT (``mqtt``): one message per line, the topic then the JSON payload::

    aibox/box-01/firelane {"ts": 1795300000123, "zone": "A", "occupied": true}

Each poll, frame or message is stamped one ``report_interval_s`` after the one before,
starting at ``--t0`` (epoch ms), so heartbeats and offline rules behave as on a site.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from collectors.decode import FrameDecoder, ModbusPlan, MqttDecoder, pack_bits
from collectors.framed import line_counters
from collectors.framing import FrameParser
from collectors.local_mqtt import MqttDevice, MqttSession
from collectors.profile import (
    FramedProfile,
    ModbusProfile,
    MqttProfile,
    Profile,
    profile_deadbands,
)
from collectors.tracker import DeviceTracker
from collectors.wire import Item
from collectors.yamlconf import ConfigError, read_text

__all__ = ["TryResult", "try_capture"]

_LINE = re.compile(
    r"^(?:(?P<table>holding|input|coil|discrete)\s+)?(?P<addr>0[xX][0-9A-Fa-f]+|\d+)\s*:\s*"
    r"(?P<values>.*)$"
)
_encoder = msgspec.json.Encoder()


@dataclass
class TryResult:
    """What a capture became: the items, the problems the decoders noted, and counts."""

    items: list[Item] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def lines(self) -> Iterator[str]:
        """The items as the gateway would put them in an envelope, one JSON object a line."""
        for item in self.items:
            yield _encoder.encode(item).decode()


def _paragraphs(text: str) -> list[list[tuple[int, str]]]:
    out: list[list[tuple[int, str]]] = [[]]
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            if out[-1]:
                out.append([])
            continue
        out[-1].append((n, line))
    return [p for p in out if p]


def _modbus(profile: ModbusProfile, text: str, source: str, t0: int) -> TryResult:
    plan = ModbusPlan(profile)
    tracker = DeviceTracker("dev", profile.kind, heartbeat_ms=int(profile.heartbeat_s * 1000),
                            deadbands=profile_deadbands(profile))  # fmt: skip
    result = TryResult()
    step = int(profile.report_interval_s * 1000)
    for poll, paragraph in enumerate(_paragraphs(text)):
        memory: dict[tuple[str, int], int] = {}
        for n, line in paragraph:
            m = _LINE.match(line)
            if m is None:
                raise ConfigError.one(source, n, "", "write a line as 'ADDRESS: WORD WORD …' "
                                      "(e.g. '0x0010: 0726 0002'), optionally after a table "
                                      "name (holding, input, coil, discrete)")  # fmt: skip
            table = m.group("table") or "holding"
            address = int(m.group("addr"), 0)
            for i, word in enumerate(m.group("values").split()):
                try:
                    value = int(word, 16) if table in ("holding", "input") else int(word)
                except ValueError:
                    raise ConfigError.one(source, n, "", f"{word!r} is not a hex word") from None
                bits = table in ("coil", "discrete")
                if not (0 <= value <= (1 if bits else 0xFFFF)):
                    what = "0 or 1" if bits else "a 16-bit word (0000..FFFF)"
                    raise ConfigError.one(source, n, "", f"{word!r} is not {what}")
                memory[table, address + i] = value
        blocks: list[bytes] = []
        missing: list[str] = []
        for read in plan.reads:
            values = [memory.get((read.table, read.address + i)) for i in range(read.count)]
            if None in values:
                first = values.index(None)
                missing.append(f"{read.table} {read.address + first:#06x}")
            filled = [v or 0 for v in values]
            if read.table in ("coil", "discrete"):
                blocks.append(pack_bits([bool(v) for v in filled]))
            else:
                blocks.append(ModbusPlan.registers_to_bytes(filled))
        if missing:
            reason = (f"poll {poll + 1} lacks {', '.join(missing)} (the profile reads them; "
                      "give every register it reads)")  # fmt: skip
            raise ConfigError.one(source, paragraph[0][0], "", reason)
        sample = plan.decode(blocks)
        result.problems += [f"poll {poll + 1}: {p}" for p in sample.problems]
        result.items += tracker.sample(t0 + poll * step, sample)
    result.counts = {"polls": len(_paragraphs(text)), **dict(tracker.counts)}
    return result


def _framed(profile: FramedProfile, text: str, source: str, t0: int) -> TryResult:
    parser = FrameParser(profile.frame)
    decoder = FrameDecoder(profile)
    trackers: dict[int | None, DeviceTracker] = {}
    result = TryResult()
    step = int(profile.report_interval_s * 1000)
    frames = 0
    unknown: Counter[str] = Counter()  # FramedSession.counts, as the line counters read them
    for chunk in _paragraphs(text):
        hexes = "".join(line for _n, line in chunk).replace(" ", "").replace(":", "")
        try:
            data = bytes.fromhex(hexes)
        except ValueError:
            reason = "not hex bytes (write 'AA 55 01 …')"
            raise ConfigError.one(source, chunk[0][0], "", reason) from None
        parser.feed(data)
        while (parsed := parser.next_frame()) is not None:
            decoded = decoder.decode(parsed.data)
            if decoded is None:
                unknown["unknown_message"] += 1
                result.problems.append(f"frame {parsed.data.hex(' ')}: no message matches it")
                continue
            address, name, sample = decoded
            tracker = trackers.setdefault(address, DeviceTracker(
                f"dev@{address}" if address is not None else "dev", profile.kind,
                heartbeat_ms=int(profile.heartbeat_s * 1000),
                deadbands=profile_deadbands(profile)))  # fmt: skip
            result.problems += [f"{name} frame {frames + 1}: {p}" for p in sample.problems]
            result.items += tracker.sample(t0 + frames * step, sample)
            frames += 1
        parser.idle()  # a pause on the line: a half frame is torn there
    result.counts = line_counters(parser.counts, unknown)
    return result


def _mqtt(profile: MqttProfile, text: str, source: str, t0: int) -> TryResult:
    result = TryResult()
    step = int(profile.report_interval_s * 1000)
    sessions: dict[str, MqttSession] = {}
    decoder = MqttDecoder(profile)
    n_msg = 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        topic, _, payload = line.partition(" ")
        if not payload.strip():
            raise ConfigError.one(source, n, "", "write 'TOPIC {json}' on each line")
        # The address is found per message: one device per address, as on a site.
        found = decoder.decode(topic, payload.strip().encode())
        if found is None:
            result.problems.append(f"line {n}: topic {topic!r} matches no pattern of the profile")
            continue
        if isinstance(found, str):
            result.problems.append(f"line {n}: refused: {found}")
            continue
        session = sessions.get(found.address)
        if session is None:
            device = MqttDevice(f"dev@{found.address}", profile, found.address)
            session = sessions[found.address] = MqttSession([device], started_t=t0)
        result.problems += [f"line {n}: {p}" for p in found.sample.problems]
        result.items += session.handle(t0 + n_msg * step, topic, payload.strip().encode())
        n_msg += 1
    result.counts = {"messages": n_msg, "devices": len(sessions)}
    return result


def try_capture(profile: Profile, capture: Path, *, t0: int) -> TryResult:
    """Decode ``capture`` with ``profile``; ConfigError for a capture in the wrong shape."""
    text = read_text(capture)
    if isinstance(profile, ModbusProfile):
        return _modbus(profile, text, str(capture), t0)
    if isinstance(profile, FramedProfile):
        return _framed(profile, text, str(capture), t0)
    return _mqtt(profile, text, str(capture), t0)


def as_json(result: TryResult) -> dict[str, Any]:
    """The whole result as one JSON object (for scripts)."""
    return {"items": [json.loads(line) for line in result.lines()],
            "problems": result.problems, "counts": result.counts}  # fmt: skip

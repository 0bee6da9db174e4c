"""One full poll cycle of 32 Modbus devices on one 9600-baud bus, against the physical
floor: the time the cycle's bytes need on the wire (issue 3). Aim: 1.5x or better.

    .venv/bin/python bench/modbus_cycle.py

Setup: the collector (this process) ⇄ pty pair 1 ⇄ a wire emulator ⇄ pty pair 2 ⇄ pymodbus's
own server with 32 units (a child process). ptys move bytes instantly, so the emulator (a
second child process) makes them take their real time: a half-duplex RS-485 line at 9600
baud, 10 bits per character (8N1; ptys refuse parity), one direction at a time; each chunk
arrives when its last character would have. Floor = bytes on the wire × 10 bits / 9600 for
one cycle (counted by the bus session, both directions). The measured cycle includes what
a real line adds on top: the 3.5-character silent interval before each request (Modbus over
Serial Line §2.5.1.1), the device's turnaround, and our software.

The same cycle is also run without the emulator (instant ptys) to show the software's share.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from collectors.modbus import ModbusBus, ModbusCollector, ModbusDevice  # noqa: E402
from collectors.profile import ModbusProfile, SerialSettings, load_profile  # noqa: E402

UNITS = 32
BAUD = 9600
BITS_PER_CHAR = 10
CYCLES = 5


def pty_pair(tmp: Path, name: str) -> tuple[str, str, subprocess.Popen[bytes]]:
    a, b = tmp / f"{name}-a", tmp / f"{name}-b"
    proc = subprocess.Popen(["socat", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"])
    while not (a.exists() and b.exists()):
        time.sleep(0.01)
    return str(a), str(b), proc


async def serve(port: str) -> None:
    """Child: pymodbus's server with UNITS elevator terminals."""
    from pymodbus.server import ModbusSerialServer  # noqa: PLC0415
    from pymodbus.simulator import DataType, SimData, SimDevice  # noqa: PLC0415

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    devices = [
        SimDevice(id=u, simdata=[SimData(0, count=16, values=u, datatype=DataType.REGISTERS)])
        for u in range(1, UNITS + 1)
    ]
    server = ModbusSerialServer(devices, port=port, baudrate=BAUD)
    await server.serve_forever()


async def relay(left: str, right: str) -> None:
    """Child: the wire emulator between two ptys (see the module docstring)."""
    import serial  # noqa: PLC0415

    loop = asyncio.get_running_loop()
    char_s = BITS_PER_CHAR / BAUD
    busy_until = 0.0
    ports = [serial.Serial(p, baudrate=BAUD, timeout=0) for p in (left, right)]

    def forward(src: int) -> None:
        nonlocal busy_until
        data = ports[src].read(4096)
        if not data:
            return
        start = max(loop.time(), busy_until)
        busy_until = start + len(data) * char_s
        loop.call_at(busy_until, ports[1 - src].write, data)

    for i, port in enumerate(ports):
        loop.add_reader(port.fileno(), functools.partial(forward, i))
    await asyncio.Event().wait()


async def cycle_time(port: str, profile: ModbusProfile, line: SerialSettings) -> tuple[float, int]:
    devices = [ModbusDevice(f"el-{u}", u, profile) for u in range(1, UNITS + 1)]
    collector = ModbusCollector("bench", port, line, devices)
    async with ModbusBus(port, line, max_timeout_s=profile.timeout_ms / 1000) as bus:
        for polled in collector.devices:  # warm up: first contact, imports, caches
            await collector.poll(bus, polled)
        best = float("inf")
        bytes_per_cycle = 0
        for _ in range(CYCLES):
            before = bus.counts["tx_bytes"] + bus.counts["rx_bytes"]
            t0 = time.perf_counter()
            for polled in collector.devices:
                await collector.poll(bus, polled)
            best = min(best, time.perf_counter() - t0)
            bytes_per_cycle = bus.counts["tx_bytes"] + bus.counts["rx_bytes"] - before
        assert collector.counts["ok"] >= UNITS * (CYCLES + 1), collector.counts
        return best, bytes_per_cycle


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        asyncio.run(serve(sys.argv[2]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--relay":
        asyncio.run(relay(sys.argv[2], sys.argv[3]))
        return
    profile = load_profile(ROOT / "firmware_configs" / "elevator" / "hx-em100.yaml")
    assert isinstance(profile, ModbusProfile)
    line = SerialSettings(baudrate=BAUD, parity="N")
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        try:
            # Emulated wire: collector ⇄ (c1, c2) ⇄ relay ⇄ (d1, d2) ⇄ server
            c1, c2, p = pty_pair(tmp, "c")
            procs.append(p)
            d1, d2, p = pty_pair(tmp, "d")
            procs.append(p)
            me = [sys.executable, __file__]
            procs.append(subprocess.Popen([*me, "--serve", d2]))
            procs.append(subprocess.Popen([*me, "--relay", c2, d1]))
            # Instant ptys: collector ⇄ (i1, i2) ⇄ server
            i1, i2, p = pty_pair(tmp, "i")
            procs.append(p)
            procs.append(subprocess.Popen([*me, "--serve", i2]))
            time.sleep(1.5)
            wire_s, nbytes = asyncio.run(cycle_time(c1, profile, line))
            instant_s, _ = asyncio.run(cycle_time(i1, profile, line))
        finally:
            for proc in reversed(procs):
                proc.terminate()
                proc.wait(timeout=10)
    floor_s = nbytes * BITS_PER_CHAR / BAUD
    gap_s = 3.5 * BITS_PER_CHAR / BAUD
    print(f"# Modbus poll cycle: {UNITS} units x 11 registers, {BAUD} baud 8N1, best of {CYCLES}")
    print(f"bytes on the wire per cycle: {nbytes} ({nbytes // UNITS} per poll)")
    print(f"physical floor (bytes only): {floor_s * 1000:.0f} ms")
    print(f"  + silent intervals (t3.5 per request, by the spec): {UNITS * gap_s * 1000:.0f} ms")
    print(f"measured cycle through the emulated wire: {wire_s * 1000:.0f} ms")
    print(f"ratio measured / floor: {wire_s / floor_s:.2f}x (aim <= 1.5x)")
    print(
        f"same cycle on instant ptys (software + turnaround only): {instant_s * 1000:.0f} ms"
        f" = {instant_s / UNITS * 1000:.2f} ms per poll"
    )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()

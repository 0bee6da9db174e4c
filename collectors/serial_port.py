"""A serial port for asyncio: pyserial opens and configures it, the event loop watches its fd.

pyserial is blocking; it is wrapped here once (STYLE 17): the port is opened non-blocking
(``timeout=0``) and the loop's reader callback moves whatever arrived into a queue, so a
collector awaits :meth:`SerialPort.read` like any other stream. POSIX only, as the gateways
are Linux boxes.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

import serial

from collectors.errors import PortError
from collectors.profile import SerialSettings

__all__ = ["SerialPort"]

_CHUNK: Final = 4096
#: Chunks held before the reader pauses; a collector that falls this far behind has a bug.
_MAX_CHUNKS: Final = 1024


class SerialPort:
    """One open serial line: ``async with SerialPort(path, settings) as port``."""

    def __init__(self, path: str, settings: SerialSettings) -> None:
        self.path = path
        self.settings = settings
        self._serial: Any = None
        self._chunks: asyncio.Queue[bytes | None] = asyncio.Queue(_MAX_CHUNKS)

    async def __aenter__(self) -> SerialPort:
        s = self.settings
        try:
            self._serial = serial.Serial(
                self.path,
                baudrate=s.baudrate,
                bytesize=s.bytesize,
                parity=s.parity,
                stopbits=s.stopbits,
                timeout=0,
                write_timeout=0,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise PortError(self.path, f"cannot open: {exc}") from exc
        asyncio.get_running_loop().add_reader(self._serial.fileno(), self._readable)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._serial is not None:
            asyncio.get_running_loop().remove_reader(self._serial.fileno())
            self._serial.close()
            self._serial = None

    def _readable(self) -> None:
        try:
            data: bytes = self._serial.read(_CHUNK)
        except (serial.SerialException, OSError):
            data = b""
        if not data:
            # Readable with nothing to read: the other end went away (pty closed, USB pulled).
            asyncio.get_running_loop().remove_reader(self._serial.fileno())
            self._put(None)
            return
        self._put(data)

    def _put(self, data: bytes | None) -> None:
        if self._chunks.full():
            self._chunks.get_nowait()  # drop the oldest; the parser resynchronises
        self._chunks.put_nowait(data)

    async def read(self) -> bytes:
        """The next bytes from the line; PortError when the port is gone."""
        data = await self._chunks.get()
        if data is None:
            raise PortError(self.path, "the serial port was closed or lost")
        return data

    def write(self, data: bytes) -> None:
        """Queue bytes for the line (commands to a device)."""
        try:
            self._serial.write(data)
        except (serial.SerialException, OSError) as exc:
            raise PortError(self.path, f"write failed: {exc}") from exc

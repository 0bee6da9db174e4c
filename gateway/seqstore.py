"""The gateway's envelope sequence number, persisted so that it never repeats (DESIGN.md).

The next number is written to ``<state_dir>/seq`` (write, fsync, rename) *before* the
envelope that carries it is published. A crash can therefore skip numbers (the server counts
a gap) but never reuse one (which the server would drop as a duplicate).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

__all__ = ["SeqStore", "SeqStoreError"]


class SeqStoreError(Exception):
    """The sequence file cannot be read or written; names the file and why."""


class SeqStore:
    """Allocates envelope sequence numbers from a small durable file."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._next = self._read()

    def _read(self) -> int:
        try:
            text = self._path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise SeqStoreError(f"{self._path}: cannot read: {exc.strerror}") from exc
        if not text.isdigit():
            raise SeqStoreError(f"{self._path}: holds {text[:20]!r}, not a sequence number")
        return int(text)

    def _write(self, value: int) -> None:
        tmp = self._path.with_suffix(".tmp")
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            with tmp.open("w", encoding="ascii") as f:
                f.write(f"{value}\n")
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(self._path)
        except OSError as exc:
            raise SeqStoreError(f"{self._path}: cannot write: {exc.strerror}") from exc

    @property
    def next(self) -> int:
        """The number the next allocation returns."""
        return self._next

    async def allocate(self) -> int:
        """Durably reserve and return the next number."""
        value = self._next
        # fsync blocks; it runs in a thread so that collectors keep reading meanwhile.
        await asyncio.to_thread(self._write, value + 1)
        self._next = value + 1
        return value

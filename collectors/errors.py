"""Errors of the collectors.

::

    CollectorError              a collector cannot do its work (it is restarted by its runner)
    └── PortError               a serial port or local broker cannot be opened or was lost
                                (fields: port, reason)

Device-level trouble (a timeout, a CRC error, an exception response, a garbled frame, a JSON
payload of the wrong shape) is not an exception: it is counted in the collector's ``counts``
and, when it persists, reported as the device's offline event. Profile and site problems are
:class:`collectors.yamlconf.ConfigError`.
"""

from __future__ import annotations

__all__ = ["CollectorError", "PortError"]


class CollectorError(Exception):
    """A collector cannot do its work."""


class PortError(CollectorError):
    """A serial port or a local broker that cannot be used."""

    def __init__(self, port: str, reason: str) -> None:
        super().__init__(f"{port}: {reason}")
        self.port = port
        self.reason = reason

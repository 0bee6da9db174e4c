"""Telemetry storage behind one interface: the embedded SQLite store now, InfluxDB in issue 6.

Public names: :class:`TelemetryWriter` (the interface ingest writes through) and
:class:`server.telemetry.sqlite_store.SqliteTelemetryStore` (the embedded store).
"""

from server.telemetry.base import TelemetryWriteError, TelemetryWriter

__all__ = ["TelemetryWriteError", "TelemetryWriter"]

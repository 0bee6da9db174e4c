"""Telemetry storage behind one interface: the embedded SQLite store and InfluxDB.

Public names: :class:`TelemetryWriter` (the interface ingest writes through),
:class:`TeeWriter` (several stores at once),
:class:`server.telemetry.sqlite_store.SqliteTelemetryStore` (the embedded store) and
:class:`server.telemetry.influx.InfluxWriter`.
"""

from server.telemetry.base import TeeWriter, TelemetryWriteError, TelemetryWriter

__all__ = ["TeeWriter", "TelemetryWriteError", "TelemetryWriter"]

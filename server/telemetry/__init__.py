"""Telemetry: storage behind one interface (the embedded SQLite store and InfluxDB), the
figures computed over it, and the telemetry query API (``api.py``, the only module here that
sits above storage: it answers HTTP). The stores import nothing of the server's.

Public names: :class:`TelemetryWriter` (the interface ingest writes through),
:class:`server.telemetry.sqlite_store.SqliteTelemetryStore` (the embedded store) and
:class:`server.telemetry.influx.InfluxWriter`.
"""

from server.telemetry.base import TelemetryWriteError, TelemetryWriter

__all__ = ["TelemetryWriteError", "TelemetryWriter"]

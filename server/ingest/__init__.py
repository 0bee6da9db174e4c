"""Ingest: the MQTT session runner, the uplink pipeline (decode ▸ registry ▸ seq ▸ state ▸
telemetry) and sequence tracking. Imports the store, telemetry, the live state and settings;
never the HTTP handlers, alerting or gateway management above it."""

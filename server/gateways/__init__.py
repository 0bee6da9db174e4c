"""Gateway management: the MQTT link that publishes configs and commands and records the
gateways' answers, its HTTP API, and the ``linli gateways`` CLI. The link imports the store,
settings and the ingest session runner; the API and CLI sit above it."""

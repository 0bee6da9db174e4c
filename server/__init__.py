"""The central server: MQTT ingest, telemetry, registry, REST API and live screens.

Public names: :func:`server.app.create_app`, :func:`server.cli.main` (the ``linli``
command), :class:`server.ingest.pipeline.Ingest`, :func:`server.store.registry.load_registry`.
"""

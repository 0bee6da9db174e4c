"""Alerting: the alert service (drives the pure :mod:`alerts` package, keeps alerts, timers
and the outbox), the notifier and its channels, and the per-organisation alert API. The
service and notifier import only the store; the API sits above them with the other handlers."""

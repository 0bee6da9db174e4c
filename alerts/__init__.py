"""Safety-alert decision logic, pure (no I/O, the clock passed in): issue 5.

* :mod:`alerts.rules`: readings, events and gateway statuses in, signals out.
* :mod:`alerts.lifecycle`: one alert per (device, rule), its states and timeline, flapping.
* :mod:`alerts.routing`: which organisations, from the registry on the day of the event.
* :mod:`alerts.ladders`: escalation ladders as data (``alerts/ladders.yaml``).

The server (persistence, timers, notification) does not drive these yet: see docs/alerts.md.
"""

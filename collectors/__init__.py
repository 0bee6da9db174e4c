"""Device collectors: each turns what a source says into typed readings and events.

Public names: :mod:`collectors.wire` (the uplink contract), :class:`collectors.base.Collector`,
:mod:`collectors.simulators` and :class:`collectors.sim_collector.SimulatorCollector`.
Modbus RTU, framed-serial and local-MQTT collectors arrive with issue 3.
"""

"""Line protocol of a gateway health item: its declared fields, poll shares and counters."""

from __future__ import annotations

from collectors.wire import Reading
from server.telemetry.lineproto import encode_item

T = 1_795_300_000_000


def test_health_counters_are_integers_and_shares_floats() -> None:
    health = Reading(T, "gw-1", "gateway", {
        "queue_depth": 3, "poll_ok.fl-1": 0.5, "bus.rs485-2.checksum_errors": 7,
        "dev.fl-1.misses": 2})  # fmt: skip
    line = encode_item("meihuayuan", "gw-1", health)
    assert line is not None
    head, fields, t = line.split(" ")
    assert head == "gateway,community=meihuayuan,gateway=gw-1,device=gw-1"
    assert sorted(fields.split(",")) == ["bus.rs485-2.checksum_errors=7i",
                                         "dev.fl-1.misses=2i", "poll_ok.fl-1=0.5",
                                         "queue_depth=3i"]  # fmt: skip
    assert t == str(T)

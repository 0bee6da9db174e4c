"""Broker addresses as users write them: ``mqtt://[user:pass@]host[:port]``.

Shared by the server, the gateway's uplink and the local-MQTT collector.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

__all__ = ["MqttAddress", "parse_mqtt_url"]


@dataclass(frozen=True)
class MqttAddress:
    """Where a broker is and how to log in."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None


def parse_mqtt_url(url: str) -> MqttAddress:
    """Parse a broker URL; raise ValueError naming what is wrong."""
    parts = urlsplit(url)
    if parts.scheme not in {"mqtt", "tcp"}:
        raise ValueError(f"MQTT URL {url!r} must start with mqtt://")
    if not parts.hostname:
        raise ValueError(f"MQTT URL {url!r} has no host")
    try:
        port = parts.port or 1883
    except ValueError as exc:
        raise ValueError(f"MQTT URL {url!r} has an invalid port") from exc
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return MqttAddress(parts.hostname, port, user, password)

"""Broker addresses as users write them: ``mqtt://[user:pass@]host[:port]``, or with TLS
``mqtts://[user:pass@]host[:port][?ca=FILE][&cert=FILE&key=FILE]``.

Shared by the server, the gateway's uplink and outputs, and the local-MQTT collector. With
``mqtts`` (default port 8883) the broker's certificate is verified, host name included,
against ``ca`` (a PEM file of the CA that signed it; without it, the system's CAs), and
``cert``/``key`` present a client certificate where the broker asks for one.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["MqttAddress", "parse_mqtt_url", "tls_context"]


@dataclass(frozen=True)
class MqttAddress:
    """Where a broker is, how to log in, and how to check it is the one."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


def parse_mqtt_url(url: str) -> MqttAddress:
    """Parse a broker URL; raise ValueError naming what is wrong (a TLS file that cannot
    be read included, so that what is checked here also connects)."""
    parts = urlsplit(url)
    if parts.scheme not in {"mqtt", "tcp", "mqtts", "ssl"}:
        raise ValueError(f"MQTT URL {url!r} must start with mqtt:// or mqtts://")
    if not parts.hostname:
        raise ValueError(f"MQTT URL {url!r} has no host")
    tls = parts.scheme in {"mqtts", "ssl"}
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError as exc:
        raise ValueError(f"MQTT URL {url!r} has an invalid port") from exc
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = set(query) - {"ca", "cert", "key"}
    if unknown:
        raise ValueError(f"MQTT URL {url!r}: unknown option {sorted(unknown)[0]!r} (ca, cert, key)")
    if query and not tls:
        raise ValueError(f"MQTT URL {url!r}: ca, cert and key need mqtts://")
    files = {name: query[name][-1] for name in ("ca", "cert", "key") if name in query}
    if ("cert" in files) != ("key" in files):
        raise ValueError(f"MQTT URL {url!r}: a client certificate needs both cert and key")
    for name, path in files.items():
        if not Path(path).is_file():
            raise ValueError(f"MQTT URL {url!r}: {name} file {path!r} cannot be read")
    return MqttAddress(parts.hostname, port, user, password, tls,
                       files.get("ca"), files.get("cert"), files.get("key"))  # fmt: skip


def tls_context(addr: MqttAddress) -> ssl.SSLContext | None:
    """The TLS context for ``addr`` (None without TLS): the broker's certificate and host
    name verified against its CA; the client certificate if one is given."""
    if not addr.tls:
        return None
    context = ssl.create_default_context(cafile=addr.ca_file)
    if addr.cert_file is not None and addr.key_file is not None:
        context.load_cert_chain(addr.cert_file, addr.key_file)
    return context

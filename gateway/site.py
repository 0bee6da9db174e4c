"""The gateway's site config (YAML): identity, uplink, batching and collectors.

Validated once at load (:func:`collectors.yamlconf.load_yaml`); errors name file, line and
key. Issue 4 adds serial buses, the local broker and edge-rule settings.

Example::

    version: 1
    gateway: gw-1
    community: meihuayuan
    state_dir: /var/lib/linli/gw-1
    uplink: {url: "mqtt://broker.example:1883", prefix: linli/v1}
    collectors:
      - type: simulator
        seed: 7
        devices:
          - {id: el-1-1, kind: elevator, floors: 18}
          - {id: fl-1, kind: fire_lane}
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import msgspec

from collectors.wire import DEFAULT_TOPIC_PREFIX, ID_PATTERN, DeviceKind
from collectors.yamlconf import load_yaml

__all__ = [
    "BatchConfig",
    "SimDeviceConfig",
    "SimulatorConfig",
    "SiteConfig",
    "UplinkConfig",
    "load_site",
]


class _Conf(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    pass


class UplinkConfig(_Conf, frozen=True):
    """The central broker: ``mqtt://[user:pass@]host[:port]`` and the topic prefix."""

    url: str
    prefix: str = DEFAULT_TOPIC_PREFIX


class BatchConfig(_Conf, frozen=True):
    """Bounds of one uplink batch; events never wait for a batch to fill."""

    max_items: int = 500
    max_bytes: int = 128 * 1024
    max_age_ms: int = 1000


class SimDeviceConfig(_Conf, frozen=True):
    """One simulated device."""

    id: str
    kind: DeviceKind
    floors: int = 18


class SimulatorConfig(_Conf, frozen=True, tag="simulator", tag_field="type"):
    """A collector of simulated devices (collectors.simulators)."""

    devices: list[SimDeviceConfig]
    name: str = "simulator"
    seed: int = 0


CollectorConfig = SimulatorConfig


class SiteConfig(_Conf, frozen=True):
    """Everything one gateway needs to run."""

    version: Literal[1]
    gateway: str
    community: str
    uplink: UplinkConfig
    state_dir: str
    collectors: list[CollectorConfig]
    batch: BatchConfig = BatchConfig()


def _check(site: SiteConfig) -> Iterator[tuple[str, str]]:
    for name in ("gateway", "community"):
        if not ID_PATTERN.match(getattr(site, name)):
            yield name, f"{getattr(site, name)!r} is not a slug like 'gw-1'"
    if not site.uplink.url.startswith(("mqtt://", "tcp://")):
        yield "uplink.url", f"{site.uplink.url!r} must start with mqtt://"
    b = site.batch
    if b.max_items < 1 or b.max_bytes < 1024 or b.max_age_ms < 0:
        yield "batch", "max_items >= 1, max_bytes >= 1024 and max_age_ms >= 0 are required"
    seen: set[str] = set()
    for i, col in enumerate(site.collectors):
        for j, dev in enumerate(col.devices):
            path = f"collectors[{i}].devices[{j}]"
            if not ID_PATTERN.match(dev.id):
                yield f"{path}.id", f"{dev.id!r} is not a slug like 'el-1-1'"
            if dev.id in seen:
                yield f"{path}.id", f"device {dev.id!r} appears twice on this gateway"
            seen.add(dev.id)
            if dev.kind == "fire_panel":
                yield f"{path}.kind", "there is no simulator for fire_panel devices"


def load_site(path: Path) -> SiteConfig:
    """Load and check a site config; raise ConfigError listing every problem."""
    return load_yaml(path, SiteConfig, check=_check)

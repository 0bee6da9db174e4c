"""The gateway's site config (YAML): identity, uplink, batching, and its collectors.

Validated once at load (:func:`collectors.yamlconf.load_yaml`); errors name file, line and
key, including references to device profiles that do not exist or speak another protocol.
Issue 4 adds credentials, edge-rule settings and remote configuration.

Example (firmware_configs/sites/example.yaml is a complete one)::

    version: 1
    gateway: gw-1
    community: meihuayuan
    state_dir: /var/lib/linli/gw-1
    uplink: {url: "mqtt://broker.example:1883", prefix: linli/v1}
    profile_dirs: [/etc/linli/firmware_configs]
    collectors:
      - type: modbus
        name: rs485-1
        port: /dev/ttyUSB0
        devices:
          - {id: el-1-1, unit: 1, profile: hx-em100}
      - type: serial
        name: rs485-2
        port: /dev/ttyUSB1
        profile: lk-fl200
        devices: [{id: fl-1, address: 1}]
      - type: mqtt
        name: aibox
        url: mqtt://127.0.0.1:1883
        devices: [{id: fl-2, profile: aibox-lane, address: B}]
      - type: simulator
        seed: 7
        devices:
          - {id: el-9-1, kind: elevator, floors: 18}
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Literal

import msgspec

from collectors.mqtturl import parse_mqtt_url
from collectors.profile import (
    FramedProfile,
    ModbusProfile,
    Profile,
    SerialSettings,
    load_profiles,
)
from collectors.wire import DEFAULT_TOPIC_PREFIX, ID_PATTERN, DeviceKind
from collectors.yamlconf import load_yaml

__all__ = [
    "BatchConfig",
    "LocalMqttConfig",
    "ModbusBusConfig",
    "ModbusDeviceConfig",
    "MqttDeviceConfig",
    "SerialBusConfig",
    "SerialDeviceConfig",
    "SimDeviceConfig",
    "SimulatorConfig",
    "SiteConfig",
    "UplinkConfig",
    "load_site",
    "load_site_with_profiles",
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


class _DeviceConf(_Conf, frozen=True):
    """What every device entry has: its id on the wire contract."""

    id: str


class SimDeviceConfig(_DeviceConf, frozen=True):
    """One simulated device."""

    kind: DeviceKind
    floors: int = 18


class SimulatorConfig(_Conf, frozen=True, tag="simulator", tag_field="type"):
    """A collector of simulated devices (collectors.simulators)."""

    devices: list[SimDeviceConfig]
    name: str = "simulator"
    seed: int = 0


class ModbusDeviceConfig(_DeviceConf, frozen=True):
    """A Modbus device on a bus: its id, its unit id (1..247) and its profile id."""

    unit: int
    profile: str


class ModbusBusConfig(_Conf, frozen=True, tag="modbus", tag_field="type"):
    """An RS-485 line of Modbus RTU devices. ``serial`` defaults to the devices' profiles."""

    name: str
    port: str
    devices: list[ModbusDeviceConfig]
    serial: SerialSettings | None = None


class SerialDeviceConfig(_DeviceConf, frozen=True):
    """A device on a framed line; ``address`` is its bus address if the line is shared."""

    address: int | None = None


class SerialBusConfig(_Conf, frozen=True, tag="serial", tag_field="type"):
    """A serial line of devices that speak one maker's framed protocol (one profile)."""

    name: str
    port: str
    profile: str
    devices: list[SerialDeviceConfig]
    serial: SerialSettings | None = None


class MqttDeviceConfig(_DeviceConf, frozen=True):
    """A device on the local broker: profile id and the address its messages carry."""

    profile: str
    address: str | int


class LocalMqttConfig(_Conf, frozen=True, tag="mqtt", tag_field="type"):
    """The community's own broker, where camera-AI boxes publish."""

    name: str
    url: str
    devices: list[MqttDeviceConfig]


CollectorConfig = SimulatorConfig | ModbusBusConfig | SerialBusConfig | LocalMqttConfig


class SiteConfig(_Conf, frozen=True):
    """Everything one gateway needs to run."""

    version: Literal[1]
    gateway: str
    community: str
    uplink: UplinkConfig
    state_dir: str
    collectors: list[CollectorConfig]
    batch: BatchConfig = BatchConfig()
    #: Directories of device profiles, relative to the site file (absolute after loading).
    profile_dirs: list[str] = []


_PROTOCOL = {"modbus": "modbus_rtu", "serial": "framed_serial", "mqtt": "mqtt"}


def _tag(obj: msgspec.Struct) -> str:
    """The tag a tagged Struct was decoded by (its ``type`` or ``protocol`` value)."""
    return str(obj.__struct_config__.tag)


def _check(site: SiteConfig, profiles: Mapping[str, Profile]) -> Iterator[tuple[str, str]]:
    for name in ("gateway", "community"):
        if not ID_PATTERN.match(getattr(site, name)):
            yield name, f"{getattr(site, name)!r} is not a slug like 'gw-1'"
    if not site.uplink.url.startswith(("mqtt://", "tcp://")):
        yield "uplink.url", f"{site.uplink.url!r} must start with mqtt://"
    b = site.batch
    if b.max_items < 1 or b.max_bytes < 1024 or b.max_age_ms < 0:
        yield "batch", "max_items >= 1, max_bytes >= 1024 and max_age_ms >= 0 are required"
    seen: set[str] = set()
    names: set[str] = set()
    for i, col in enumerate(site.collectors):
        cpath = f"collectors[{i}]"
        if col.name in names:
            yield f"{cpath}.name", f"collector name {col.name!r} is used twice"
        names.add(col.name)
        devices: list[_DeviceConf] = list(col.devices)
        for j, dev in enumerate(devices):
            path = f"{cpath}.devices[{j}]"
            if not ID_PATTERN.match(dev.id):
                yield f"{path}.id", f"{dev.id!r} is not a slug like 'el-1-1'"
            if dev.id in seen:
                yield f"{path}.id", f"device {dev.id!r} appears twice on this gateway"
            seen.add(dev.id)
        if isinstance(col, SimulatorConfig):
            for j, sim in enumerate(col.devices):
                if sim.kind == "fire_panel":
                    yield f"{cpath}.devices[{j}].kind", "there is no simulator for fire_panel"
            continue
        if not col.devices:
            yield f"{cpath}.devices", "list at least one device"
        yield from _check_profiles(site, col, cpath, profiles)


def _check_profiles(
    site: SiteConfig,
    col: ModbusBusConfig | SerialBusConfig | LocalMqttConfig,
    cpath: str,
    profiles: Mapping[str, Profile],
) -> Iterator[tuple[str, str]]:
    want = _PROTOCOL[_tag(col)]
    refs: list[tuple[str, str]] = []
    if isinstance(col, SerialBusConfig):
        refs.append((f"{cpath}.profile", col.profile))
    else:
        with_profile: list[ModbusDeviceConfig | MqttDeviceConfig] = list(col.devices)
        refs.extend(
            (f"{cpath}.devices[{j}].profile", d.profile) for j, d in enumerate(with_profile)
        )
    for path, ref in refs:
        prof = profiles.get(ref)
        if prof is None:
            where = ", ".join(site.profile_dirs) or "(no profile_dirs given)"
            yield path, f"no profile {ref!r} in {where}"
        elif _tag(prof) != want:
            yield path, f"profile {ref!r} speaks {_tag(prof)}, not {want}"
    if isinstance(col, ModbusBusConfig):
        units: set[int] = set()
        for j, d in enumerate(col.devices):
            if not 1 <= d.unit <= 247:
                # Modbus over Serial Line §2.2: 0 is broadcast, 248..255 reserved.
                yield f"{cpath}.devices[{j}].unit", "a unit id is 1..247"
            if d.unit in units:
                yield f"{cpath}.devices[{j}].unit", f"unit {d.unit} is used twice on this bus"
            units.add(d.unit)
        if col.serial is None:
            settings = {
                profiles[d.profile].serial  # type: ignore[union-attr]
                for d in col.devices
                if isinstance(profiles.get(d.profile), ModbusProfile)
            }
            if len(settings) > 1:
                yield f"{cpath}.serial", "the profiles' line settings differ; set serial here"
    elif isinstance(col, SerialBusConfig):
        addresses = [d.address for d in col.devices]
        if len(set(addresses)) != len(addresses):
            yield f"{cpath}.devices", "two devices share an address"
        prof = profiles.get(col.profile)
        if isinstance(prof, FramedProfile) and prof.frame.address_at is None and len(addresses) > 1:
            yield f"{cpath}.devices", "the profile's frames carry no address: one device per line"
    else:
        try:
            parse_mqtt_url(col.url)
        except ValueError as exc:
            yield f"{cpath}.url", str(exc)
        keys = [(d.profile, str(d.address)) for d in col.devices]
        if len(set(keys)) != len(keys):
            yield f"{cpath}.devices", "two devices share a profile and address"


def load_site_with_profiles(path: Path) -> tuple[SiteConfig, Mapping[str, Profile]]:
    """Load a site config and the profiles it uses; raise ConfigError listing every problem.

    ``profile_dirs`` are resolved against the site file's directory and made absolute.
    """
    first = load_yaml(path, SiteConfig)
    dirs = [str((path.parent / d).resolve()) for d in first.profile_dirs]
    profiles = load_profiles([Path(d) for d in dirs]) if dirs else {}
    site = load_yaml(path, SiteConfig, check=lambda s: _check(s, profiles))
    return msgspec.structs.replace(site, profile_dirs=dirs), profiles


def load_site(path: Path) -> SiteConfig:
    """Load and check a site config (see :func:`load_site_with_profiles`)."""
    return load_site_with_profiles(path)[0]

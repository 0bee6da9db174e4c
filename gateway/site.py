"""The gateway's site config (YAML): identity, uplink, batching, and its collectors.

Validated once at load (:func:`collectors.yamlconf.load_yaml`); errors name file, line and
key, including references to device profiles that do not exist or speak another protocol.
The same checks apply to a configuration the server sends (:func:`parse_remote`), which may
replace the sections in :data:`REMOTE_SECTIONS` but never the gateway's identity, its
uplink or where it keeps its state.

Example (firmware_configs/sites/example.yaml is a complete one)::

    version: 1
    gateway: gw-1
    community: meihuayuan
    state_dir: /var/lib/linli/gw-1
    uplink: {url: "mqtt://broker.example:1883", prefix: linli/v1}
    profile_dirs: [/etc/linli/firmware_configs]
    queue: {budget_mb: 256, synchronous: full}
    health_interval_s: 60
    edge:
      fire_lane: {dwell_s: 60, repeat_s: 60}
      trapped: {outside_door_zone_s: 15, doors_closed_at_landing_s: 90}
      fire_release: {gates: [gt-1]}
    outputs:
      - {device: fl-2, action: voice_warning,
         mqtt: {url: "mqtt://127.0.0.1:1883", topic: aibox/box-01/speaker,
                payload: '{"play": "fire_lane"}'}}
      - {device: gt-1, action: unlock, modbus: {collector: rs485-1, unit: 9, coil: 0}}
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

import difflib
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
    profile_events,
)
from collectors.signed import public_key_from_text
from collectors.wire import DEFAULT_TOPIC_PREFIX, ID_PATTERN, REMOTE_SECTIONS, DeviceKind
from collectors.yamlconf import ConfigError, load_yaml, load_yaml_text
from gateway.edge import EdgeConfig

__all__ = [
    "BatchConfig",
    "LocalMqttConfig",
    "ModbusBusConfig",
    "ModbusCoilOutput",
    "ModbusDeviceConfig",
    "MqttDeviceConfig",
    "MqttOutput",
    "OutputConfig",
    "QueueConfig",
    "RemoteConfig",
    "SerialBusConfig",
    "SerialDeviceConfig",
    "SimDeviceConfig",
    "SimulatorConfig",
    "SiteConfig",
    "UplinkConfig",
    "load_site",
    "load_site_with_profiles",
    "parse_remote",
]


class _Conf(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    pass


class UplinkConfig(_Conf, frozen=True):
    """The central broker: ``mqtt://[user:pass@]host[:port]`` and the topic prefix.

    ``server_keys``: the server's Ed25519 public keys (``linli keys public`` prints one);
    configs and commands are acted on only when signed by one of them (collectors/signed.py).
    Empty: remote management is off and every config or command is refused.
    """

    url: str
    prefix: str = DEFAULT_TOPIC_PREFIX
    server_keys: list[str] = []


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


class QueueConfig(_Conf, frozen=True):
    """The store-and-forward queue: its disk budget and how hard each commit is flushed."""

    budget_mb: float = 256.0
    #: ``full`` survives a power cut; ``normal`` survives a process crash only.
    synchronous: Literal["full", "normal"] = "full"


class MqttOutput(_Conf, frozen=True):
    """Drive an output by publishing ``payload`` to ``topic`` on a (local) broker."""

    url: str
    topic: str
    payload: str = "{}"


class ModbusCoilOutput(_Conf, frozen=True):
    """Drive an output by writing a coil through one of this gateway's Modbus lines."""

    collector: str
    unit: int
    coil: int
    value: bool = True


class OutputConfig(_Conf, frozen=True):
    """How one on-site action is carried out for one device: exactly one of mqtt or modbus."""

    device: str
    action: Literal["voice_warning", "unlock", "lock"]
    mqtt: MqttOutput | None = None
    modbus: ModbusCoilOutput | None = None


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
    queue: QueueConfig = QueueConfig()
    edge: EdgeConfig = EdgeConfig()
    outputs: list[OutputConfig] = []
    #: Seconds between health items; 0 turns them off.
    health_interval_s: float = 60.0
    #: The version of the last configuration received from the server (0: the local file).
    config_version: int = 0

    def device_kinds(self, profiles: Mapping[str, Profile]) -> dict[str, DeviceKind]:
        """Every device on this gateway and its kind."""
        kinds: dict[str, DeviceKind] = {}
        for col in self.collectors:
            if isinstance(col, SimulatorConfig):
                kinds.update((d.id, d.kind) for d in col.devices)
            elif isinstance(col, SerialBusConfig):
                prof = profiles.get(col.profile)
                if prof is not None:
                    kinds.update((d.id, prof.kind) for d in col.devices)
            else:
                for d in col.devices:
                    prof = profiles.get(d.profile)
                    if prof is not None:
                        kinds[d.id] = prof.kind
        return kinds

    def self_reporting_lanes(self, profiles: Mapping[str, Profile]) -> frozenset[str]:
        """Fire lanes whose sensor reports ``obstruction`` itself (a camera box with its own
        dwell logic, the simulated one included): the edge adds no blockage of its own."""
        lanes: set[str] = set()
        for col in self.collectors:
            if isinstance(col, SimulatorConfig):
                lanes.update(d.id for d in col.devices if d.kind == "fire_lane")
                continue
            devices: list[tuple[str, str]] = (
                [(d.id, col.profile) for d in col.devices]
                if isinstance(col, SerialBusConfig)
                else [(d.id, d.profile) for d in col.devices]
            )
            for dev, name in devices:
                prof = profiles.get(name)
                reports = prof is not None and "obstruction" in profile_events(prof)
                if reports and prof is not None and prof.kind == "fire_lane":
                    lanes.add(dev)
        return frozenset(lanes)


class RemoteConfig(_Conf, frozen=True):
    """The server's retained ``config`` message: a version and the sections it replaces."""

    config_version: int
    collectors: list[CollectorConfig] | None = None
    batch: BatchConfig | None = None
    queue: QueueConfig | None = None
    edge: EdgeConfig | None = None
    outputs: list[OutputConfig] | None = None
    health_interval_s: float | None = None


_PROTOCOL = {"modbus": "modbus_rtu", "serial": "framed_serial", "mqtt": "mqtt"}


def _tag(obj: msgspec.Struct) -> str:
    """The tag a tagged Struct was decoded by (its ``type`` or ``protocol`` value)."""
    return str(obj.__struct_config__.tag)


def _check(site: SiteConfig, profiles: Mapping[str, Profile]) -> Iterator[tuple[str, str]]:
    for name in ("gateway", "community"):
        if not ID_PATTERN.match(getattr(site, name)):
            yield name, f"{getattr(site, name)!r} is not a slug like 'gw-1'"
    try:
        parse_mqtt_url(site.uplink.url)
    except ValueError as exc:
        yield "uplink.url", str(exc)
    for i, text in enumerate(site.uplink.server_keys):
        try:
            public_key_from_text(text)
        except ValueError as exc:
            yield f"uplink.server_keys[{i}]", str(exc)
    b = site.batch
    if b.max_items < 1 or b.max_bytes < 1024 or b.max_age_ms < 0:
        yield "batch", "max_items >= 1, max_bytes >= 1024 and max_age_ms >= 0 are required"
    if not site.queue.budget_mb > 0:
        yield "queue.budget_mb", "must be more than 0"
    if site.health_interval_s < 0:
        yield "health_interval_s", "must be 0 (off) or more"
    yield from _check_edge(site, profiles)
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
            near = difflib.get_close_matches(ref, sorted(profiles), n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            yield path, f"no profile {ref!r} in {where}{hint}"
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


def _check_edge(site: SiteConfig, profiles: Mapping[str, Profile]) -> Iterator[tuple[str, str]]:
    kinds = site.device_kinds(profiles)
    rules = site.edge
    for name, value in (
        ("edge.fire_lane.dwell_s", rules.fire_lane.dwell_s),
        ("edge.fire_lane.repeat_s", rules.fire_lane.repeat_s),
        ("edge.trapped.outside_door_zone_s", rules.trapped.outside_door_zone_s),
        ("edge.trapped.doors_closed_at_landing_s", rules.trapped.doors_closed_at_landing_s),
    ):
        if value <= 0:
            yield name, "must be more than 0 seconds"
    for i, gate in enumerate(rules.fire_release.gates):
        if kinds.get(gate) != "gate":
            yield f"edge.fire_release.gates[{i}]", f"{gate!r} is not a gate on this gateway"
    # A rule that acts needs the output it acts through, checked here rather than failing
    # on site at the first warning or fire alarm.
    driven = {(out.device, out.action) for out in site.outputs}
    if rules.fire_lane.voice_warning:
        for dev in sorted(d for d, k in kinds.items() if k == "fire_lane"):
            if (dev, "voice_warning") not in driven:
                yield (
                    "edge.fire_lane",
                    (
                        f"{dev} has no voice_warning output: add one under outputs, or set "
                        "edge.fire_lane.voice_warning: false if the lane has no speaker"
                    ),
                )
    for i, gate in enumerate(rules.fire_release.gates):
        for action in ("unlock", "lock"):
            if kinds.get(gate) == "gate" and (gate, action) not in driven:
                yield f"edge.fire_release.gates[{i}]", f"{gate} has no {action} output"
    modbus = {c.name for c in site.collectors if isinstance(c, ModbusBusConfig)}
    wanted = {"voice_warning": "fire_lane", "unlock": "gate", "lock": "gate"}
    seen: set[tuple[str, str]] = set()
    for i, out in enumerate(site.outputs):
        path = f"outputs[{i}]"
        kind = kinds.get(out.device)
        if kind is None:
            yield f"{path}.device", f"{out.device!r} is not a device on this gateway"
        elif kind != wanted[out.action]:
            yield (
                f"{path}.action",
                f"{out.action} is for a {wanted[out.action]}; {out.device} is of kind {kind}",
            )
        if (out.device, out.action) in seen:
            yield path, f"{out.device} {out.action} is configured twice"
        seen.add((out.device, out.action))
        if (out.mqtt is None) == (out.modbus is None):
            yield path, "give exactly one of mqtt or modbus"
        if out.mqtt is not None:
            try:
                parse_mqtt_url(out.mqtt.url)
            except ValueError as exc:
                yield f"{path}.mqtt.url", str(exc)
        if out.modbus is not None:
            if out.modbus.collector not in modbus:
                yield f"{path}.modbus.collector", f"no modbus collector {out.modbus.collector!r}"
            if not 1 <= out.modbus.unit <= 247:
                yield f"{path}.modbus.unit", "a unit id is 1..247"
            if not 0 <= out.modbus.coil <= 0xFFFF:
                yield f"{path}.modbus.coil", "a coil address is 0..65535"


def parse_remote(
    payload: bytes, running: SiteConfig, profiles: Mapping[str, Profile]
) -> SiteConfig:
    """The site config that a remote ``config`` message asks for, checked like a local file.

    Raise :class:`ConfigError` naming every problem (``config`` is the source name); the
    running config is the caller's to keep.
    """
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError.one("config", None, "", f"not UTF-8 text: {exc.reason}") from exc
    remote = load_yaml_text(text, RemoteConfig, source="config")
    changes = {
        name: getattr(remote, name) for name in REMOTE_SECTIONS if getattr(remote, name) is not None
    }
    site = msgspec.structs.replace(running, config_version=remote.config_version, **changes)

    def check(_: RemoteConfig) -> Iterator[tuple[str, str]]:
        if remote.config_version < 1:
            yield "config_version", "must be 1 or more"
        yield from _check(site, profiles)

    load_yaml_text(text, RemoteConfig, source="config", check=check)
    return site


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

"""Server settings: a TOML file (``--config``) and ``LINLI_*`` environment variables; env wins.

Read once, in ``main``, into a frozen :class:`Settings`; nothing else reads the environment.

===========================  ==============================  ==============================
setting (TOML key)           environment variable            default
===========================  ==============================  ==============================
``mqtt_url``                 ``LINLI_MQTT_URL``              ``mqtt://127.0.0.1:1883``
``mqtt_prefix``              ``LINLI_MQTT_PREFIX``           ``linli/v1``
``mqtt_shared_group``        ``LINLI_MQTT_SHARED_GROUP``     empty (plain subscription)
``ingest_worker``            ``LINLI_INGEST_WORKER``         ``1/1`` (worker k of n)
``database_url``             ``LINLI_DATABASE_URL``          ``sqlite+aiosqlite:///var/linli.db``
``telemetry_path``           ``LINLI_TELEMETRY_PATH``        ``var/telemetry.db``
``influx_url``               ``LINLI_INFLUX_URL``            (none: embedded store only)
``influx_version``           ``LINLI_INFLUX_VERSION``        ``auto`` (from /ping), or 1, 2, 3
``influx_database``          ``LINLI_INFLUX_DATABASE``       ``linli`` (1.x database)
``influx_token``             ``LINLI_INFLUX_TOKEN``          (2.x/3.x token)
``influx_org``               ``LINLI_INFLUX_ORG``            (2.x org)
``influx_bucket``            ``LINLI_INFLUX_BUCKET``         (2.x/3.x bucket; default: database)
``influx_username``          ``LINLI_INFLUX_USERNAME``       (1.x with auth enabled)
``influx_password``          ``LINLI_INFLUX_PASSWORD``
``influx_spool_path``        ``LINLI_INFLUX_SPOOL_PATH``     ``var/influx-spool.db``
``influx_spool_max_mb``      ``LINLI_INFLUX_SPOOL_MAX_MB``   ``1024``
``influx_gzip``              ``LINLI_INFLUX_GZIP``           ``true`` (gzip request bodies)
``influx_raw_days``          ``LINLI_INFLUX_RAW_DAYS``       ``90`` (raw points kept)
``influx_rollup_days``       ``LINLI_INFLUX_ROLLUP_DAYS``    ``1095`` (hourly roll-ups kept)
``timezone``                 ``LINLI_TIMEZONE``              ``Asia/Shanghai`` (local days)
``http_host``                ``LINLI_HTTP_HOST``             ``127.0.0.1``
``http_port``                ``LINLI_HTTP_PORT``             ``8080``
``signing_key_path``         ``LINLI_SIGNING_KEY_PATH``      ``var/signing-key.pem``
``broker_auth_dir``          ``LINLI_BROKER_AUTH_DIR``       (none: broker accounts off)
``broker_pid_file``          ``LINLI_BROKER_PID_FILE``       (none: no SIGHUP)
``api_rate_per_s``           ``LINLI_API_RATE_PER_S``        ``20`` (requests per token)
``api_burst``                ``LINLI_API_BURST``             ``100``
``api_refused_per_min``      ``LINLI_API_REFUSED_PER_MIN``   ``60`` (bad tokens per address)
``api_max_body_kb``          ``LINLI_API_MAX_BODY_KB``       ``1024``
===========================  ==============================  ==============================
"""

from __future__ import annotations

import os
import stat
import tomllib
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from collectors.mqtturl import parse_mqtt_url
from collectors.wire import DEFAULT_TOPIC_PREFIX
from collectors.yamlconf import ConfigError
from server.telemetry.influx import InfluxTarget

__all__ = ["Settings", "influx_target", "load_settings"]


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Everything the server needs to start."""

    mqtt_url: str = "mqtt://127.0.0.1:1883"
    mqtt_prefix: str = DEFAULT_TOPIC_PREFIX
    mqtt_shared_group: str = ""
    ingest_worker: str = "1/1"
    database_url: str = "sqlite+aiosqlite:///var/linli.db"
    telemetry_path: str = "var/telemetry.db"
    influx_url: str | None = None
    influx_version: Literal["auto", "1", "2", "3"] = "auto"
    influx_database: str = "linli"
    influx_token: str | None = None
    influx_org: str | None = None
    influx_bucket: str | None = None
    influx_username: str | None = None
    influx_password: str | None = None
    influx_spool_path: str = "var/influx-spool.db"
    influx_spool_max_mb: int = 1024
    influx_gzip: bool = True
    influx_raw_days: int = 90
    influx_rollup_days: int = 1095
    timezone: str = "Asia/Shanghai"
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    #: The platform operator's bearer token for gateway management (configs and commands).
    admin_token: str | None = None
    #: The Ed25519 key that signs configs and commands (made on first start, mode 0600).
    signing_key_path: str = "var/signing-key.pem"
    #: Where mosquitto's password and ACL files are written (None: broker accounts off).
    broker_auth_dir: str | None = None
    #: mosquitto's pid file: it is sent SIGHUP to re-read the files after each change.
    broker_pid_file: str | None = None
    #: Requests a second one token (or the operator) may make, in bursts of ``api_burst``.
    api_rate_per_s: float = 20.0
    api_burst: int = 100
    #: Refused tokens one client address may send a minute (bursts of as many).
    api_refused_per_min: int = 60
    #: The largest request body; a larger one announced in Content-Length is not read.
    api_max_body_kb: int = 1024
    #: An escalation-ladder file replacing the shipped alerts/ladders.yaml.
    alert_ladders: str | None = None
    #: Rule thresholds per community / building / device (YAML; docs/alerts.md).
    alert_thresholds: str | None = None
    notify_max_attempts: int = 30
    notify_backoff_max_s: float = 60.0
    notify_timeout_s: float = 10.0
    #: ``smtp://[user:password@]host[:port]`` (``smtps://`` for TLS from the start; plain
    #: ``smtp://`` upgrades with STARTTLS when the server offers it).
    smtp_url: str | None = None
    smtp_from: str = "linli@localhost"
    #: A directory of city assessment tables (YAML) added to the shipped ones
    #: (server/compliance/tables; docs/compliance.md); a table there replaces a shipped one
    #: with the same id.
    compliance_tables: str | None = None
    #: Scheduled reports (docs/compliance.md): the weekly ledger on this weekday (1 = Monday)
    #: and local time; the progress table on these days of the month; "" turns one off.
    ledger_schedule: str = "5 12:00"
    progress_schedule: str = "1,15 09:00"
    #: The address organisations reach the API at (links in scheduled reports' webhooks);
    #: "" means http://<http_host>:<http_port>.
    public_url: str = ""
    #: Where on-site findings' photos are kept (by SHA-256).
    evidence_dir: str = "var/evidence"


_ENV_PREFIX = "LINLI_"
#: The most ingest workers one deployment splits communities between.
MAX_WORKERS: Final = 64


def load_settings(
    path: Path | None,
    environ: Mapping[str, str] | None = None,
    *,
    overrides: Mapping[str, object] | None = None,
) -> Settings:
    """Merge the TOML file (if any), the environment, then ``overrides`` (command-line flags);
    validate the result once; raise ConfigError naming the key."""
    environ = os.environ if environ is None else environ
    data: dict[str, object] = {}
    source = str(path) if path else "settings"
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError.one(source, None, "", f"cannot read: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError.one(source, None, "", f"not valid TOML: {exc}") from exc
        _refuse_readable_secrets(path, data, source)
    known = set(Settings.__struct_fields__)
    for key, value in environ.items():
        if key.startswith(_ENV_PREFIX) and key[len(_ENV_PREFIX) :].lower() in known:
            data[key[len(_ENV_PREFIX) :].lower()] = value
    data.update(overrides or {})
    try:
        # Environment values are strings; lax conversion turns "8081" into 8081.
        settings = msgspec.convert(data, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError.one(source, None, "", str(exc)) from exc
    try:
        parse_mqtt_url(settings.mqtt_url)
    except ValueError as exc:
        raise ConfigError.one(source, None, "mqtt_url", str(exc)) from exc
    if settings.influx_url is not None and not settings.influx_url.startswith(
        ("http://", "https://")
    ):
        raise ConfigError.one(
            source, None, "influx_url", f"{settings.influx_url!r} must start with http(s)://"
        )
    if settings.influx_spool_max_mb < 1:
        raise ConfigError.one(source, None, "influx_spool_max_mb", "must be at least 1")
    for key in ("influx_raw_days", "influx_rollup_days"):
        if getattr(settings, key) < 1:
            raise ConfigError.one(source, None, key, "must be at least 1 day")
    try:
        ZoneInfo(settings.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError.one(
            source, None, "timezone", f"{settings.timezone!r} is not an IANA time zone"
        ) from None
    if settings.admin_token is not None and len(settings.admin_token) < 16:
        raise ConfigError.one(
            source, None, "admin_token", "must be at least 16 characters (it unlocks gates)"
        )
    if settings.smtp_url is not None and not settings.smtp_url.startswith(("smtp://", "smtps://")):
        raise ConfigError.one(
            source, None, "smtp_url", f"{settings.smtp_url!r} must start with smtp:// or smtps://"
        )
    for key in ("api_burst", "api_refused_per_min", "api_max_body_kb"):
        if getattr(settings, key) < 1:
            raise ConfigError.one(source, None, key, "must be at least 1")
    if not settings.api_rate_per_s > 0:
        raise ConfigError.one(source, None, "api_rate_per_s", "must be > 0")
    if settings.notify_max_attempts < 1:
        raise ConfigError.one(source, None, "notify_max_attempts", "must be at least 1")
    for key in ("notify_backoff_max_s", "notify_timeout_s"):
        if not getattr(settings, key) > 0:
            raise ConfigError.one(source, None, key, "must be > 0")
    try:
        worker_share(settings)
    except ValueError as exc:
        raise ConfigError.one(source, None, "ingest_worker", str(exc)) from None
    if not 0 <= settings.http_port <= 65535:
        raise ConfigError.one(source, None, "http_port", f"{settings.http_port} is not a port")
    return settings


#: Keys whose value is a secret, and URL keys that may carry a password.
_SECRET_KEYS: Final = ("admin_token", "influx_token", "influx_password")
_URL_KEYS: Final = ("mqtt_url", "smtp_url", "database_url")


def _refuse_readable_secrets(path: Path, data: Mapping[str, object], source: str) -> None:
    """A settings file that holds a secret must not be readable by everyone (issue 13)."""
    if not path.stat().st_mode & stat.S_IROTH:
        return
    held = [k for k in _SECRET_KEYS if data.get(k)]
    held += [k for k in _URL_KEYS if isinstance(data.get(k), str) and _has_password(str(data[k]))]
    if held:
        raise ConfigError.one(
            source, None, held[0],
            f"holds a secret ({', '.join(held)}) but everyone may read the file: "
            f"chmod o-r {path} (or pass secrets as LINLI_* environment variables)",
        )  # fmt: skip


def _has_password(url: str) -> bool:
    netloc = urllib.parse.urlsplit(url).netloc
    return "@" in netloc and ":" in netloc.rsplit("@", 1)[0]


def worker_share(settings: Settings) -> tuple[int, int]:
    """``ingest_worker`` as (k, n), worker k of n counted from 1; ValueError if malformed."""
    k, sep, n = settings.ingest_worker.partition("/")
    if not (sep and k.isascii() and k.isdigit() and n.isascii() and n.isdigit()):
        raise ValueError(f"{settings.ingest_worker!r} must be k/n, e.g. 1/3 (worker 1 of 3)")
    if not 1 <= int(k) <= int(n) <= MAX_WORKERS:
        raise ValueError(f"{settings.ingest_worker!r}: need 1 <= k <= n <= {MAX_WORKERS}")
    return int(k), int(n)


def influx_target(settings: Settings) -> InfluxTarget:
    """Where the InfluxDB settings point (``influx_url`` must be set)."""
    assert settings.influx_url
    return InfluxTarget(
        url=settings.influx_url.rstrip("/"),
        version=settings.influx_version,
        database=settings.influx_database,
        token=settings.influx_token,
        org=settings.influx_org,
        bucket=settings.influx_bucket,
        username=settings.influx_username,
        password=settings.influx_password,
        gzip=settings.influx_gzip,
    )

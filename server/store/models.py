"""SQL tables (SQLAlchemy 2, async): the registry, ingest bookkeeping, gateway management,
and alerts (their timelines, recipients, timers, deliveries, accident and maintenance
records, organisations' channels and API tokens).

SQLite by default, PostgreSQL in production; nothing here is specific to either.

Time columns named ``*_t`` hold epoch milliseconds (UTC), as on the wire.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    DDL,
    BigInteger,
    Boolean,
    Date,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    event,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "AccidentRecord",
    "Alert",
    "AlertRecipient",
    "AlertTimer",
    "AlertTransition",
    "ApiToken",
    "Assessment",
    "AuditEntry",
    "Base",
    "CentreCommunity",
    "Community",
    "Contract",
    "Delivery",
    "DeliveryAttempt",
    "Device",
    "DeviceSeen",
    "Finding",
    "Gateway",
    "GatewayCommand",
    "GatewayConfig",
    "GatewaySeq",
    "Inspection",
    "InspectionResult",
    "MaintenanceRecord",
    "MeetingRecord",
    "OrgChannel",
    "Organisation",
    "RescueRecord",
    "ScheduledReport",
    "Screen",
    "ScreenToken",
]


class Base(DeclarativeBase):
    """Declarative base of every Linli table."""


class Organisation(Base):
    """A company, unit, office or bureau (DOMAIN.md, "Who answers for what")."""

    __tablename__ = "organisations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    name: Mapped[str] = mapped_column(String(200))
    name_en: Mapped[str] = mapped_column(String(200), default="")
    district: Mapped[str] = mapped_column(String(64), default="")
    parent_id: Mapped[str | None] = mapped_column(String(64), ForeignKey("organisations.id"))


class Community(Base):
    """A residential community (小区)."""

    __tablename__ = "communities"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    name_en: Mapped[str] = mapped_column(String(200), default="")
    committee_id: Mapped[str] = mapped_column(String(64), ForeignKey("organisations.id"))
    street_office_id: Mapped[str] = mapped_column(String(64), ForeignKey("organisations.id"))
    district: Mapped[str] = mapped_column(String(64))
    condition_class: Mapped[int | None] = mapped_column(Integer)
    arrival_deadline_min: Mapped[int] = mapped_column(Integer, default=30)


class Gateway(Base):
    """A community's edge gateway; ids are unique within a community."""

    __tablename__ = "gateways"

    community_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("communities.id"), primary_key=True
    )
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    #: Retired in the registry: its envelopes are rejected and its broker account removed,
    #: its history stays.
    retired: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class Device(Base):
    """A monitored device; ids are unique within a community."""

    __tablename__ = "devices"

    community_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("communities.id"), primary_key=True
    )
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(200))
    name_en: Mapped[str] = mapped_column(String(200), default="")
    gateway_id: Mapped[str] = mapped_column(String(64))
    building: Mapped[str] = mapped_column(String(64), default="")
    floors: Mapped[int | None] = mapped_column(Integer)
    maintenance_unit_id: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("organisations.id")
    )
    registration_code: Mapped[str | None] = mapped_column(String(32))
    use_registration_no: Mapped[str | None] = mapped_column(String(64))
    rescue_code: Mapped[str | None] = mapped_column(String(32))


class Contract(Base):
    """A property-service contract; ``end`` is the last day served (None: open-ended)."""

    __tablename__ = "contracts"
    __table_args__ = (UniqueConstraint("community_id", "company_id", "start"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    community_id: Mapped[str] = mapped_column(String(64), ForeignKey("communities.id"), index=True)
    company_id: Mapped[str] = mapped_column(String(64), ForeignKey("organisations.id"))
    start: Mapped[dt.date] = mapped_column(Date)
    end: Mapped[dt.date | None] = mapped_column(Date)


class CentreCommunity(Base):
    """Which communities a neighbourhood centre's screens show."""

    __tablename__ = "centre_communities"

    centre_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("organisations.id"), primary_key=True
    )
    community_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("communities.id"), primary_key=True
    )


class GatewaySeq(Base):
    """The highest envelope ``seq`` ingested per gateway, so duplicates stay dropped after a
    server restart; saved periodically by ingest."""

    __tablename__ = "gateway_seq"

    community_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    gateway_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    high: Mapped[int] = mapped_column(BigInteger)
    gaps: Mapped[int] = mapped_column(BigInteger, default=0)
    duplicates: Mapped[int] = mapped_column(BigInteger, default=0)


class GatewayConfig(Base):
    """A versioned remote config published (retained) to a gateway, and the gateway's answer."""

    __tablename__ = "gateway_configs"

    community_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    gateway_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    body: Mapped[str] = mapped_column(Text)
    published_t: Mapped[int] = mapped_column(BigInteger)
    ack_t: Mapped[int | None] = mapped_column(BigInteger)
    ack_ok: Mapped[bool | None] = mapped_column(Boolean)
    #: The version the gateway said it runs after this one was offered.
    ack_running: Mapped[int | None] = mapped_column(Integer)
    ack_message: Mapped[str] = mapped_column(Text, default="")


class GatewayCommand(Base):
    """A command sent to a gateway, and its result once acknowledged."""

    __tablename__ = "gateway_commands"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    community_id: Mapped[str] = mapped_column(String(64), index=True)
    gateway_id: Mapped[str] = mapped_column(String(64))
    op: Mapped[str] = mapped_column(String(32))
    device: Mapped[str | None] = mapped_column(String(64))
    sent_t: Mapped[int] = mapped_column(BigInteger, index=True)
    expires_t: Mapped[int] = mapped_column(BigInteger)
    ack_t: Mapped[int | None] = mapped_column(BigInteger)
    ack_ok: Mapped[bool | None] = mapped_column(Boolean)
    ack_message: Mapped[str] = mapped_column(Text, default="")


# --- alerts (issue 5) -------------------------------------------------------------------


class Alert(Base):
    """One alert: a rule's condition on one device (alerts/lifecycle.py). At most one is
    running per (community, device, rule): ``running_key`` holds that triple while the alert
    runs and NULL after, under a unique constraint, so two workers cannot open two."""

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rule: Mapped[str] = mapped_column(String(32), index=True)
    community_id: Mapped[str] = mapped_column(String(64), index=True)
    device: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), index=True)
    opened_t: Mapped[int] = mapped_column(BigInteger, index=True)
    updated_t: Mapped[int] = mapped_column(BigInteger)
    repeats: Mapped[int] = mapped_column(Integer, default=0)
    ended_t: Mapped[int | None] = mapped_column(BigInteger)
    level: Mapped[int] = mapped_column(Integer, default=0)  # escalation steps taken
    detail: Mapped[str] = mapped_column(Text, default="{}")  # JSON
    running_key: Mapped[str | None] = mapped_column(String(200), unique=True)


class AlertTransition(Base):
    """One step of an alert's timeline: when, to what state, by whom, why."""

    __tablename__ = "alert_transitions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id"), index=True)
    t: Mapped[int] = mapped_column(BigInteger)
    to_state: Mapped[str] = mapped_column(String(16))
    by: Mapped[str] = mapped_column(String(64))
    note: Mapped[str] = mapped_column(Text, default="")
    evidence: Mapped[str] = mapped_column(Text, default="")


class AlertRecipient(Base):
    """An organisation an alert was routed to, in which role, at which escalation step."""

    __tablename__ = "alert_recipients"

    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id"), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)
    role: Mapped[str] = mapped_column(String(32))
    read_only: Mapped[bool] = mapped_column(Boolean, default=False)
    standing_in: Mapped[bool] = mapped_column(Boolean, default=False)
    step: Mapped[str] = mapped_column(String(32), default="first")
    added_t: Mapped[int] = mapped_column(BigInteger)


class AlertTimer(Base):
    """Work due at a time, kept in SQL so that restarts neither lose nor repeat it: a timed
    condition becoming an alert, an escalation step, the end of a flapping window.

    A worker claims a due timer and does its work in one transaction that also deletes it,
    so it happens exactly once; a crash in between rolls back and leaves it due."""

    __tablename__ = "alert_timers"
    __table_args__ = (UniqueConstraint("key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: What it is for, unique: ``cond:<rule>:<community>:<device>``, ``step:<alert>:<i>``,
    #: ``settle:<alert>``.
    key: Mapped[str] = mapped_column(String(250))
    due_t: Mapped[int] = mapped_column(BigInteger, index=True)
    payload: Mapped[str] = mapped_column(Text, default="{}")  # JSON


class OrgChannel(Base):
    """Where an organisation wants its alerts: a webhook, its MQTT feed, email, a robot."""

    __tablename__ = "org_channels"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    org_id: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # webhook | mqtt | email | robot
    target: Mapped[str] = mapped_column(Text)  # URL, address, topic
    secret: Mapped[str] = mapped_column(Text, default="")  # HMAC key of a webhook
    #: False once the registry no longer declares it (kept for the deliveries that used it).
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)


class Delivery(Base):
    """The outbox: one message for one channel, written in the transaction that changed the
    alert, sent by the notifier until delivered or dead-lettered."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id"), index=True)
    org_id: Mapped[str] = mapped_column(String(64), index=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("org_channels.id"))
    body: Mapped[str] = mapped_column(Text)  # the JSON sent
    #: pending | delivered | dead
    status: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_t: Mapped[int] = mapped_column(BigInteger)
    next_t: Mapped[int] = mapped_column(BigInteger, index=True)
    #: A worker sending it holds it until then (a crashed worker's claim runs out).
    claimed_until: Mapped[int] = mapped_column(BigInteger, default=0)
    delivered_t: Mapped[int | None] = mapped_column(BigInteger)
    last_error: Mapped[str] = mapped_column(Text, default="")


class DeliveryAttempt(Base):
    """Every attempt to deliver, with its outcome."""

    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("deliveries.id"), index=True)
    t: Mapped[int] = mapped_column(BigInteger)
    ok: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str] = mapped_column(Text, default="")
    duration_ms: Mapped[int] = mapped_column(Integer)


class AccidentRecord(Base):
    """A trapped-passenger incident still open at 2 h: an accident (一般事故) to be reported to
    market supervision within 1 h (市场监管总局令第50号), with the alert's timeline."""

    __tablename__ = "accident_records"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id"), unique=True)
    created_t: Mapped[int] = mapped_column(BigInteger)
    to_org: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)  # JSON: the alert and its timeline


class MaintenanceRecord(Base):
    """A maintenance visit (维保记录) of an elevator: its day and who recorded it."""

    __tablename__ = "maintenance_records"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    community_id: Mapped[str] = mapped_column(String(64), index=True)
    device: Mapped[str] = mapped_column(String(64))
    day: Mapped[dt.date] = mapped_column(Date)
    org_id: Mapped[str] = mapped_column(String(64))
    note: Mapped[str] = mapped_column(Text, default="")
    created_t: Mapped[int] = mapped_column(BigInteger)


class Inspection(Base):
    """An elevator's next periodic inspection date (定期检验, 特种设备安全法 Art.40)."""

    __tablename__ = "inspections"

    community_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    device: Mapped[str] = mapped_column(String(64), primary_key=True)
    next_date: Mapped[dt.date] = mapped_column(Date)


class DeviceSeen(Base):
    """When anything last arrived from a device, as merged from every server worker (each
    writes its own latest every few seconds, keeping the larger): the silence rule reads it,
    so a device whose readings go to another worker is not taken for silent."""

    __tablename__ = "device_seen"

    community_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    device: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_t: Mapped[int] = mapped_column(BigInteger)


class ApiToken(Base):
    """An organisation's API token, stored as its SHA-256 (the token is shown once). Its
    public id is the first 12 hex digits of that digest (``linli tokens list|revoke``)."""

    __tablename__ = "api_tokens"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    label: Mapped[str] = mapped_column(String(200), default="")
    created_t: Mapped[int] = mapped_column(BigInteger)
    expires_t: Mapped[int | None] = mapped_column(BigInteger)  # None: never (tokens made before)
    revoked_t: Mapped[int | None] = mapped_column(BigInteger)
    revoked_by: Mapped[str | None] = mapped_column(String(200))


class BrokerUser(Base):
    """An MQTT account on the broker (issue 13): a gateway's, the server's, or an
    organisation's alert feed. The password is kept only as the broker's own hash
    (mosquitto's PBKDF2-SHA512 ``$7$`` form), so the broker file can be regenerated."""

    __tablename__ = "broker_users"

    username: Mapped[str] = mapped_column(String(200), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))  # gateway, server, feed
    community_id: Mapped[str | None] = mapped_column(String(64))
    gateway_id: Mapped[str | None] = mapped_column(String(64))
    org_id: Mapped[str | None] = mapped_column(String(64))
    password_hash: Mapped[str] = mapped_column(String(300))
    created_t: Mapped[int] = mapped_column(BigInteger)


class AuditEntry(Base):
    """One change made through the API or the CLI (issue 13): who, when, from where, what.
    Append-only: on SQLite, triggers refuse UPDATE and DELETE."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    t: Mapped[int] = mapped_column(BigInteger, index=True)
    #: An organisation's id, ``operator`` (the admin token) or ``cli:<user>``.
    actor: Mapped[str] = mapped_column(String(200), index=True)
    #: The client's address (HTTP), or ``local`` (CLI).
    address: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(300))
    #: What changed, as JSON.
    detail: Mapped[str] = mapped_column(Text, default="{}")


for _verb in ("UPDATE", "DELETE"):
    event.listen(
        AuditEntry.__table__,
        "after_create",
        DDL(  # type: ignore[no-untyped-call]
            f"CREATE TRIGGER audit_log_no_{_verb.lower()} BEFORE {_verb} ON audit_log "
            "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END"
        ).execute_if(dialect="sqlite"),
    )


# --- compliance (issue 15) ----------------------------------------------------------------


class RescueRecord(Base):
    """The rescue record (救援记录) of a trapped-passenger alert: who arrived when, who
    released the passengers and how; entered by the company or the maintenance unit, also
    after an alert that ended on its own. ``late``: entered after the city table's limit."""

    __tablename__ = "rescue_records"

    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id"), primary_key=True)
    arrival_t: Mapped[int] = mapped_column(BigInteger)
    released_t: Mapped[int | None] = mapped_column(BigInteger)
    released_by: Mapped[str] = mapped_column(String(200))
    method: Mapped[str] = mapped_column(Text)
    entered_by: Mapped[str] = mapped_column(String(64))
    entered_t: Mapped[int] = mapped_column(BigInteger)
    late: Mapped[bool] = mapped_column(Boolean, default=False)


class InspectionResult(Base):
    """A periodic inspection (定期检验) of an elevator: day, result, certificate, next date."""

    __tablename__ = "inspection_results"
    __table_args__ = (UniqueConstraint("community_id", "device", "day"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    community_id: Mapped[str] = mapped_column(String(64), index=True)
    device: Mapped[str] = mapped_column(String(64))
    day: Mapped[dt.date] = mapped_column(Date)
    result: Mapped[str] = mapped_column(String(16))  # passed | failed | conditional
    certificate_no: Mapped[str] = mapped_column(String(64), default="")
    next_date: Mapped[dt.date | None] = mapped_column(Date)
    entered_by: Mapped[str] = mapped_column(String(64))
    entered_t: Mapped[int] = mapped_column(BigInteger)


class MeetingRecord(Base):
    """A three-party meeting (community, owners' committee, company; 江山) held on a day."""

    __tablename__ = "meeting_records"
    __table_args__ = (UniqueConstraint("community_id", "day", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    community_id: Mapped[str] = mapped_column(String(64), index=True)
    day: Mapped[dt.date] = mapped_column(Date)
    kind: Mapped[str] = mapped_column(String(32), default="three_party")
    entered_by: Mapped[str] = mapped_column(String(64))
    entered_t: Mapped[int] = mapped_column(BigInteger)


class Finding(Base):
    """An on-site finding (现场检查) of an inspector or street office: an item of the city
    table, points off, a note and optionally a photo stored on disk by its SHA-256."""

    __tablename__ = "findings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    community_id: Mapped[str] = mapped_column(String(64), index=True)
    company_id: Mapped[str | None] = mapped_column(String(64), index=True)
    table_id: Mapped[str] = mapped_column(String(64))
    item: Mapped[str] = mapped_column(String(64))
    points: Mapped[float] = mapped_column(Float)
    note: Mapped[str] = mapped_column(Text, default="")
    photo_sha256: Mapped[str] = mapped_column(String(64), default="")
    day: Mapped[dt.date] = mapped_column(Date)
    by: Mapped[str] = mapped_column(String(64))
    t: Mapped[int] = mapped_column(BigInteger)


class Assessment(Base):
    """One computed assessment of a city table's companies for a period, frozen in ``body``
    (JSON: measures, scores with their breakdown and evidence, ranks and flags). Signed
    versions never change; a correction is a new version with a reason."""

    __tablename__ = "assessments"
    __table_args__ = (UniqueConstraint("table_id", "period", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    table_id: Mapped[str] = mapped_column(String(64), index=True)
    period: Mapped[str] = mapped_column(String(32))  # 2026-Q4, 2026-11, 2026-W48, 2026
    start: Mapped[dt.date] = mapped_column(Date)
    end: Mapped[dt.date] = mapped_column(Date)  # inclusive
    version: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))  # computed | signed | superseded
    rules_digest: Mapped[str] = mapped_column(String(32))
    body: Mapped[str] = mapped_column(Text)
    computed_t: Mapped[int] = mapped_column(BigInteger)
    computed_by: Mapped[str] = mapped_column(String(200))
    signed_t: Mapped[int | None] = mapped_column(BigInteger)
    signed_by: Mapped[str | None] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text, default="")


class ScheduledReport(Base):
    """A scheduled report for one organisation and channel (server/compliance/schedule.py):
    claimed once by its unique ``key``, then sent, retried or given up."""

    __tablename__ = "scheduled_reports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(250), unique=True)
    org_id: Mapped[str] = mapped_column(String(64), index=True)
    report: Mapped[str] = mapped_column(String(16))
    period: Mapped[str] = mapped_column(String(32))
    due_t: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))  # sending | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_until: Mapped[int] = mapped_column(BigInteger, default=0)
    next_t: Mapped[int] = mapped_column(BigInteger, default=0)
    sent_t: Mapped[int | None] = mapped_column(BigInteger)
    error: Mapped[str] = mapped_column(Text, default="")


# --- screens (issue 16) ---------------------------------------------------------------------


class Screen(Base):
    """A live screen of an organisation (server/screens/): the communities it shows (JSON
    list; "" for the organisation's own), its language, density and rotation."""

    __tablename__ = "screens"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    communities: Mapped[str] = mapped_column(Text, default="")
    lang: Mapped[str] = mapped_column(String(8), default="zh")
    density: Mapped[str] = mapped_column(String(16), default="normal")
    rotate_s: Mapped[int] = mapped_column(Integer, default=15)


class ScreenToken(Base):
    """A screen's read-only token, stored as its SHA-256 (shown once when made). It opens
    that screen's page data and stream, nothing else."""

    __tablename__ = "screen_tokens"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    screen_id: Mapped[str] = mapped_column(ForeignKey("screens.id"), index=True)
    created_t: Mapped[int] = mapped_column(BigInteger)
    revoked_t: Mapped[int | None] = mapped_column(BigInteger)

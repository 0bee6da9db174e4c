"""SQL tables (SQLAlchemy 2, async): the registry and ingest bookkeeping.

SQLite by default, PostgreSQL in production; nothing here is specific to either. Alerts,
deliveries and timers arrive with issue 5.

Time columns named ``*_t`` hold epoch milliseconds (UTC), as on the wire.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "Base",
    "CentreCommunity",
    "Community",
    "Contract",
    "Device",
    "Gateway",
    "GatewayCommand",
    "GatewayConfig",
    "GatewaySeq",
    "Organisation",
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

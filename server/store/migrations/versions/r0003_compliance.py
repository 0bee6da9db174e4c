"""Compliance records (issue 15): rescue records, inspection results, meetings, on-site
findings, assessments and scheduled reports."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """New tables only; nothing existing changes."""
    op.create_table(
        "rescue_records",
        sa.Column("alert_id", sa.Integer(), sa.ForeignKey("alerts.id"), primary_key=True),
        sa.Column("arrival_t", sa.BigInteger(), nullable=False),
        sa.Column("released_t", sa.BigInteger(), nullable=True),
        sa.Column("released_by", sa.String(200), nullable=False),
        sa.Column("method", sa.Text(), nullable=False),
        sa.Column("entered_by", sa.String(64), nullable=False),
        sa.Column("entered_t", sa.BigInteger(), nullable=False),
        sa.Column("late", sa.Boolean(), nullable=False),
    )
    op.create_table(
        "inspection_results",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("community_id", sa.String(64), nullable=False, index=True),
        sa.Column("device", sa.String(64), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("result", sa.String(16), nullable=False),
        sa.Column("certificate_no", sa.String(64), nullable=False),
        sa.Column("next_date", sa.Date(), nullable=True),
        sa.Column("entered_by", sa.String(64), nullable=False),
        sa.Column("entered_t", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("community_id", "device", "day"),
    )
    op.create_table(
        "meeting_records",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("community_id", sa.String(64), nullable=False, index=True),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("entered_by", sa.String(64), nullable=False),
        sa.Column("entered_t", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("community_id", "day", "kind"),
    )
    op.create_table(
        "findings",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("community_id", sa.String(64), nullable=False, index=True),
        sa.Column("company_id", sa.String(64), nullable=True, index=True),
        sa.Column("table_id", sa.String(64), nullable=False),
        sa.Column("item", sa.String(64), nullable=False),
        sa.Column("points", sa.Float(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("photo_sha256", sa.String(64), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("by", sa.String(64), nullable=False),
        sa.Column("t", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "assessments",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("table_id", sa.String(64), nullable=False, index=True),
        sa.Column("period", sa.String(32), nullable=False),
        sa.Column("start", sa.Date(), nullable=False),
        sa.Column("end", sa.Date(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("rules_digest", sa.String(32), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("computed_t", sa.BigInteger(), nullable=False),
        sa.Column("computed_by", sa.String(200), nullable=False),
        sa.Column("signed_t", sa.BigInteger(), nullable=True),
        sa.Column("signed_by", sa.String(200), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.UniqueConstraint("table_id", "period", "version"),
    )
    op.create_table(
        "scheduled_reports",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(250), nullable=False, unique=True),
        sa.Column("org_id", sa.String(64), nullable=False, index=True),
        sa.Column("report", sa.String(16), nullable=False),
        sa.Column("period", sa.String(32), nullable=False),
        sa.Column("due_t", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claimed_until", sa.BigInteger(), nullable=False),
        sa.Column("next_t", sa.BigInteger(), nullable=False),
        sa.Column("sent_t", sa.BigInteger(), nullable=True),
        sa.Column("error", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    tables = ("scheduled_reports", "assessments", "findings", "meeting_records",
              "inspection_results", "rescue_records")  # fmt: skip
    for name in tables:
        op.drop_table(name)

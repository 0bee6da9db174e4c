"""Screens and their tokens (issue 16)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """New tables only."""
    op.create_table(
        "screens",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column(
            "org_id", sa.String(64), sa.ForeignKey("organisations.id"), nullable=False, index=True
        ),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("communities", sa.Text(), nullable=False),
        sa.Column("lang", sa.String(8), nullable=False),
        sa.Column("density", sa.String(16), nullable=False),
        sa.Column("rotate_s", sa.Integer(), nullable=False),
    )
    op.create_table(
        "screen_tokens",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column(
            "screen_id", sa.String(64), sa.ForeignKey("screens.id"), nullable=False, index=True
        ),
        sa.Column("created_t", sa.BigInteger(), nullable=False),
        sa.Column("revoked_t", sa.BigInteger(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("screen_tokens")
    op.drop_table("screens")

"""API tokens gain an expiry and revocation; gateways can be retired (issue 13)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Tokens made before keep working with no expiry; every gateway starts in service."""
    op.add_column("api_tokens", sa.Column("expires_t", sa.BigInteger(), nullable=True))
    op.add_column("api_tokens", sa.Column("revoked_t", sa.BigInteger(), nullable=True))
    op.add_column("api_tokens", sa.Column("revoked_by", sa.String(200), nullable=True))
    op.add_column(
        "gateways",
        sa.Column("retired", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    """Drop the columns again (batch mode: SQLite rebuilds the tables)."""
    with op.batch_alter_table("gateways") as batch:
        batch.drop_column("retired")
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("revoked_by")
        batch.drop_column("revoked_t")
        batch.drop_column("expires_t")

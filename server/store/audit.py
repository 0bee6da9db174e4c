"""The audit log (issue 13): every change made through the API or the CLI, append-only."""

from __future__ import annotations

import getpass
import json
import time
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from server.store import models

__all__ = ["CLI_ADDRESS", "cli_actor", "record"]

CLI_ADDRESS = "local"


def cli_actor() -> str:
    """Who runs a CLI command: the operating-system user."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def record(
    session: AsyncSession, *, actor: str, address: str, action: str, target: str,
    detail: dict[str, Any] | None = None,
) -> None:  # fmt: skip
    """Add an entry to ``session``: it commits, or not, with the change it describes."""
    session.add(
        models.AuditEntry(
            t=time.time_ns() // 1_000_000,
            actor=actor,
            address=address,
            action=action,
            target=target,
            detail=json.dumps(detail or {}, ensure_ascii=False, default=str),
        )
    )

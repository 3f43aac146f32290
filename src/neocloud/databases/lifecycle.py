"""The one owner of a database's state: ``move`` checks the transition table, stamps times and
reason, and opens or closes the billable span (only ``running`` time is billed)."""

from __future__ import annotations

import logging
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from neocloud.databases.domain import TRANSITIONS, DatabaseState, can_move
from neocloud.databases.tables import DatabaseRow, DatabaseUsageRow
from neocloud.kernel.errors import IllegalTransition
from neocloud.kernel.ids import new_id

log = logging.getLogger(__name__)


def move(s: Session, row: DatabaseRow, now: datetime, state: DatabaseState, reason: str) -> None:
    """Move ``row`` to ``state`` with ``reason``: entering ``running`` opens a usage span,
    leaving it closes the open one; ``deleted`` stamps ``deleted_at``."""
    current = DatabaseState(row.state)
    if not can_move(current, state):
        allowed = [t.value for t in TRANSITIONS[current]]
        raise IllegalTransition("database", current.value, state.value, allowed)
    if current is DatabaseState.RUNNING and state is not DatabaseState.RUNNING:
        close_span(s, row.id, now)
    if state is DatabaseState.RUNNING and current is not DatabaseState.RUNNING:
        if row.running_at is None:
            row.running_at = now
        s.add(
            DatabaseUsageRow(
                id=new_id("dbuse", at=now),
                database_id=row.id,
                org_id=row.org_id,
                project_id=row.project_id,
                preset=row.preset,
                storage_gib=row.storage_gib,
                start_at=now,
                end_at=None,
            )
        )
    if state is DatabaseState.DELETED:
        row.deleted_at = now
    row.state = state.value
    row.reason = reason[:1000]
    row.updated_at = now
    log.info("database %s %s -> %s: %s", row.id, current.value, state.value, reason[:200])


def close_span(s: Session, database_id: str, now: datetime) -> None:
    """End the database's open usage span at ``now``."""
    s.execute(
        sa.update(DatabaseUsageRow)
        .where(DatabaseUsageRow.database_id == database_id, DatabaseUsageRow.end_at.is_(None))
        .values(end_at=now)
    )

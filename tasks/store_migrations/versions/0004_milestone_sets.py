"""Milestones as one compressed set per framework x step (``gf_milestone_sets``) instead of one
row per framework x step x entity (``gf_milestones``): a full run of a million entities wrote,
and every incremental run read, about two million rows (issue 9, docs/performance.md).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pandas as pd
import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def _key(*names: str) -> list[sa.Column]:
    return [sa.Column(n, sa.Text, primary_key=True) for n in names]


def upgrade() -> None:
    from tasks.store import encode_milestones

    sets = op.create_table(
        "gf_milestone_sets",
        *_key("framework", "step"),
        sa.Column("entities", sa.BigInteger, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    conn = op.get_bind()
    old = sa.table("gf_milestones", sa.column("framework"), sa.column("step"), sa.column("entity_id"),
                   sa.column("reached_at", TS))
    pairs = conn.execute(sa.select(old.c.framework, old.c.step).distinct()).all()
    now = datetime.now(UTC)
    for framework, step in pairs:
        rows = conn.execute(
            sa.select(old.c.entity_id, old.c.reached_at).where(old.c.framework == framework, old.c.step == step)
        ).all()
        ids = pd.Series([r[0] for r in rows], dtype="str")
        reached = pd.to_datetime(pd.Series([r[1] for r in rows], dtype=object), utc=True, format="mixed")
        conn.execute(sets.insert().values(
            framework=framework, step=step, entities=len(rows), payload=encode_milestones(ids, reached),
            updated_at=now if conn.dialect.name != "sqlite" else now.replace(tzinfo=None),
        ))
    op.drop_table("gf_milestones")


def downgrade() -> None:
    from tasks.store import decode_milestones

    old = op.create_table(
        "gf_milestones",
        *_key("framework", "step", "entity_id"),
        sa.Column("reached_at", TS, nullable=False),
    )
    conn = op.get_bind()
    sets = sa.table("gf_milestone_sets", sa.column("framework"), sa.column("step"), sa.column("payload"))
    for framework, step, payload in conn.execute(sa.select(sets.c.framework, sets.c.step, sets.c.payload)).all():
        ids, reached = decode_milestones(payload)
        stamps = reached.dt.tz_localize(None) if conn.dialect.name == "sqlite" else reached
        rows = [
            {"framework": framework, "step": step, "entity_id": i, "reached_at": t.to_pydatetime()}
            for i, t in zip(ids.tolist(), stamps, strict=True)
        ]
        for start in range(0, len(rows), 20_000):
            conn.execute(old.insert(), rows[start : start + 20_000])
    op.drop_table("gf_milestone_sets")

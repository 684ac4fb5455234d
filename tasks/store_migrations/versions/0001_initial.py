"""Initial metric store: runs, snapshots, step/cohort/segment metrics, quality checks, milestones, watermarks.

Revision ID: 0001
Revises:
Create Date: 2026-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def _key(*names: str) -> list[sa.Column]:
    return [sa.Column(n, sa.Date if n == "as_of" else sa.Text, primary_key=True) for n in names]


def upgrade() -> None:
    op.create_table(
        "gf_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("framework", sa.Text, nullable=False),
        sa.Column("framework_hash", sa.Text, nullable=False),
        sa.Column("as_of", sa.Date, nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("ended_at", TS),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("quality_status", sa.String(32)),
        sa.Column("delivery_status", sa.String(32)),
        sa.Column("flow_run_id", sa.Text),
        sa.Column("error", sa.Text),
    )
    op.create_index("ix_gf_runs_framework_as_of", "gf_runs", ["framework", "as_of"])
    op.create_table(
        "gf_snapshots",
        *_key("framework", "as_of"),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("gf_runs.id", name="fk_gf_snapshots_run_id"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("committed_at", TS, nullable=False),
    )
    op.create_table(
        "gf_step_metrics",
        *_key("framework", "as_of", "step"),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("name", sa.Text),
        sa.Column("tracked", sa.Boolean),
        sa.Column("qualifying", sa.Boolean),
        sa.Column("entered", sa.BigInteger),
        sa.Column("reached", sa.BigInteger),
        sa.Column("conversion", sa.Double),
        sa.Column("overall_conversion", sa.Double),
        sa.Column("lost", sa.BigInteger),
        sa.Column("median_hours", sa.Double),
        sa.Column("p90_hours", sa.Double),
        sa.Column("previous_conversion", sa.Double),
        sa.Column("delta_pp", sa.Double),
        sa.Column("p_value", sa.Double),
        sa.Column("target", sa.Double),
        sa.Column("opportunity", sa.Double),
        sa.Column("previous_entered", sa.BigInteger),
        sa.Column("previous_reached", sa.BigInteger),
    )
    op.create_table(
        "gf_cohort_metrics",
        *_key("framework", "as_of", "cohort", "segment", "value", "step"),
        sa.Column("mature", sa.Boolean),
        sa.Column("entered", sa.BigInteger),
        sa.Column("reached", sa.BigInteger),
        sa.Column("conversion", sa.Double),
    )
    op.create_table(
        "gf_segment_metrics",
        *_key("framework", "as_of", "segment", "value", "step"),
        sa.Column("entered", sa.BigInteger),
        sa.Column("reached", sa.BigInteger),
        sa.Column("conversion", sa.Double),
    )
    op.create_table(
        "gf_quality_checks",
        *_key("framework", "as_of", "name"),
        sa.Column("target", sa.Text),
        sa.Column("severity", sa.String(16)),
        sa.Column("success", sa.Boolean),
        sa.Column("observed", sa.Text),
    )
    op.create_table(
        "gf_milestones",
        *_key("framework", "step", "entity_id"),
        sa.Column("reached_at", TS, nullable=False),
    )
    op.create_table(
        "gf_watermarks",
        *_key("framework", "step"),
        sa.Column("watermark", TS, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "gf_watermarks", "gf_milestones", "gf_quality_checks", "gf_segment_metrics",
        "gf_cohort_metrics", "gf_step_metrics", "gf_snapshots",
    ):
        op.drop_table(table)
    op.drop_index("ix_gf_runs_framework_as_of", table_name="gf_runs")
    op.drop_table("gf_runs")

"""The run store as marketarena 0.1 made it with sqlite3: runs, days, fills, checkpoints
(pickled then), diagnostics and interventions.

A store written before migrations existed has exactly these tables and no
``alembic_version``; opening it stamps it at this revision and upgrades it from here.

Revision ID: 0001
Revises:
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# PostgreSQL's REAL is single precision; NAVs and prices need double (SQLite: REAL affinity)
DOUBLE = sa.Float(precision=53)


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("run_id", sa.Text, primary_key=True),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("symbols", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("created", DOUBLE, nullable=False),
        sa.Column("updated", DOUBLE, nullable=False),
    )
    op.create_table(
        "days",
        sa.Column("run_id", sa.Text, primary_key=True),
        sa.Column("step", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("date", sa.Text, nullable=False),
        sa.Column("nav", DOUBLE, nullable=False),
        sa.Column("cash", DOUBLE, nullable=False),
        sa.Column("turnover", DOUBLE, nullable=False),
        sa.Column("costs", DOUBLE, nullable=False),
        sa.Column("shares", sa.Text, nullable=False),
        sa.Column("weights", sa.Text, nullable=False),
    )
    op.create_table(
        "fills",
        sa.Column("run_id", sa.Text, nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("date", sa.Text, nullable=False),
        sa.Column("symbol", sa.Text, nullable=False),
        sa.Column("side", sa.Text, nullable=False),
        sa.Column("shares", DOUBLE, nullable=False),
        sa.Column("price", DOUBLE, nullable=False),
        sa.Column("cost", DOUBLE, nullable=False),
    )
    op.create_index("fills_by_run", "fills", ["run_id", "date"])
    op.create_table(
        "checkpoints",
        sa.Column("run_id", sa.Text, primary_key=True),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("env_state", sa.LargeBinary, nullable=False),
        sa.Column("agent_state", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "diagnostics",
        sa.Column("run_id", sa.Text, primary_key=True),
        sa.Column("diagnostics", sa.Text, nullable=False),
    )
    op.create_table(
        "interventions",
        sa.Column("run_id", sa.Text, nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("date", sa.Text, nullable=False),
        sa.Column("rule", sa.Text, nullable=False),
        sa.Column("amount", DOUBLE, nullable=False),
    )
    op.create_index("interventions_by_run", "interventions", ["run_id", "step"])


def downgrade() -> None:
    for table in ("interventions", "diagnostics", "checkpoints", "fills", "days", "runs"):
        op.drop_table(table)

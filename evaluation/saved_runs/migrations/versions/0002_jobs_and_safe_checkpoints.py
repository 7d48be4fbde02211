"""Jobs and webhook deliveries for the service; checkpoints say their format.

``checkpoints.format``: ``pickle`` for every checkpoint written before (never unpickled on
reading: ``marketarena runs upgrade STORE --trust`` converts them), ``json`` for those the
codec (:mod:`~marketarena.evaluation.saved_runs.codec`) writes. Interventions keep their
insertion order in a ``seq`` column (SQLite's implicit rowid does not exist in PostgreSQL).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

DOUBLE = sa.Float(precision=53)


def upgrade() -> None:
    op.add_column(
        "checkpoints",
        sa.Column("format", sa.Text, nullable=False, server_default=sa.text("'pickle'")),
    )
    op.add_column("interventions", sa.Column("seq", sa.Integer, nullable=False, server_default="0"))
    if op.get_context().dialect.name == "sqlite":  # the order 0.1 read them in
        op.execute("UPDATE interventions SET seq = rowid")
    op.create_table(
        "jobs",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("run_ids", sa.Text, nullable=False),
        sa.Column("progress", sa.Text, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("created", DOUBLE, nullable=False),
        sa.Column("started", DOUBLE),
        sa.Column("finished", DOUBLE),
        sa.Column("worker_pid", sa.Integer),
    )
    op.create_index("jobs_by_status", "jobs", ["status", "created"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("event", sa.Text, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("created", DOUBLE, nullable=False),
        sa.Column("updated", DOUBLE, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
    op.drop_index("jobs_by_status", "jobs")
    op.drop_table("jobs")
    with op.batch_alter_table("interventions") as batch:
        batch.drop_column("seq")
    with op.batch_alter_table("checkpoints") as batch:
        batch.drop_column("format")

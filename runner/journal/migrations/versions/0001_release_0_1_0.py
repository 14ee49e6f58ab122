"""0001: the journal of release 0.1.0 (commit 7dd22df), the last release before versioned migrations.

Every table of every MetaData that release created in one database: the journal (runs, steps,
order_intents, broker_calls, status_transitions, fills, events), the daemon's fires and daemons, the
kill switch's control and halt_passes, and the paper broker's book. Frozen: plain column types (no
runner TypeDecorators), so later edits to the models can never change what this revision creates.

Every CREATE is ``IF NOT EXISTS``: a journal of that release holds the subset of tables its commands
happened to create (a journal that never ran the daemon has no ``fires``), and is brought to a
complete 0001 by this same revision.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "broker_calls",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.Column("step_id", sa.String(length=64), nullable=True),
        sa.Column("client_order_id", sa.String(length=64), nullable=True),
        sa.Column("method", sa.String(length=32), nullable=False),
        sa.Column("request", sa.Text(), nullable=True),
        sa.Column("response", sa.Text(), nullable=True),
        sa.Column("error", sa.String(length=40), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("duration_us", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        if_not_exists=True,
    )
    op.create_index(
        op.f("ix_broker_calls_client_order_id"),
        "broker_calls",
        ["client_order_id"],
        unique=False,
        if_not_exists=True,
    )
    op.create_index(
        op.f("ix_broker_calls_run_id"), "broker_calls", ["run_id"], unique=False, if_not_exists=True
    )
    op.create_table(
        "control",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("halted", sa.Boolean(), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("since", sa.DateTime(), nullable=False),
        sa.Column("by", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        if_not_exists=True,
    )
    op.create_table(
        "daemons",
        sa.Column("daemon_id", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=128), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("playbook_dir", sa.Text(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=False),
        sa.Column("stopped_at", sa.DateTime(), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("daemon_id"),
        if_not_exists=True,
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.Column("step_id", sa.String(length=64), nullable=True),
        sa.Column("client_order_id", sa.String(length=64), nullable=True),
        sa.Column("level", sa.String(length=8), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        if_not_exists=True,
    )
    op.create_index(op.f("ix_events_run_id"), "events", ["run_id"], unique=False, if_not_exists=True)
    op.create_table(
        "fills",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("client_order_id", sa.String(length=64), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("price", sa.String(length=40), nullable=True),
        sa.Column("cumulative_quantity", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        if_not_exists=True,
    )
    op.create_index(
        op.f("ix_fills_client_order_id"), "fills", ["client_order_id"], unique=False, if_not_exists=True
    )
    op.create_index(op.f("ix_fills_run_id"), "fills", ["run_id"], unique=False, if_not_exists=True)
    op.create_table(
        "fires",
        sa.Column("fire_id", sa.String(length=40), nullable=False),
        sa.Column("playbook", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("scheduled_for", sa.DateTime(), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("claimed_by", sa.String(length=64), nullable=False),
        sa.Column("claimed_at", sa.DateTime(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("fire_id"),
        sa.UniqueConstraint("playbook", "scheduled_for", name="uq_fires_slot"),
        if_not_exists=True,
    )
    op.create_index(
        "ix_fires_playbook_time", "fires", ["playbook", "scheduled_for"], unique=False, if_not_exists=True
    )
    op.create_table(
        "halt_passes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("by", sa.String(length=128), nullable=True),
        sa.Column("open_before", sa.Integer(), nullable=False),
        sa.Column("cancelled", sa.Integer(), nullable=False),
        sa.Column("still_open", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        if_not_exists=True,
    )
    op.create_index(
        op.f("ix_halt_passes_account"), "halt_passes", ["account"], unique=False, if_not_exists=True
    )
    op.create_table(
        "paper_accounts",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("ver", sa.Integer(), nullable=False),
        sa.Column("next_seq", sa.Integer(), nullable=False),
        sa.Column("last_second", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("name"),
        if_not_exists=True,
    )
    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("playbook", sa.String(length=64), nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("scheduled_for", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("starts", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("run_id"),
        if_not_exists=True,
    )
    op.create_index(op.f("ix_runs_playbook"), "runs", ["playbook"], unique=False, if_not_exists=True)
    op.create_table(
        "status_transitions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("client_order_id", sa.String(length=64), nullable=False),
        sa.Column("old_status", sa.String(length=20), nullable=False),
        sa.Column("new_status", sa.String(length=20), nullable=False),
        sa.Column("legal", sa.Boolean(), nullable=False),
        sa.Column("raw_status", sa.String(length=64), nullable=True),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        if_not_exists=True,
    )
    op.create_index(
        op.f("ix_status_transitions_client_order_id"),
        "status_transitions",
        ["client_order_id"],
        unique=False,
        if_not_exists=True,
    )
    op.create_table(
        "order_intents",
        sa.Column("client_order_id", sa.String(length=64), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("step_id", sa.String(length=64), nullable=False),
        sa.Column("slot", sa.String(length=200), nullable=False),
        sa.Column("leg", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("group_id", sa.String(length=64), nullable=True),
        sa.Column("instrument", sa.Text(), nullable=False),
        sa.Column("instrument_key", sa.String(length=120), nullable=False),
        sa.Column("side", sa.String(length=4), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("order_type", sa.String(length=8), nullable=False),
        sa.Column("product", sa.String(length=8), nullable=False),
        sa.Column("validity", sa.String(length=8), nullable=False),
        sa.Column("price", sa.String(length=40), nullable=True),
        sa.Column("trigger_price", sa.String(length=40), nullable=True),
        sa.Column("disclosed_quantity", sa.Integer(), nullable=False),
        sa.Column("tag", sa.String(length=40), nullable=True),
        sa.Column("resolution", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("broker_order_id", sa.String(length=64), nullable=True),
        sa.Column("filled_quantity", sa.Integer(), nullable=False),
        sa.Column("average_price", sa.String(length=40), nullable=True),
        sa.Column("current_price", sa.String(length=40), nullable=True),
        sa.Column("current_type", sa.String(length=8), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["runs.run_id"],
        ),
        sa.PrimaryKeyConstraint("client_order_id"),
        sa.UniqueConstraint("run_id", "slot", "leg", "attempt", name="uq_intents_slot"),
        if_not_exists=True,
    )
    op.create_index(
        op.f("ix_order_intents_account"), "order_intents", ["account"], unique=False, if_not_exists=True
    )
    op.create_index(
        op.f("ix_order_intents_broker_order_id"),
        "order_intents",
        ["broker_order_id"],
        unique=False,
        if_not_exists=True,
    )
    op.create_table(
        "paper_fills",
        sa.Column("account", sa.String(), nullable=False),
        sa.Column("fill_no", sa.Integer(), nullable=False),
        sa.Column("trade_id", sa.String(), nullable=False),
        sa.Column("ver", sa.Integer(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account"],
            ["paper_accounts.name"],
        ),
        sa.PrimaryKeyConstraint("account", "fill_no"),
        if_not_exists=True,
    )
    op.create_index("ix_paper_fills_ver", "paper_fills", ["account", "ver"], unique=False, if_not_exists=True)
    op.create_table(
        "paper_orders",
        sa.Column("account", sa.String(), nullable=False),
        sa.Column("broker_order_id", sa.String(), nullable=False),
        sa.Column("client_order_id", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("ver", sa.Integer(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account"],
            ["paper_accounts.name"],
        ),
        sa.PrimaryKeyConstraint("account", "broker_order_id"),
        sa.UniqueConstraint("account", "client_order_id", name="uq_paper_orders_client"),
        if_not_exists=True,
    )
    op.create_index(
        "ix_paper_orders_ver", "paper_orders", ["account", "ver"], unique=False, if_not_exists=True
    )
    op.create_table(
        "paper_positions",
        sa.Column("account", sa.String(), nullable=False),
        sa.Column("instrument", sa.String(), nullable=False),
        sa.Column("product", sa.String(), nullable=False),
        sa.Column("ver", sa.Integer(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account"],
            ["paper_accounts.name"],
        ),
        sa.PrimaryKeyConstraint("account", "instrument", "product"),
        if_not_exists=True,
    )
    op.create_table(
        "steps",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("step_id", sa.String(length=64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["runs.run_id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id", "step_id", name="uq_steps_run_step"),
        if_not_exists=True,
    )


def downgrade() -> None:
    raise NotImplementedError("journals are never downgraded: restore a backup instead")

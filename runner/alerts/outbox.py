"""Alerts that could not be delivered, kept in the journal (``alert_outbox``) and sent by the next process.

A row is one message for one target. Written only when a delivery failed or a process exits with messages
still queued (never on the fire path: the worker thread writes it); deleted once delivered.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from runner.journal.db import ScrubbedText, UTCDateTime, create_all

metadata = sa.MetaData()

alert_outbox = sa.Table(
    "alert_outbox",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("target", sa.String(64), nullable=False),
    sa.Column("event", sa.String(40), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("title", ScrubbedText, nullable=False),
    sa.Column("body", ScrubbedText, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", ScrubbedText, nullable=True),
)

# A row that failed this often is given up (logged): a target removed from the file, a revoked token.
MAX_ATTEMPTS = 20


@dataclass(frozen=True, slots=True)
class Message:
    """One rendered message for one target."""

    target: str
    event: str
    severity: str
    title: str
    body: str
    created_at: dt.datetime
    row_id: int | None = None  # set for a message read back from the outbox
    attempts: int = 0


class Outbox:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        create_all(engine, metadata)

    def put(self, messages: list[Message], error: str | None = None) -> None:
        if not messages:
            return
        with self.engine.begin() as conn:
            for m in messages:
                if m.row_id is not None:
                    conn.execute(
                        alert_outbox.update()
                        .where(alert_outbox.c.id == m.row_id)
                        .values(attempts=m.attempts + 1, last_error=error)
                    )
                else:
                    conn.execute(
                        alert_outbox.insert().values(
                            created_at=m.created_at,
                            target=m.target,
                            event=m.event,
                            severity=m.severity,
                            title=m.title,
                            body=m.body,
                            attempts=1 if error else 0,
                            last_error=error,
                        )
                    )

    def pending(self, limit: int = 200) -> list[Message]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(alert_outbox).order_by(alert_outbox.c.id).limit(limit)).mappings()
            return [
                Message(
                    r["target"],
                    r["event"],
                    r["severity"],
                    r["title"],
                    r["body"],
                    r["created_at"],
                    r["id"],
                    r["attempts"],
                )
                for r in rows
            ]

    def delete(self, row_ids: list[int]) -> None:
        if row_ids:
            with self.engine.begin() as conn:
                conn.execute(alert_outbox.delete().where(alert_outbox.c.id.in_(row_ids)))

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(alert_outbox)).scalar_one())

"""Tables every service owns a copy of: inbox (consumed events), outbox (events to send), operator actions."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
Id = BigInteger().with_variant(Integer(), "sqlite")


def new_metadata() -> MetaData:
    return MetaData(naming_convention=NAMING_CONVENTION)


def inbox_table(metadata: MetaData) -> Table:
    return Table(
        "inbox",
        metadata,
        Column("consumer", String(100), primary_key=True),
        Column("event_id", String(200), primary_key=True),
        Column("topic", String(200), nullable=False),
        Column("partition", Integer, nullable=False),
        Column("offset", BigInteger, nullable=False),
        Column("processed_at", DateTime(timezone=True), nullable=False),
    )


def outbox_table(metadata: MetaData) -> Table:
    table = Table(
        "outbox",
        metadata,
        Column("id", Id, primary_key=True, autoincrement=True),
        Column("event_id", String(200), nullable=False),
        Column("topic", String(200), nullable=False),
        Column("key", String(200), nullable=False),
        Column("payload", Text, nullable=False),
        # Extra Kafka headers as a JSON object (trace context of the handled event), or NULL.
        Column("headers", Text, nullable=True),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("published_at", DateTime(timezone=True), nullable=True),
        UniqueConstraint("event_id"),
    )
    Index("ix_outbox_unpublished", table.c.published_at, table.c.id)
    return table


def operator_action_table(metadata: MetaData) -> Table:
    """Who replayed or redrove what, when, with which plan and result (JSON texts): the audit trail."""
    table = Table(
        "operator_action",
        metadata,
        Column("id", Id, primary_key=True, autoincrement=True),
        Column("operator", String(200), nullable=False),
        Column("command", String(50), nullable=False),  # replay | dlq redrive
        Column("dry_run", Boolean, nullable=False),
        Column("status", String(20), nullable=False),  # planned | running | completed | failed
        Column("parameters", Text, nullable=False),
        Column("plan", Text, nullable=False),
        Column("result", Text, nullable=True),
        Column("started_at", DateTime(timezone=True), nullable=False),
        Column("finished_at", DateTime(timezone=True), nullable=True),
    )
    Index("ix_operator_action_started_at", table.c.started_at)
    return table

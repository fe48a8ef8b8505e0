"""Tables of the dispatch service (its own database): provider directory, assignments, inbox, outbox."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, DateTime, Float, String, Table, Text

from services.common.tables import inbox_table, new_metadata, operator_action_table, outbox_table

metadata = new_metadata()
inbox = inbox_table(metadata)
outbox = outbox_table(metadata)
operator_action = operator_action_table(metadata)

provider = Table(
    "provider",
    metadata,
    Column("provider_id", String(200), primary_key=True),
    Column("event_id", String(200), nullable=False),
    Column("company_name", String(300), nullable=False),
    Column("trades", Text, nullable=False),  # JSON list
    Column("zips", Text, nullable=False),  # JSON list
    Column("in_network", Boolean, nullable=False),
    Column("accepts_second_opinions", Boolean, nullable=False),
    Column("rating", Float, nullable=False),  # a score, not money
    Column("active", Boolean, nullable=False),
    Column("technicians", Text, nullable=False),  # JSON list of {technician_id, senior}
    Column("occurred_at", DateTime(timezone=True), nullable=False),
)

assignment = Table(
    "assignment",
    metadata,
    Column("case_id", String(64), primary_key=True),
    Column("service_order_id", String(200), nullable=False, index=True),
    Column("outcome", String(30), nullable=False),  # job_created | unassigned
    Column("job_id", String(200), nullable=True, unique=True),
    Column("provider_id", String(200), nullable=True),
    Column("technician_id", String(200), nullable=True),
    Column("network", String(30), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

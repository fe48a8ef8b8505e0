"""Tables of the payout service (its own database): claims, payouts, customer charges, inbox, outbox."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, String, Table, UniqueConstraint

from services.common.tables import inbox_table, new_metadata, operator_action_table, outbox_table

metadata = new_metadata()
inbox = inbox_table(metadata)
outbox = outbox_table(metadata)
operator_action = operator_action_table(metadata)

claim = Table(
    "claim",
    metadata,
    Column("claim_id", String(64), primary_key=True),
    Column("job_id", String(200), nullable=False, unique=True),
    Column("case_id", String(64), nullable=False),
    Column("service_order_id", String(200), nullable=False),
    Column("status", String(20), nullable=False),  # completed: opened and completed together
    Column("opened_at", DateTime(timezone=True), nullable=False),
    Column("completed_at", DateTime(timezone=True), nullable=True),
)

payout = Table(
    "payout",
    metadata,
    Column("payout_id", String(64), primary_key=True),
    Column("case_id", String(64), nullable=False, index=True),
    Column("claim_id", String(64), nullable=False),
    Column("job_id", String(200), nullable=False),
    Column("provider_id", String(200), nullable=False),
    Column("fee_type", String(40), nullable=False),
    Column("amount_cents", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
    # Money never twice: one payout per job and fee type, whatever the delivery.
    UniqueConstraint("job_id", "fee_type", name="uq_payout_job_fee"),
)

customer_charge = Table(
    "customer_charge",
    metadata,
    Column("case_id", String(64), primary_key=True),
    Column("customer_id", String(200), nullable=False),
    Column("amount_cents", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("reason", String(30), nullable=False),
    Column("assessed_at", DateTime(timezone=True), nullable=False),
)

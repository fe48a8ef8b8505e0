"""Tables of the decision service (its own database): reports, cases, approvals, inbox, outbox."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from services.common.tables import Id, inbox_table, new_metadata, operator_action_table, outbox_table

metadata = new_metadata()
inbox = inbox_table(metadata)
outbox = outbox_table(metadata)
operator_action = operator_action_table(metadata)

report = Table(
    "report",
    metadata,
    Column("service_job_id", String(200), primary_key=True),
    Column("service_order_id", String(200), nullable=False, index=True),
    Column("event_id", String(200), nullable=False),
    Column("provider_id", String(200), nullable=False),
    Column("technician_id", String(200), nullable=False),
    Column("customer_id", String(200), nullable=False),
    Column("trade", String(100), nullable=False),
    Column("property_zip", String(50), nullable=False),
    Column("failure_found", Boolean, nullable=False),
    Column("component", String(200), nullable=True),
    Column("cause", String(50), nullable=True),
    Column("covered", Boolean, nullable=True),
    Column("service_call_fee_cents", BigInteger, nullable=False),
    Column("diagnosis_fee_cents", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("deductible_cents", BigInteger, nullable=False),
    Column("deductible_paid_in_full", Boolean, nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
)

case = Table(
    "so_case",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),  # arrival order
    Column("case_id", String(64), nullable=False),
    Column("request_event_id", String(200), nullable=False),
    Column("service_order_id", String(200), nullable=False),
    Column("original_job_id", String(200), nullable=False),
    Column("source", String(50), nullable=False),
    Column("reason_code", String(100), nullable=False),
    Column("status", String(30), nullable=False),
    Column("request", Text, nullable=False),  # the request event as received (JSON)
    Column("denial_code", String(100), nullable=True),
    Column("decided_by_id", String(200), nullable=True),
    Column("decided_by_role", String(100), nullable=True),
    Column("rules", Text, nullable=True),  # JSON list of rule ids that fired
    Column("policy_version", String(100), nullable=True),
    Column("second_job_id", String(200), nullable=True),
    Column("second_provider_id", String(200), nullable=True),
    Column("outcome", String(50), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("case_id"),
    UniqueConstraint("request_event_id"),
)
Index("ix_so_case_order_status", case.c.service_order_id, case.c.status)
Index("ix_so_case_second_job_id", case.c.second_job_id)

approval = Table(
    "approval",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),  # arrival order
    Column("event_id", String(200), nullable=False),
    Column("service_order_id", String(200), nullable=False),
    Column("service_job_id", String(200), nullable=False),
    Column("decision", String(20), nullable=False),
    Column("approver_id", String(200), nullable=False),
    Column("approver_role", String(100), nullable=False),
    Column("note", Text, nullable=True),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("used_by_case_id", String(64), nullable=True),
    Column("case_id", String(64), nullable=True),  # the case it was given for, when the approver named one
    UniqueConstraint("event_id"),
)
Index("ix_approval_order_job", approval.c.service_order_id, approval.c.service_job_id)

# Every event in and out that concerns a case, appended in the transaction that handled it: the
# case timeline of the console and the case API.
case_event = Table(
    "case_event",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("case_id", String(64), nullable=False),
    Column("direction", String(3), nullable=False),  # in | out
    Column("topic", String(200), nullable=False),
    Column("event_id", String(200), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),  # the event's own time
    Column("recorded_at", DateTime(timezone=True), nullable=False),  # when this service handled it
    Column("summary", Text, nullable=False),  # JSON object: the fields worth showing
    UniqueConstraint("case_id", "direction", "event_id"),
)
Index("ix_case_event_case", case_event.c.case_id, case_event.c.id)

# Who approved or denied what from the console or the case API, and who was refused.
approval_audit = Table(
    "approval_audit",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("case_id", String(64), nullable=False),
    Column("user_id", String(200), nullable=False),
    Column("role", String(100), nullable=False),
    Column("decision", String(20), nullable=False),  # approve | deny
    Column("note", Text, nullable=True),
    Column("outcome", String(20), nullable=False),  # recorded | forbidden | conflict
    Column("event_id", String(200), nullable=True),  # the approval_recorded event it published
    Column("at", DateTime(timezone=True), nullable=False),
)
Index("ix_approval_audit_case", approval_audit.c.case_id)

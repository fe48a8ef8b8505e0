"""Use cases of the payout service: pay the original provider on a grant, settle on a conclusion."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from schemas import v1
from services.common.ids import derive
from services.common.metrics import ServiceMetrics
from services.common.money import to_cents, to_str
from services.common.outbox import Outgoing
from services.common.policy import Policy
from services.payout.adapters.repository import PayoutRepository
from services.payout.domain.fees import Fee, customer_charge, original_fees, second_visit_fee


class PayoutHandlers:
    def __init__(self, policy: Policy, metrics: ServiceMetrics) -> None:
        self.policy = policy
        self.metrics = metrics

    async def on_granted(self, session: Any, ev: v1.SecondOpinionGranted) -> Sequence[Outgoing]:
        charges = {
            "service_call_fee": to_cents(ev.original_charges.service_call_fee),
            "diagnosis_fee": to_cents(ev.original_charges.diagnosis_fee),
        }
        fees = original_fees(self.policy, ev.source, charges)
        return await self._pay(
            PayoutRepository(session),
            ev,
            ev.original_job_id,
            ev.original_provider_id,
            ev.original_charges.currency,
            fees,
        )

    async def on_concluded(self, session: Any, ev: v1.SecondOpinionConcluded) -> Sequence[Outgoing]:
        repo = PayoutRepository(session)
        visit = to_cents(ev.visit_charges.amount)
        fee = second_visit_fee(visit)
        out = await self._pay(
            repo, ev, ev.second_job_id, ev.second_provider_id, ev.visit_charges.currency, [fee] if fee else []
        )
        charge = customer_charge(ev.second_visit_charges, ev.outcome, visit)
        if charge is not None and await repo.add_charge(
            case_id=ev.case_id,
            customer_id=ev.customer_id,
            amount_cents=charge.cents,
            currency=ev.visit_charges.currency,
            reason=charge.reason,
        ):
            out.append(_charge_event(ev, charge.cents, charge.reason))
        return out

    async def _pay(self, repo, ev, job_id, provider_id, currency, fees: list[Fee]) -> list[Outgoing]:  # type: ignore[no-untyped-def]
        claim_id = derive("claim", job_id)
        await repo.complete_claim(claim_id, job_id, ev.case_id, ev.service_order_id)
        out = []
        for fee in fees:
            payout_id = derive("payout", job_id, fee.fee_type)
            if await repo.add_payout(
                payout_id=payout_id,
                case_id=ev.case_id,
                claim_id=claim_id,
                job_id=job_id,
                provider_id=provider_id,
                fee_type=fee.fee_type,
                amount_cents=fee.cents,
                currency=currency,
            ):
                self.metrics.payouts.labels(fee.fee_type).inc()
                self.metrics.payout_cents.labels(fee.fee_type).inc(fee.cents)
                out.append(_payout_event(ev, payout_id, claim_id, job_id, provider_id, fee, currency))
        return out


def _payout_event(ev, payout_id, claim_id, job_id, provider_id, fee: Fee, currency: str) -> Outgoing:  # type: ignore[no-untyped-def]
    event = v1.PayoutIssued(
        event_id=derive(ev.case_id, v1.PAYOUT_ISSUED, fee.fee_type),
        occurred_at=datetime.now(UTC),
        service_order_id=ev.service_order_id,
        payout_id=payout_id,
        case_id=ev.case_id,
        claim_id=claim_id,
        job_id=job_id,
        provider_id=provider_id,
        amount=to_str(fee.cents),
        currency=currency,
        fee_type=fee.fee_type,
    )
    return Outgoing(v1.PAYOUT_ISSUED, ev.service_order_id, event)


def _charge_event(ev: v1.SecondOpinionConcluded, cents: int, reason: str) -> Outgoing:
    event = v1.CustomerChargeAssessed(
        event_id=derive(ev.case_id, v1.CUSTOMER_CHARGE_ASSESSED),
        occurred_at=datetime.now(UTC),
        service_order_id=ev.service_order_id,
        case_id=ev.case_id,
        customer_id=ev.customer_id,
        amount=to_str(cents),
        currency=ev.visit_charges.currency,
        reason=reason,
    )
    return Outgoing(v1.CUSTOMER_CHARGE_ASSESSED, ev.service_order_id, event)

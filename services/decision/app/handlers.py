"""Use cases of the decision service: one function per consumed event, each inside one transaction.

Every handler first takes the per-order lock, so a request, its report, its approvals and
the dispatch outcome of one order are applied one at a time however Kafka interleaves topics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from schemas import v1
from services.common.db import lock_order
from services.common.metrics import ServiceMetrics
from services.common.outbox import Outgoing
from services.common.policy import Policy
from services.decision.adapters.repository import DecisionRepository
from services.decision.app import mapping
from services.decision.domain.model import AwaitingApproval, Denied, Granted
from services.decision.domain.policy import conclude, decide


class DecisionHandlers:
    def __init__(self, policy: Policy, metrics: ServiceMetrics) -> None:
        self.policy = policy
        self.metrics = metrics

    async def on_report(self, session: Any, ev: v1.ServiceReportReceived) -> Sequence[Outgoing]:
        await lock_order(session, ev.service_order_id)
        repo = DecisionRepository(session)
        if not await repo.add_report(ev):
            return []  # a later report for a job already reported changes nothing
        out: list[Outgoing] = []
        linked = await repo.case_for_second_job(ev.service_order_id, ev.service_job_id)
        if linked is not None and linked.status == "dispatched":
            await _note_in(repo, linked.case_id, v1.SERVICE_REPORT_RECEIVED, ev)
            out += await self._conclude(repo, linked)
        # Requests that arrived before this report are decided now, in arrival order.
        for waiting in await repo.cases_in(ev.service_order_id, ev.service_job_id, "awaiting_report"):
            await _note_in(repo, waiting.case_id, v1.SERVICE_REPORT_RECEIVED, ev)
            out += await self._decide(repo, waiting.case_id)
        return out

    async def on_request(self, session: Any, ev: v1.SecondOpinionRequested) -> Sequence[Outgoing]:
        await lock_order(session, ev.service_order_id)
        repo = DecisionRepository(session)
        case_id = mapping.case_id_for(ev.event_id)
        if await repo.get_case(case_id) is not None:
            return []
        report = await repo.get_report(ev.service_job_id)
        await repo.add_case(case_id, ev, "awaiting_report")
        await _note_in(repo, case_id, v1.SECOND_OPINION_REQUESTED, ev)
        if report is None or report.service_order_id != ev.service_order_id:
            return []
        await _note_row(repo, case_id, v1.SERVICE_REPORT_RECEIVED, report, mapping.report_summary(report))
        return await self._decide(repo, case_id)

    async def on_approval(self, session: Any, ev: v1.ApprovalRecorded) -> Sequence[Outgoing]:
        await lock_order(session, ev.service_order_id)
        repo = DecisionRepository(session)
        await repo.add_approval(ev)
        out: list[Outgoing] = []
        if ev.case_id is not None:
            named = await repo.get_case(ev.case_id)
            if named is not None and named.status != "awaiting_approval":
                # Given for a case already decided (a second approver was a moment late): kept for the
                # record on that case, never deciding another request of the job.
                await repo.use_approval(ev.event_id, ev.case_id)
                await _note_in(repo, ev.case_id, v1.APPROVAL_RECORDED, ev)
                return out
        for waiting in await repo.cases_in(ev.service_order_id, ev.service_job_id, "awaiting_approval"):
            await _note_in(repo, waiting.case_id, v1.APPROVAL_RECORDED, ev)
            out += await self._decide(repo, waiting.case_id)
        return out

    async def on_job_created(self, session: Any, ev: v1.ServiceJobCreated) -> Sequence[Outgoing]:
        await lock_order(session, ev.service_order_id)
        repo = DecisionRepository(session)
        case = await repo.get_case(ev.case_id)
        if case is None or case.status != "granted":
            return []
        await _note_in(repo, ev.case_id, v1.SERVICE_JOB_CREATED, ev)
        await repo.update_case(
            ev.case_id, status="dispatched", second_job_id=ev.job_id, second_provider_id=ev.provider_id
        )
        if await repo.get_report(ev.job_id) is None:
            return []
        # The second report arrived before the job link: conclude now.
        return await self._conclude(repo, await repo.get_case(ev.case_id))

    async def on_unassigned(self, session: Any, ev: v1.DispatchUnassigned) -> Sequence[Outgoing]:
        await lock_order(session, ev.service_order_id)
        repo = DecisionRepository(session)
        case = await repo.get_case(ev.case_id)
        if case is not None and case.status == "granted":
            await _note_in(repo, ev.case_id, v1.DISPATCH_UNASSIGNED, ev)
            await repo.update_case(ev.case_id, status="unassigned")
        return []

    async def _decide(self, repo: DecisionRepository, case_id: str) -> list[Outgoing]:
        case = await repo.get_case(case_id)
        request = v1.SecondOpinionRequested.model_validate_json(case.request)
        report = await repo.get_report(request.service_job_id)
        approvals = await repo.unused_approvals(request.service_order_id, request.service_job_id, case_id)
        decision = decide(
            self.policy,
            mapping.request_facts(request),
            mapping.report_facts(report),
            open_case_id=await repo.open_case_id(request.service_order_id, besides=case_id),
            approvals=[mapping.approval_facts(a) for a in approvals],
        )
        used = getattr(decision, "approval_used", None)
        if used is not None:
            chosen = next(a for a in approvals if mapping.approval_facts(a) == used)
            await repo.use_approval(chosen.event_id, case_id)
            await _note_row(repo, case_id, v1.APPROVAL_RECORDED, chosen, mapping.approval_summary(chosen))
        return await self._record(repo, case_id, request, report, decision)

    async def _record(self, repo, case_id, request, report, decision) -> list[Outgoing]:  # type: ignore[no-untyped-def]
        version = self.policy.version
        if isinstance(decision, AwaitingApproval):
            await repo.update_case(case_id, status="awaiting_approval", rules=decision.rules)
            return []
        self.metrics.decisions.labels(
            request.source, request.reason_code, "granted" if isinstance(decision, Granted) else "denied"
        ).inc()
        if isinstance(decision, Granted):
            await repo.update_case(
                case_id,
                status="granted",
                rules=decision.rules,
                policy_version=version,
                decided_by_id=decision.decided_by.id,
                decided_by_role=decision.decided_by.role,
            )
            return await _noted_out(repo, [mapping.granted(case_id, request, report, decision, version)])
        assert isinstance(decision, Denied)
        denier = decision.approval_used.approver if decision.approval_used else None  # a supervisor's "no"
        await repo.update_case(
            case_id,
            status="denied",
            rules=decision.rules,
            policy_version=version,
            denial_code=decision.denial_code,
            decided_by_id=denier.id if denier else None,
            decided_by_role=denier.role if denier else None,
        )
        out = [mapping.denied(case_id, request, decision, version)]
        if decision.provider_feedback:
            out.append(
                mapping.feedback(case_id, request.service_order_id, report.provider_id, decision.provider_feedback)
            )
        return await _noted_out(repo, out)

    async def _conclude(self, repo: DecisionRepository, case: Any) -> list[Outgoing]:
        original = await repo.get_report(case.original_job_id)
        second = await repo.get_report(case.second_job_id)
        conclusion = conclude(self.policy, case.source, mapping.diagnosis(original), mapping.diagnosis(second))
        await repo.update_case(case.case_id, status="concluded", outcome=conclusion.outcome)
        return await _noted_out(repo, [mapping.concluded(case, second, original.customer_id, conclusion)])


async def _note_in(repo: DecisionRepository, case_id: str, topic: str, ev: v1.Event) -> None:
    await repo.record_event(case_id, "in", topic, ev.event_id, ev.occurred_at, mapping.summary(ev))


async def _noted_out(repo: DecisionRepository, out: list[Outgoing]) -> list[Outgoing]:
    """Each emitted event joins its case's timeline in the same transaction as the outbox row."""
    for o in out:
        ev: Any = o.event
        await repo.record_event(ev.case_id, "out", o.topic, ev.event_id, ev.occurred_at, mapping.summary(ev))
    return out


async def _note_row(repo: DecisionRepository, case_id: str, topic: str, row: Any, summary: dict[str, Any]) -> None:
    """A stored event (a report or approval received before the case) joins the case's timeline."""
    await repo.record_event(case_id, "in", topic, row.event_id, row.occurred_at, summary)

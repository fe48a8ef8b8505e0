"""Use cases of the decision service: one function per consumed event, each inside one transaction.

Every handler first takes the per-order lock, so a request, its report, its approvals and
the dispatch outcome of one order are applied one at a time however Kafka interleaves topics.

Requests, the hot path, are handled set-based (`on_requests`): a few statements for any number
of requests of distinct orders, so a batch costs about what one request costs. A single request
is a set of one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from schemas import v1
from services.common.db import lock_order, lock_orders
from services.common.metrics import ServiceMetrics
from services.common.outbox import Outgoing
from services.common.policy import Policy
from services.decision.adapters.repository import OPEN_STATES, DecisionRepository
from services.decision.app import mapping
from services.decision.domain.model import AwaitingApproval, Decision, Denied, Granted
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
        waiting = await repo.cases_in(ev.service_order_id, ev.service_job_id, "awaiting_report")
        if waiting:
            report = await repo.get_report(ev.service_job_id)
            for case in waiting:
                await _note_in(repo, case.case_id, v1.SERVICE_REPORT_RECEIVED, ev)
                out += await self._decide(repo, case, report)
        return out

    async def on_request(self, session: Any, ev: v1.SecondOpinionRequested) -> Sequence[Outgoing]:
        return (await self.on_requests(session, [ev]))[0]

    async def on_requests(self, session: Any, events: Sequence[v1.SecondOpinionRequested]) -> list[list[Outgoing]]:
        """Requests of distinct service orders, in one pass: what each one emits, in their order.

        Reads (reports, the orders' cases, approvals only when a decision waits for one) and
        writes (cases with their final status, timeline rows) are one statement each for the set.
        """
        orders = [ev.service_order_id for ev in events]
        if len(set(orders)) != len(orders):
            raise ValueError("on_requests takes requests of distinct service orders")
        await lock_orders(session, sorted(orders))
        repo = DecisionRepository(session)
        reports = await repo.reports_of([ev.service_job_id for ev in events])
        known = await repo.cases_of_orders(orders)  # oldest first
        seen = {c.case_id for c in known}
        open_case = {}
        for c in known:
            if c.status in OPEN_STATES:
                open_case.setdefault(c.service_order_id, c.case_id)
        now = datetime.now(UTC)
        todo: list[tuple[int, str, v1.SecondOpinionRequested, Any]] = []
        outs: list[list[Outgoing]] = [[] for _ in events]
        cases: list[dict[str, Any]] = []
        timeline: list[dict[str, Any]] = []
        for i, ev in enumerate(events):
            case_id = mapping.case_id_for(ev.event_id)
            if case_id in seen:
                continue  # the request was handled before (its case exists)
            timeline.append(_in(case_id, v1.SECOND_OPINION_REQUESTED, ev, now))
            report = reports.get(ev.service_job_id)
            if report is None or report.service_order_id != ev.service_order_id:
                cases.append(_case_row(case_id, ev, now, {"status": "awaiting_report"}))
                continue
            timeline.append(_in_row(case_id, v1.SERVICE_REPORT_RECEIVED, report, mapping.report_summary(report), now))
            todo.append((i, case_id, ev, report))
        # Approvals matter only to a decision that waits for one: look them up for those alone.
        decisions = {i: self._judge(ev, report, open_case.get(ev.service_order_id), ()) for i, _, ev, report in todo}
        waiting = [(i, case_id, ev) for i, case_id, ev, _ in todo if isinstance(decisions[i], AwaitingApproval)]
        approvals = await repo.unused_approvals_of([ev.service_job_id for *_, ev in waiting]) if waiting else []
        for i, case_id, ev, report in todo:
            chosen = None
            if isinstance(decisions[i], AwaitingApproval):
                mine = [a for a in approvals if _may_decide(a, ev, case_id)]
                if mine:
                    decisions[i] = self._judge(ev, report, open_case.get(ev.service_order_id), mine)
                    chosen = _approval_used(decisions[i], mine)
            if chosen is not None:
                await repo.use_approval(chosen.event_id, case_id)
                timeline.append(_in_row(case_id, v1.APPROVAL_RECORDED, chosen, mapping.approval_summary(chosen), now))
            fields, outs[i] = self._verdict(case_id, ev, report, decisions[i])
            cases.append(_case_row(case_id, ev, now, fields))
            timeline += [_out_row(o, now) for o in outs[i]]
        await repo.add_cases(cases)
        await repo.record_events(timeline)
        return outs

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
        waiting = await repo.cases_in(ev.service_order_id, ev.service_job_id, "awaiting_approval")
        if waiting:
            report = await repo.get_report(ev.service_job_id)
            for case in waiting:
                await _note_in(repo, case.case_id, v1.APPROVAL_RECORDED, ev)
                out += await self._decide(repo, case, report)
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

    def _judge(self, request: v1.SecondOpinionRequested, report: Any, open_case_id: str | None, approvals) -> Decision:  # type: ignore[no-untyped-def]
        return decide(
            self.policy,
            mapping.request_facts(request),
            mapping.report_facts(report),
            open_case_id=open_case_id,
            approvals=[mapping.approval_facts(a) for a in approvals],
        )

    async def _decide(self, repo: DecisionRepository, case: Any, report: Any) -> list[Outgoing]:
        """Decide a stored case (waiting for its report or an approval) now that `report` is there."""
        request = v1.SecondOpinionRequested.model_validate_json(case.request)
        approvals = await repo.unused_approvals(request.service_order_id, request.service_job_id, case.case_id)
        decision = self._judge(
            request, report, await repo.open_case_id(request.service_order_id, besides=case.case_id), approvals
        )
        chosen = _approval_used(decision, approvals)
        if chosen is not None:
            await repo.use_approval(chosen.event_id, case.case_id)
            await _note_row(repo, case.case_id, v1.APPROVAL_RECORDED, chosen, mapping.approval_summary(chosen))
        fields, out = self._verdict(case.case_id, request, report, decision)
        await repo.update_case(case.case_id, **fields)
        return await _noted_out(repo, out)

    def _verdict(
        self, case_id: str, request: v1.SecondOpinionRequested, report: Any, decision: Decision
    ) -> tuple[dict[str, Any], list[Outgoing]]:
        """The case columns a decision sets and the events it emits."""
        if isinstance(decision, AwaitingApproval):
            return {"status": "awaiting_approval", "rules": decision.rules}, []
        version = self.policy.version
        self.metrics.decisions.labels(
            request.source, request.reason_code, "granted" if isinstance(decision, Granted) else "denied"
        ).inc()
        if isinstance(decision, Granted):
            fields = {
                "status": "granted",
                "rules": decision.rules,
                "policy_version": version,
                "decided_by_id": decision.decided_by.id,
                "decided_by_role": decision.decided_by.role,
            }
            return fields, [mapping.granted(case_id, request, report, decision, version)]
        assert isinstance(decision, Denied)
        denier = decision.approval_used.approver if decision.approval_used else None  # a supervisor's "no"
        fields = {
            "status": "denied",
            "rules": decision.rules,
            "policy_version": version,
            "denial_code": decision.denial_code,
            "decided_by_id": denier.id if denier else None,
            "decided_by_role": denier.role if denier else None,
        }
        out = [mapping.denied(case_id, request, decision, version)]
        if decision.provider_feedback:
            out.append(
                mapping.feedback(case_id, request.service_order_id, report.provider_id, decision.provider_feedback)
            )
        return fields, out

    async def _conclude(self, repo: DecisionRepository, case: Any) -> list[Outgoing]:
        original = await repo.get_report(case.original_job_id)
        second = await repo.get_report(case.second_job_id)
        conclusion = conclude(self.policy, case.source, mapping.diagnosis(original), mapping.diagnosis(second))
        await repo.update_case(case.case_id, status="concluded", outcome=conclusion.outcome)
        return await _noted_out(repo, [mapping.concluded(case, second, original.customer_id, conclusion)])


def _may_decide(approval: Any, request: v1.SecondOpinionRequested, case_id: str) -> bool:
    """An unused approval of the request's job, given for no case or for this one."""
    return approval.service_order_id == request.service_order_id and approval.case_id in (None, case_id)


def _approval_used(decision: Decision, approvals: Sequence[Any]) -> Any:
    used = getattr(decision, "approval_used", None)
    if used is None:
        return None
    return next(a for a in approvals if mapping.approval_facts(a) == used)


def _case_row(case_id: str, ev: v1.SecondOpinionRequested, now: datetime, fields: dict[str, Any]) -> dict[str, Any]:
    return {
        "case_id": case_id,
        "request_event_id": ev.event_id,
        "service_order_id": ev.service_order_id,
        "original_job_id": ev.service_job_id,
        "source": ev.source,
        "reason_code": ev.reason_code,
        "request": ev.model_dump_json(),
        "created_at": now,
        "updated_at": now,
        **fields,
    }


def _in(case_id: str, topic: str, ev: v1.Event, now: datetime) -> dict[str, Any]:
    return DecisionRepository.event_row(case_id, "in", topic, ev.event_id, ev.occurred_at, mapping.summary(ev), now)


def _in_row(case_id: str, topic: str, row: Any, summary: dict[str, Any], now: datetime) -> dict[str, Any]:
    """A stored event (a report or approval received before the case) as a timeline row."""
    return DecisionRepository.event_row(case_id, "in", topic, row.event_id, row.occurred_at, summary, now)


def _out_row(o: Outgoing, now: datetime) -> dict[str, Any]:
    ev: Any = o.event
    return DecisionRepository.event_row(
        ev.case_id, "out", o.topic, ev.event_id, ev.occurred_at, mapping.summary(ev), now
    )


async def _note_in(repo: DecisionRepository, case_id: str, topic: str, ev: v1.Event) -> None:
    await repo.record_events([_in(case_id, topic, ev, datetime.now(UTC))])


async def _noted_out(repo: DecisionRepository, out: list[Outgoing]) -> list[Outgoing]:
    """Each emitted event joins its case's timeline in the same transaction as the outbox row."""
    now = datetime.now(UTC)
    await repo.record_events([_out_row(o, now) for o in out])
    return out


async def _note_row(repo: DecisionRepository, case_id: str, topic: str, row: Any, summary: dict[str, Any]) -> None:
    """A stored event (a report or approval received before the case) joins the case's timeline."""
    await repo.record_events([_in_row(case_id, topic, row, summary, datetime.now(UTC))])

"""The plan of a synthetic day: messages to publish per order and what each order should end as."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from schemas import v1
from services.simulate.rules import Intended, Market, OrderFacts, SecondVisit, request_from_value


@dataclass(frozen=True)
class Message:
    """One record to publish; `at` (minutes after midnight) is its place in the day's stream."""

    topic: str
    key: str
    at: float
    value: Mapping[str, Any] | None = None
    raw: bytes | None = None
    label: str = ""

    @property
    def bad(self) -> bool:
        return self.label.startswith("bad:")

    def payload(self) -> bytes:
        return self.raw if self.raw is not None else json.dumps(self.value).encode()


@dataclass(frozen=True)
class SecondReport:
    """The second-opinion job's report, published once dispatch names the job."""

    value: Mapping[str, Any]
    duplicate: bool = False


@dataclass(frozen=True)
class OrderPlan:
    order_id: str
    tags: tuple[str, ...]
    messages: tuple[Message, ...]
    intended: Intended
    second_report: SecondReport | None = None


@dataclass(frozen=True)
class Plan:
    seed: int
    run: str
    providers: tuple[Mapping[str, Any], ...]
    orders: tuple[OrderPlan, ...]

    def provider_messages(self) -> list[Message]:
        topic = v1.SERVICE_PROVIDER_UPDATED
        return [Message(topic, p["provider_id"], 0.0, p, label="provider") for p in self.providers]

    def order_messages(self) -> list[Message]:
        """All orders' messages interleaved by time of day, as upstream systems send them."""
        tagged = [(m.at, i, n, m) for i, o in enumerate(self.orders) for n, m in enumerate(o.messages)]
        return [m for *_, m in sorted(tagged, key=lambda t: t[:3])]

    @cached_property
    def by_id(self) -> dict[str, OrderPlan]:
        return {o.order_id: o for o in self.orders}


def facts_from_messages(messages: Sequence[Message], market: Market, second: SecondVisit | None = None) -> OrderFacts:
    """Read an order's facts back from the messages it will publish, in publish order.

    Intended outcomes come from the very bytes that go out, so the plan cannot drift from them.
    A repeated event_id counts once (the services' inbox does the same); bad records count only
    towards the dead-letter topics.
    """
    seen: set[str] = set()
    unique = []
    for m in sorted(messages, key=lambda m: m.at):
        if m.bad or m.value is None or m.value["event_id"] in seen:
            continue
        seen.add(m.value["event_id"])
        unique.append(m)
    report = next(m.value for m in unique if m.topic == v1.SERVICE_REPORT_RECEIVED)
    approvals = [m.value for m in unique if m.topic == v1.APPROVAL_RECORDED]
    return OrderFacts(
        requests=tuple(request_from_value(m.value) for m in unique if m.topic == v1.SECOND_OPINION_REQUESTED),
        charges=report["charges"],
        deductible_paid=report["deductible"]["paid_in_full"],
        market=market,
        recorded=tuple((a["approver"]["role"], a["decision"]) for a in approvals),
        second=second,
        dlq=tuple(Counter(v1.dlq_topic(m.topic) for m in messages if m.bad).items()),
    )

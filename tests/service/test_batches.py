"""Several events in one transaction: same outcomes as one at a time, and a failing event holds back no other."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from aiokafka import TopicPartition

from services.common.backoff import Backoff
from services.common.committer import Committer
from services.common.consumer import APPLIED, DEAD_LETTERED, DUPLICATE, Route
from tests.service.test_flows import directory
from tests.support.bus import FakeRecord
from tests.support.events import report, request

REPORT, REQUEST = "service_report.received", "second_opinion.requested"


def records(*items: tuple[str, str, dict[str, Any] | bytes]) -> list[FakeRecord]:
    out = []
    for offset, (topic, key, value) in enumerate(items):
        raw = value if isinstance(value, bytes) else json.dumps(value).encode()
        out.append(FakeRecord(topic, 0, offset, 0, key.encode(), raw))
    return out


def decision_of(bus):  # type: ignore[no-untyped-def]
    return next(s for s in bus.services if s.spec.name == "decision")


class TestBatch:
    async def test_a_batch_decides_like_single_events_and_dedupes_within_itself(self, bus):
        await directory(bus)
        batch = []
        for n in range(5):
            order, job = f"SO-B{n}", f"SO-B{n}-J1"
            batch += [(REQUEST, order, request(order, job, f"R-B{n}")), (REPORT, order, report(order, job))]
        batch.append(batch[0])  # the same request again, in the same batch
        outcomes = await decision_of(bus).consumer.process_batch(records(*batch))
        assert outcomes == [APPLIED] * 10 + [DUPLICATE]
        await bus.settle()
        granted = bus.events("second_opinion.granted")
        assert sorted(g["service_order_id"] for g in granted) == [f"SO-B{n}" for n in range(5)]
        assert len(bus.events("service_job.created")) == 5 and len(bus.events("payout.issued")) == 10

    async def test_bad_input_is_dead_lettered_and_the_rest_applied(self, bus):
        await directory(bus)
        decision = decision_of(bus)
        batch = records(
            (REPORT, "SO-X", report("SO-X", "SO-X-J1")),
            (REQUEST, "SO-X", b"{not json"),
            (REQUEST, "SO-X", request("SO-X", "SO-X-J1", "R-X")),
        )
        assert await decision.consumer.process_batch(batch) == [APPLIED, DEAD_LETTERED, APPLIED]
        [(dlq, _, value, headers)] = decision.dead_letters
        assert (dlq, value, headers["x-error-class"]) == ("second_opinion.requested.dlq", b"{not json", b"not_json")
        await bus.settle()
        assert len(bus.events("second_opinion.granted")) == 1

    async def test_a_failing_event_rolls_the_batch_back_and_each_record_is_applied_on_its_own(self, bus):
        await directory(bus)
        decision = decision_of(bus)
        consumer = decision.consumer
        real = consumer.routes[REQUEST]

        async def fails_on_boom(session: Any, ev: Any) -> Any:
            if ev.event_id == "R-BOOM":
                raise RuntimeError("handler bug")
            return await real.handle(session, ev)

        failing = dataclasses.replace(
            consumer,
            routes={**consumer.routes, REQUEST: Route(REQUEST, real.model, fails_on_boom)},
            backoff=Backoff(base_s=0.001, cap_s=0.001),
        )
        batch = records(
            (REPORT, "SO-1", report("SO-1", "SO-1-J1")),
            (REQUEST, "SO-1", request("SO-1", "SO-1-J1", "R-1")),
            (REPORT, "SO-2", report("SO-2", "SO-2-J1")),
            (REQUEST, "SO-2", request("SO-2", "SO-2-J1", "R-BOOM")),
            (REQUEST, "SO-2", request("SO-2", "SO-2-J1", "R-2")),
        )
        assert await failing.process_batch(batch) == [APPLIED, APPLIED, APPLIED, DEAD_LETTERED, APPLIED]
        assert [h["x-error-class"] for *_, h in decision.dead_letters] == [b"handler_error"]
        await bus.settle()
        granted = {g["service_order_id"] for g in bus.events("second_opinion.granted")}
        assert granted == {"SO-1", "SO-2"}  # R-2 decided once R-BOOM was out of the way


@dataclasses.dataclass
class FakeConsumer:
    assigned: set[TopicPartition]
    commits: list[dict[TopicPartition, int]] = dataclasses.field(default_factory=list)
    refuse: bool = False

    def assignment(self) -> set[TopicPartition]:
        return self.assigned

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self.refuse:
            raise RuntimeError("CommitFailedError: group rebalanced")
        self.commits.append(dict(offsets))


class TestCommitter:
    TP0, TP1 = TopicPartition("t", 0), TopicPartition("t", 1)

    async def test_without_an_interval_each_record_is_committed_at_once(self):
        c, committer = FakeConsumer({self.TP0}), Committer(0)
        await committer.done(c, records(("t", "k", b"1")))
        assert c.commits == [{self.TP0: 1}]

    async def test_gathered_commits_carry_the_highest_processed_offset_per_partition(self):
        c, committer = FakeConsumer({self.TP0, self.TP1}), Committer(60)
        batch = records(("t", "k", b"a"), ("t", "k", b"b"), ("t", "k", b"c"))
        batch[2].partition = 1
        await committer.done(c, batch)
        assert c.commits == []  # gathered, nothing sent yet
        await committer.flush()
        assert c.commits == [{self.TP0: 2, self.TP1: 3}]
        await committer.flush()
        assert len(c.commits) == 1  # nothing new: nothing sent

    async def test_revoked_partitions_are_left_out_and_a_refused_commit_does_not_raise(self):
        c, committer = FakeConsumer({self.TP1}), Committer(60)
        await committer.done(c, records(("t", "k", b"a")))  # partition 0, no longer ours
        await committer.flush()
        assert c.commits == []
        c.refuse = True
        moved = records(("t", "k", b"a"))
        moved[0].partition = 1
        await committer.done(c, moved)
        await committer.flush()  # logged, not raised: the inbox absorbs the redelivery
        assert c.commits == []

"""Pure planning for replays and redrives: offset ranges, selections, DLQ summaries (no I/O, no clock)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from services.common import dlq_headers

TP = tuple[str, int]  # (topic, partition); aiokafka's TopicPartition is such a tuple
REDRIVEN_FROM = "x-redriven-from"


class PlanError(ValueError):
    """An operator's request that cannot be planned (unknown partition, naive timestamp...)."""


@dataclass(frozen=True)
class Start:
    """Where a replay starts in each partition: the log start, an offset, or the first record at/after a time."""

    kind: Literal["earliest", "offset", "timestamp"]
    offset: int | None = None
    timestamp_ms: int | None = None

    def describe(self) -> dict[str, object]:
        if self.kind == "offset":
            return {"from_offset": self.offset}
        if self.kind == "timestamp":
            return {"from_timestamp_ms": self.timestamp_ms}
        return {"from_earliest": True}


@dataclass(frozen=True, order=True)
class PartitionRange:
    """Offsets [start, end) of one partition; `end` is the end offset noted when planning."""

    topic: str
    partition: int
    start: int
    end: int

    @property
    def count(self) -> int:
        # On a compacted topic some offsets of the range hold no record: this is an upper bound.
        return max(self.end - self.start, 0)

    def to_dict(self) -> dict[str, object]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "from": self.start,
            "to": self.end,
            "count": self.count,
        }


def first_offset(start: Start, begin: int, end: int, at_time: int | None = None) -> int:
    """First offset to read in a partition whose log spans [begin, end).

    An offset below the log start begins at the log start (older records are gone); one past the
    end reads nothing. A timestamp with no record at or after it (`at_time` None) reads nothing.
    """
    if start.kind == "earliest":
        wanted = begin
    elif start.kind == "offset":
        wanted = start.offset if start.offset is not None else begin
    else:
        wanted = end if at_time is None else at_time
    return min(max(wanted, begin), end)


def plan_ranges(
    start: Start,
    begins: Mapping[TP, int],
    ends: Mapping[TP, int],
    at_times: Mapping[TP, int | None] | None = None,
) -> list[PartitionRange]:
    """One range per partition of `ends`, in topic and partition order."""
    at_times = at_times or {}
    return sorted(
        PartitionRange(tp[0], tp[1], first_offset(start, begins.get(tp, 0), end, at_times.get(tp)), end)
        for tp, end in ends.items()
    )


def choose_partitions(available: Mapping[str, Iterable[int]], wanted: Sequence[int] | None) -> list[TP]:
    """The partitions to replay: all of each topic, or those of `wanted` a topic has."""
    chosen = sorted((topic, p) for topic, parts in available.items() for p in parts if wanted is None or p in wanted)
    if wanted is not None:
        unknown = sorted(set(wanted) - {p for _, p in chosen})
        if unknown:
            raise PlanError(f"no chosen topic has partition(s) {', '.join(map(str, unknown))}")
    return chosen


def parse_partitions(text: str) -> tuple[int, ...]:
    """`0,2` -> (0, 2)."""
    try:
        parts = tuple(sorted({int(p) for p in text.split(",") if p.strip()}))
    except ValueError as exc:
        raise PlanError(f"partitions must be numbers separated by commas, not {text!r}") from exc
    if not parts or any(p < 0 for p in parts):
        raise PlanError(f"partitions must be non-negative numbers, not {text!r}")
    return parts


def parse_timestamp(text: str) -> int:
    """An ISO-8601 timestamp with an offset (or Z) -> epoch milliseconds."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise PlanError(f"not an ISO-8601 timestamp: {text!r}") from exc
    if moment.tzinfo is None:
        raise PlanError(f"timestamp {text!r} needs an offset (e.g. +00:00 or Z): a naive time is ambiguous")
    return int(moment.timestamp() * 1000)


def parse_offsets(text: str) -> frozenset[tuple[int, int]]:
    """`0:5,2:17` -> {(0, 5), (2, 17)}: DLQ partition and offset pairs."""
    pairs = set()
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        partition, sep, offset = item.partition(":")
        if not sep or not partition.isdigit() or not offset.isdigit():
            raise PlanError(f"offsets are PARTITION:OFFSET pairs separated by commas, not {item!r}")
        pairs.add((int(partition), int(offset)))
    if not pairs:
        raise PlanError("no PARTITION:OFFSET pair given")
    return frozenset(pairs)


# ---------------------------------------------------------------- dead letters


@dataclass(frozen=True)
class DlqRecord:
    """A record of a `<topic>.dlq` topic, as read from the broker."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode("utf-8", errors="replace")
        return None

    @property
    def where(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"

    @property
    def original_topic(self) -> str | None:
        return self.header(dlq_headers.ORIGINAL_TOPIC)

    @property
    def error_class(self) -> str:
        return self.header(dlq_headers.ERROR_CLASS) or "(none)"


@dataclass(frozen=True)
class DlqGroup:
    """DLQ records of one topic and error class."""

    topic: str
    error_class: str
    count: int
    oldest_ms: int
    newest_ms: int


def summarize(records: Iterable[DlqRecord]) -> list[DlqGroup]:
    """Counts per (DLQ topic, error class) with the oldest and newest record timestamps."""
    groups: dict[tuple[str, str], DlqGroup] = {}
    for r in records:
        key = (r.topic, r.error_class)
        g = groups.get(key)
        groups[key] = (
            DlqGroup(r.topic, r.error_class, 1, r.timestamp_ms, r.timestamp_ms)
            if g is None
            else DlqGroup(
                g.topic, g.error_class, g.count + 1, min(g.oldest_ms, r.timestamp_ms), max(g.newest_ms, r.timestamp_ms)
            )
        )
    return [groups[k] for k in sorted(groups)]


@dataclass
class RedriveSelection:
    chosen: list[DlqRecord] = field(default_factory=list)
    skipped: list[tuple[DlqRecord, str]] = field(default_factory=list)  # (record, why)
    missing: list[tuple[int, int]] = field(default_factory=list)  # asked-for offsets not in the DLQ


def select_for_redrive(
    records: Iterable[DlqRecord],
    source_topic: str,
    error_class: str | None = None,
    offsets: frozenset[tuple[int, int]] | None = None,
) -> RedriveSelection:
    """DLQ records to send back to `source_topic`, filtered by error class and DLQ partition:offset.

    A record whose x-original-topic header is missing or names another topic is skipped: sending
    it back would put it where this redrive's audit trail does not look. A topic read by two
    services (second_opinion.granted) can have two copies of one bad record, one from each
    consumer: the original goes back once, and every consumer reads it again.
    """
    selection = RedriveSelection()
    seen = set()
    originals: set[tuple[str | None, str | None]] = set()
    for r in records:
        seen.add((r.partition, r.offset))
        if offsets is not None and (r.partition, r.offset) not in offsets:
            continue
        if error_class is not None and r.error_class != error_class:
            continue
        if r.original_topic != source_topic:
            selection.skipped.append((r, f"x-original-topic is {r.original_topic!r}, not {source_topic!r}"))
            continue
        original = (r.header(dlq_headers.ORIGINAL_PARTITION), r.header(dlq_headers.ORIGINAL_OFFSET))
        if None not in original and original in originals:
            by = r.header(dlq_headers.DEAD_LETTERED_BY) or "another consumer"
            selection.skipped.append((r, f"a copy (from {by}) of {source_topic}/{'/'.join(original)}, already chosen"))
            continue
        originals.add(original)
        selection.chosen.append(r)
    selection.missing = sorted((offsets or frozenset()) - seen)
    return selection


def redriven_from(record: DlqRecord) -> bytes:
    """The `x-redriven-from` header value: where the DLQ record lives."""
    return record.where.encode()

"""The pure planning behind `replay` and `dlq`: offset ranges, argument parsing, DLQ selection and summaries."""

from __future__ import annotations

import pytest

from services.common import dlq_headers
from services.operator_tools.planning import (
    DlqRecord,
    PartitionRange,
    PlanError,
    Start,
    choose_partitions,
    first_offset,
    parse_offsets,
    parse_partitions,
    parse_timestamp,
    plan_ranges,
    select_for_redrive,
    summarize,
)

EARLIEST = Start("earliest")


def at(offset: int) -> Start:
    return Start("offset", offset=offset)


AT_TIME = Start("timestamp", timestamp_ms=1_000)


class TestFirstOffset:
    # (start, log begin, log end, offset found for the timestamp, expected first offset)
    CASES = [
        (EARLIEST, 0, 10, None, 0),
        (EARLIEST, 4, 10, None, 4),  # older records deleted by retention
        (EARLIEST, 10, 10, None, 10),  # empty partition
        (at(5), 0, 10, None, 5),
        (at(0), 4, 10, None, 4),  # below the log start: from what is left
        (at(10), 0, 10, None, 10),  # at the end: nothing
        (at(99), 0, 10, None, 10),  # past the end: nothing, never a negative count
        (AT_TIME, 0, 10, 7, 7),
        (AT_TIME, 0, 10, None, 10),  # no record at or after the time
        (AT_TIME, 5, 10, 2, 5),  # found offset deleted meanwhile
    ]

    @pytest.mark.parametrize(("start", "begin", "end", "found", "expected"), CASES)
    def test_cases(self, start: Start, begin: int, end: int, found: int | None, expected: int) -> None:
        assert first_offset(start, begin, end, found) == expected


def test_plan_ranges_covers_every_partition_up_to_the_end_noted_now() -> None:
    begins = {("a", 0): 0, ("a", 1): 3, ("b", 0): 0}
    ends = {("b", 0): 2, ("a", 1): 9, ("a", 0): 5}
    plan = plan_ranges(at(4), begins, ends)
    assert plan == [PartitionRange("a", 0, 4, 5), PartitionRange("a", 1, 4, 9), PartitionRange("b", 0, 2, 2)]
    assert [r.count for r in plan] == [1, 5, 0]


def test_plan_ranges_from_a_timestamp_uses_the_offsets_found_per_partition() -> None:
    ends = {("a", 0): 5, ("a", 1): 9}
    plan = plan_ranges(AT_TIME, {("a", 0): 0, ("a", 1): 0}, ends, {("a", 0): 2, ("a", 1): None})
    assert [(r.start, r.end, r.count) for r in plan] == [(2, 5, 3), (9, 9, 0)]


def test_a_range_reports_itself_as_the_plan_prints_it() -> None:
    assert PartitionRange("a", 1, 2, 7).to_dict() == {"topic": "a", "partition": 1, "from": 2, "to": 7, "count": 5}


class TestChoosePartitions:
    AVAILABLE = {"a": [0, 1, 2], "b": [0]}

    def test_all_by_default(self) -> None:
        assert choose_partitions(self.AVAILABLE, None) == [("a", 0), ("a", 1), ("a", 2), ("b", 0)]

    def test_only_the_chosen_where_a_topic_has_them(self) -> None:
        assert choose_partitions(self.AVAILABLE, (0, 2)) == [("a", 0), ("a", 2), ("b", 0)]

    def test_a_partition_no_topic_has_is_an_error(self) -> None:
        with pytest.raises(PlanError, match="partition"):
            choose_partitions(self.AVAILABLE, (1, 7))


class TestParsing:
    def test_partitions(self) -> None:
        assert parse_partitions("2,0, 2") == (0, 2)

    @pytest.mark.parametrize("text", ["", "a", "1,-1", ","])
    def test_bad_partitions(self, text: str) -> None:
        with pytest.raises(PlanError):
            parse_partitions(text)

    def test_timestamp_with_offset_or_z(self) -> None:
        assert parse_timestamp("1970-01-01T00:00:01+00:00") == 1000
        assert parse_timestamp("1970-01-01T02:00:01.5+02:00") == 1500
        assert parse_timestamp("1970-01-01T00:00:02Z") == 2000

    @pytest.mark.parametrize("text", ["2026-12-03T10:00:00", "yesterday"])
    def test_naive_or_garbage_timestamp(self, text: str) -> None:
        with pytest.raises(PlanError):
            parse_timestamp(text)

    def test_offsets(self) -> None:
        assert parse_offsets("0:5, 2:17,0:5") == frozenset({(0, 5), (2, 17)})

    @pytest.mark.parametrize("text", ["", "5", "0:", "a:1", "0:-1"])
    def test_bad_offsets(self, text: str) -> None:
        with pytest.raises(PlanError):
            parse_offsets(text)


def dlq(partition: int, offset: int, error: str, ts: int = 0, original: str | None = "t") -> DlqRecord:
    headers = [(dlq_headers.ERROR_CLASS, error.encode())]
    if original is not None:
        headers.append((dlq_headers.ORIGINAL_TOPIC, original.encode()))
    return DlqRecord("t.dlq", partition, offset, ts, b"k", b"v", tuple(headers))


class TestRedriveSelection:
    RECORDS = [
        dlq(0, 0, "not_json"),
        dlq(0, 1, "handler_error"),
        dlq(1, 0, "handler_error"),
        dlq(1, 1, "x", original="u"),
    ]

    def test_by_error_class(self) -> None:
        chosen = select_for_redrive(self.RECORDS, "t", error_class="handler_error").chosen
        assert [(r.partition, r.offset) for r in chosen] == [(0, 1), (1, 0)]

    def test_by_offsets_and_class_together(self) -> None:
        selection = select_for_redrive(self.RECORDS, "t", "handler_error", frozenset({(0, 0), (1, 0)}))
        assert [(r.partition, r.offset) for r in selection.chosen] == [(1, 0)]
        assert selection.missing == []

    def test_offsets_not_in_the_dlq_are_reported(self) -> None:
        assert select_for_redrive(self.RECORDS, "t", offsets=frozenset({(0, 0), (2, 9)})).missing == [(2, 9)]

    def test_a_record_from_another_topic_is_skipped_not_sent(self) -> None:
        selection = select_for_redrive(self.RECORDS, "t")
        assert len(selection.chosen) == 3
        assert [(r.partition, r.offset) for r, _ in selection.skipped] == [(1, 1)]

    def test_a_record_without_its_original_topic_is_skipped(self) -> None:
        assert select_for_redrive([dlq(0, 0, "x", original=None)], "t").chosen == []

    def test_the_header_names_where_the_dlq_record_lives(self) -> None:
        assert dlq(2, 41, "x").where == "t.dlq/2/41"


def test_summary_counts_per_topic_and_error_class_with_oldest_and_newest() -> None:
    records = [dlq(0, 0, "not_json", ts=30), dlq(1, 0, "not_json", ts=10), dlq(0, 1, "schema_invalid", ts=20)]
    groups = summarize(records)
    assert [(g.topic, g.error_class, g.count, g.oldest_ms, g.newest_ms) for g in groups] == [
        ("t.dlq", "not_json", 2, 10, 30),
        ("t.dlq", "schema_invalid", 1, 20, 20),
    ]


def test_two_consumers_copies_of_one_record_are_redriven_once() -> None:
    def copy(offset: int, by: str) -> DlqRecord:
        headers = (
            (dlq_headers.ERROR_CLASS, b"not_json"),
            (dlq_headers.ORIGINAL_TOPIC, b"t"),
            (dlq_headers.ORIGINAL_PARTITION, b"2"),
            (dlq_headers.ORIGINAL_OFFSET, b"40"),
            (dlq_headers.DEAD_LETTERED_BY, by.encode()),
        )
        return DlqRecord("t.dlq", 0, offset, 0, b"k", b"v", headers)

    other = dlq(0, 7, "not_json")  # no original offset recorded: never taken for a copy
    selection = select_for_redrive([copy(5, "dispatch"), copy(6, "payout"), other, dlq(0, 8, "not_json")], "t")
    assert [r.offset for r in selection.chosen] == [5, 7, 8]
    [(skipped, why)] = selection.skipped
    assert skipped.offset == 6 and "payout" in why


class TestDlqShowCut:
    def test_a_cut_never_splits_a_character(self):
        from services.operator_tools.dlq import _char_boundary

        raw = "ab\u00e9\u20accd".encode()  # a b é(2 bytes) €(3 bytes) c d
        assert [_char_boundary(raw, n) for n in range(1, 8)] == [1, 2, 2, 4, 4, 4, 7]
        assert raw[: _char_boundary(raw, 3)].decode() == "ab"

    def test_bytes_that_are_not_utf8_are_cut_at_the_limit(self):
        from services.operator_tools.dlq import _char_boundary

        assert _char_boundary(b"\x80" * 10, 5) == 5

    @pytest.mark.parametrize("bad", ["-5", "x", "1.5"])
    def test_max_bytes_is_a_whole_number_not_below_zero(self, bad, capsys):
        from services.cli import build_parser

        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args(["dlq", "show", "t.dlq", "0", "1", "--max-bytes", bad])
        assert exit_.value.code == 2
        assert f"{bad!r} is not a whole number >= 0" in capsys.readouterr().err

"""The journal on real files: group commit, torn tails, segments, release and the lock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from trackhouse.errors import JournalError, Unavailable
from trackhouse.journal import Journal, Position, Record, read_range
from trackhouse.journal.segments import (
    HEADER,
    HEADER_SIZE,
    MAGIC,
    frame,
    list_segments,
    segment_path,
)

EVERYTHING = 1 << 30


@pytest.fixture
def journal_dir(tmp_path: Path) -> Path:
    return tmp_path / "journal"


@pytest.fixture
def open_journal(journal_dir: Path) -> Iterator[Callable[..., Journal]]:
    """Open journals on journal_dir; whatever is still open at the end is closed."""
    opened: list[Journal] = []

    def open_(
        *,
        segment_bytes: int = 64 * 1024 * 1024,
        max_backlog_bytes: int | None = None,
        first_segment: int = 1,
    ) -> Journal:
        journal = Journal(
            journal_dir,
            segment_bytes=segment_bytes,
            max_backlog_bytes=max_backlog_bytes,
            first_segment=first_segment,
        )
        opened.append(journal)
        return journal

    yield open_
    for journal in opened:
        if not journal._closing:
            journal.close()


def append(journal: Journal, *payloads: bytes) -> list[Position]:
    """Append one after the other: each its own group commit."""

    async def run() -> list[Position]:
        return [await journal.append_and_sync(p) for p in payloads]

    return asyncio.run(run())


def append_concurrently(journal: Journal, *payloads: bytes) -> list[Position]:
    async def run() -> list[Position]:
        return list(await asyncio.gather(*(journal.append_and_sync(p) for p in payloads)))

    return asyncio.run(run())


def read_all(journal_dir: Path, end: Position) -> list[Record]:
    return read_range(journal_dir, Position(0, 0), end, EVERYTHING)


def payloads(records: list[Record]) -> list[bytes]:
    return [r.payload for r in records]


# -- append and read ---------------------------------------------------------------------
def test_append_returns_durable_end_positions_and_read_range_returns_the_records(
    open_journal: Callable[..., Journal], journal_dir: Path
) -> None:
    journal = open_journal()
    positions = append(journal, b"first", b"second record", b"")

    assert positions == [
        Position(1, HEADER_SIZE + 5),
        Position(1, 2 * HEADER_SIZE + 5 + 13),
        Position(1, 3 * HEADER_SIZE + 5 + 13),
    ]
    assert journal.durable_end == positions[-1]
    records = read_all(journal_dir, journal.durable_end)
    assert payloads(records) == [b"first", b"second record", b""]
    assert [r.end for r in records] == positions
    assert [r.position for r in records] == [Position(1, 0), positions[0], positions[1]]
    assert segment_path(journal_dir, 1).read_bytes() == b"".join(
        frame(p) for p in (b"first", b"second record", b"")
    )


def test_concurrent_appends_each_get_their_own_record(
    open_journal: Callable[..., Journal], journal_dir: Path
) -> None:
    journal = open_journal()
    sent = [f"record {i}".encode() * (i + 1) for i in range(50)]
    positions = append_concurrently(journal, *sent)

    records = read_all(journal_dir, journal.durable_end)
    assert sorted(payloads(records)) == sorted(sent)
    # Every caller got the end of its own record back.
    assert sorted(positions) == [r.end for r in records]
    by_end = {r.end: r.payload for r in records}
    assert [by_end[p] for p in positions] == sent


def test_read_range_stops_at_the_given_end(
    open_journal: Callable[..., Journal], journal_dir: Path
) -> None:
    journal = open_journal()
    first, second, _ = append(journal, b"a", b"b", b"c")

    assert payloads(read_range(journal_dir, Position(0, 0), second, EVERYTHING)) == [b"a", b"b"]
    assert payloads(read_range(journal_dir, first, second, EVERYTHING)) == [b"b"]
    assert read_range(journal_dir, second, second, EVERYTHING) == []


def test_read_range_returns_a_record_larger_than_the_budget(
    open_journal: Callable[..., Journal], journal_dir: Path
) -> None:
    journal = open_journal()
    big = [bytes([n]) * 10_000 for n in range(3)]
    append(journal, *big)

    records = read_range(journal_dir, Position(0, 0), journal.durable_end, 100)
    assert payloads(records) == big[:1]

    # A reader that resumes from each record's end gets them all, one per call.
    seen: list[bytes] = []
    start = Position(0, 0)
    while batch := read_range(journal_dir, start, journal.durable_end, 100):
        seen.extend(payloads(batch))
        start = batch[-1].end
    assert seen == big


def test_read_range_respects_the_budget_but_returns_whole_records(
    open_journal: Callable[..., Journal], journal_dir: Path
) -> None:
    journal = open_journal()
    sent = [bytes([65 + n]) * 100 for n in range(10)]
    append(journal, *sent)

    records = read_range(journal_dir, Position(0, 0), journal.durable_end, 350)
    assert 1 <= len(records) < len(sent)
    assert payloads(records) == sent[: len(records)]


# -- restarts and torn tails ----------------------------------------------------------------
def test_each_journal_starts_a_new_segment(
    open_journal: Callable[..., Journal], journal_dir: Path
) -> None:
    first = open_journal()
    append(first, b"one")
    first.close()

    second = open_journal()
    assert second.durable_end == Position(2, 0)
    assert append(second, b"two") == [Position(2, HEADER_SIZE + 3)]
    second.close()

    assert list_segments(journal_dir) == [1, 2]
    assert payloads(read_all(journal_dir, Position(2, HEADER_SIZE + 3))) == [b"one", b"two"]


def test_first_segment_skips_numbers_the_store_has_already_passed(
    open_journal: Callable[..., Journal], journal_dir: Path
) -> None:
    journal = open_journal(first_segment=7)
    assert append(journal, b"x") == [Position(7, HEADER_SIZE + 1)]
    assert list_segments(journal_dir) == [7]


def _bad_crc(payload: bytes) -> bytes:
    framed = bytearray(frame(payload))
    framed[-1] ^= 0xFF
    return bytes(framed)


TORN_TAILS: dict[str, Callable[[bytes], bytes]] = {
    "short header": lambda whole: whole[: HEADER_SIZE // 2],
    "short payload": lambda whole: whole[:-3],
    "header only": lambda whole: whole[:HEADER_SIZE],
    "wrong checksum": lambda whole: _bad_crc(b"the torn record"),
    "garbage": lambda whole: b"\x00garbage that is no record at all",
    "wrong magic": lambda whole: HEADER.pack(b"XXXX", 3, 0) + b"abc",
    "absurd length": lambda whole: HEADER.pack(MAGIC, 0xFFFFFFFF, 0) + b"abc",
    "bad record, then a good one": lambda whole: _bad_crc(b"torn") + frame(b"after"),
}


@pytest.mark.parametrize("tear", TORN_TAILS.values(), ids=TORN_TAILS.keys())
def test_a_torn_tail_is_cut_on_reopen_and_earlier_records_survive(
    open_journal: Callable[..., Journal], journal_dir: Path, tear: Callable[[bytes], bytes]
) -> None:
    journal = open_journal()
    _, intact_end = append(journal, b"kept 1", b"kept 2")
    journal.close()
    segment = segment_path(journal_dir, 1)
    with segment.open("ab") as fh:
        fh.write(tear(frame(b"the record being written when the process died")))

    reopened = open_journal()
    assert segment.stat().st_size == intact_end.offset
    assert reopened.durable_end == Position(2, 0)
    assert payloads(read_all(journal_dir, reopened.durable_end)) == [b"kept 1", b"kept 2"]
    assert reopened.backlog_bytes() == intact_end.offset

    after = append(reopened, b"new")
    assert payloads(read_all(journal_dir, after[-1])) == [b"kept 1", b"kept 2", b"new"]


def test_a_torn_tail_of_an_empty_segment_leaves_it_empty(
    open_journal: Callable[..., Journal], journal_dir: Path
) -> None:
    open_journal().close()
    segment = segment_path(journal_dir, 1)
    segment.write_bytes(frame(b"never acknowledged")[:-1])

    reopened = open_journal()
    assert segment.stat().st_size == 0
    assert read_all(journal_dir, reopened.durable_end) == []


def test_read_range_skips_a_torn_tail_in_an_older_segment(
    open_journal: Callable[..., Journal], journal_dir: Path
) -> None:
    # Start-up cuts only the last segment's tail. A torn record anywhere else (a
    # segment restored by hand, say) must not stop readers from reaching later ones.
    journal = open_journal()
    append(journal, b"before the crash")
    journal.close()
    with segment_path(journal_dir, 1).open("ab") as fh:
        fh.write(frame(b"torn")[:-2])
    segment_path(journal_dir, 2).touch()

    third = open_journal()
    end = append(third, b"after the crash")[-1]
    assert end.segment == 3
    assert payloads(read_all(journal_dir, end)) == [b"before the crash", b"after the crash"]
    # Reading resumes past the torn tail however small the budget.
    first = read_range(journal_dir, Position(0, 0), end, 1)
    assert payloads(first) == [b"before the crash"]
    assert payloads(read_range(journal_dir, first[-1].end, end, 1)) == [b"after the crash"]


# -- segments and release ------------------------------------------------------------------
def test_a_full_segment_rotates_to_the_next(
    open_journal: Callable[..., Journal], journal_dir: Path
) -> None:
    journal = open_journal(segment_bytes=100)
    record = b"x" * 60  # HEADER_SIZE + 60 = 72 bytes: one per segment
    positions = append(journal, record, record, record)

    assert [p.segment for p in positions] == [1, 2, 3]
    assert list_segments(journal_dir) == [1, 2, 3]
    assert payloads(read_all(journal_dir, journal.durable_end)) == [record] * 3


def test_release_deletes_whole_segments_before_the_checkpoint(
    open_journal: Callable[..., Journal], journal_dir: Path
) -> None:
    journal = open_journal(segment_bytes=100)
    record = b"y" * 60
    positions = append(journal, record, record, record, record)
    assert list_segments(journal_dir) == [1, 2, 3, 4]
    assert journal.backlog_bytes() == 4 * (HEADER_SIZE + 60)

    # Loaded up to the middle of segment 2: segment 1 goes, segment 2 stays.
    journal.release(Position(2, 10))
    assert list_segments(journal_dir) == [2, 3, 4]
    assert journal.backlog_bytes() == 3 * (HEADER_SIZE + 60) - 10

    journal.release(positions[2])  # the end of segment 3's record
    assert list_segments(journal_dir) == [3, 4]
    assert journal.backlog_bytes() == HEADER_SIZE + 60
    remaining = read_range(journal_dir, positions[2], journal.durable_end, EVERYTHING)
    assert payloads(remaining) == [record]

    journal.release(journal.durable_end)
    assert list_segments(journal_dir) == [4]
    assert journal.backlog_bytes() == 0


def test_release_forgets_segments_deleted_by_someone_else(
    open_journal: Callable[..., Journal], journal_dir: Path
) -> None:
    journal = open_journal(segment_bytes=100)
    append(journal, b"z" * 60, b"z" * 60)
    segment_path(journal_dir, 1).unlink()

    journal.release(Position(2, 0))
    assert list_segments(journal_dir) == [2]


def test_reopening_counts_the_backlog_of_old_segments(
    open_journal: Callable[..., Journal], journal_dir: Path
) -> None:
    journal = open_journal()
    append(journal, b"a" * 20, b"b" * 20)
    journal.close()

    reopened = open_journal()
    assert reopened.backlog_bytes() == 2 * (HEADER_SIZE + 20)
    reopened.release(Position(1, HEADER_SIZE + 20))
    assert reopened.backlog_bytes() == HEADER_SIZE + 20
    assert list_segments(journal_dir) == [1, 2]


# -- refusals --------------------------------------------------------------------------------
def test_the_lock_keeps_a_second_journal_off_the_directory(
    open_journal: Callable[..., Journal], journal_dir: Path
) -> None:
    first = open_journal()
    with pytest.raises(JournalError, match="in use"):
        Journal(journal_dir)
    # The refused journal created no segment of its own.
    assert list_segments(journal_dir) == [1]

    first.close()
    second = open_journal()
    assert second.durable_end == Position(2, 0)


def test_a_full_backlog_refuses_new_records(open_journal: Callable[..., Journal]) -> None:
    journal = open_journal(max_backlog_bytes=50)
    append(journal, b"q" * 60)
    with pytest.raises(Unavailable, match="backlog"):
        append(journal, b"more")

    journal.release(journal.durable_end)
    assert append(journal, b"more")[-1].offset == 2 * HEADER_SIZE + 64


def test_a_closed_journal_refuses_appends_and_keeps_what_it_had(
    open_journal: Callable[..., Journal], journal_dir: Path
) -> None:
    journal = open_journal()
    end = append(journal, b"kept")[-1]
    journal.close()

    with pytest.raises(Unavailable):
        append(journal, b"late")
    assert payloads(read_all(journal_dir, end)) == [b"kept"]


def test_segment_files_are_numbered_and_anything_else_is_ignored(
    open_journal: Callable[..., Journal], journal_dir: Path
) -> None:
    journal = open_journal()
    append(journal, b"r")
    (journal_dir / "notes.seg").write_text("not a segment")
    (journal_dir / "00000000000000000009.tmp").write_bytes(b"")

    assert list_segments(journal_dir) == [1]
    assert segment_path(journal_dir, 1).name == "00000000000000000001.seg"
    assert segment_path(journal_dir, 1).stat().st_size == HEADER_SIZE + 1

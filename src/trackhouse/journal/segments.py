"""The on-disk format of the journal: numbered segment files of checksummed records.

A segment is ``<dir>/<number:020d>.seg``; it holds records back to back::

    magic  4 bytes  b"THJ1"
    length 4 bytes  payload length, little-endian unsigned
    crc32  4 bytes  CRC-32 of the payload, little-endian unsigned
    payload

A record is either wholly valid or it is the torn tail of a crash: a short header, a
short payload or a checksum mismatch. Anything after the first invalid record of a
segment is ignored (it was never acknowledged: acknowledgement waits for the fsync
that covers the whole record).
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

MAGIC = b"THJ1"
HEADER = struct.Struct("<4sII")
HEADER_SIZE = HEADER.size
MAX_RECORD = 1 << 30


class Position(NamedTuple):
    """A place in the journal: the byte offset within a numbered segment."""

    segment: int
    offset: int


def segment_path(directory: Path, number: int) -> Path:
    return directory / f"{number:020d}.seg"


def list_segments(directory: Path) -> list[int]:
    numbers = []
    for entry in directory.glob("*.seg"):
        try:
            numbers.append(int(entry.stem))
        except ValueError:
            continue
    return sorted(numbers)


def frame(payload: bytes) -> bytes:
    return HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


@dataclass(frozen=True, slots=True)
class Record:
    payload: bytes
    position: Position  # where the record starts
    end: Position  # where the next record starts


def scan(data: bytes, segment: int, start: int) -> tuple[list[Record], int]:
    """Parse whole valid records from ``data`` (segment bytes from offset ``start``).

    Returns the records and the offset just past the last valid one.
    """
    records: list[Record] = []
    pos = 0
    size = len(data)
    while pos + HEADER_SIZE <= size:
        magic, length, crc = HEADER.unpack_from(data, pos)
        if magic != MAGIC or length > MAX_RECORD:
            break
        end = pos + HEADER_SIZE + length
        if end > size:
            break
        payload = data[pos + HEADER_SIZE : end]
        if zlib.crc32(payload) != crc:
            break
        records.append(
            Record(payload, Position(segment, start + pos), Position(segment, start + end))
        )
        pos = end
    return records, start + pos


def valid_length(path: Path) -> int:
    """How many leading bytes of a segment file are whole, valid records (read once,
    at start-up, to cut a torn tail)."""
    _, end = scan(path.read_bytes(), 0, 0)
    return end


def read_range(directory: Path, start: Position, end: Position, max_bytes: int) -> list[Record]:
    """Valid records from ``start`` up to ``end``: about ``max_bytes``, at least one."""
    out: list[Record] = []
    budget = max_bytes
    for number in list_segments(directory):
        if number < start.segment:
            continue
        if number > end.segment or budget <= 0:
            break
        offset = start.offset if number == start.segment else 0
        stop = end.offset if number == end.segment else None
        try:
            records, complete = _read_segment(
                segment_path(directory, number), number, offset, stop, budget
            )
        except FileNotFoundError:
            continue
        out.extend(records)
        budget -= sum(HEADER_SIZE + len(r.payload) for r in records)
        if not complete:
            break
    return out


def _read_segment(
    path: Path, number: int, offset: int, stop: int | None, budget: int
) -> tuple[list[Record], bool]:
    """Records of one segment from ``offset``; ``complete`` if the range was exhausted."""
    with path.open("rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        stop = size if stop is None else min(stop, size)
        if stop <= offset:
            return [], True
        fh.seek(offset)
        want = stop - offset
        data = fh.read(min(want, max(budget, HEADER_SIZE)))
        records, _ = scan(data, number, offset)
        if not records and len(data) < want:
            # The next record alone is larger than the budget: read exactly that record.
            magic, length, _ = HEADER.unpack_from(data, 0)
            if magic == MAGIC and length <= MAX_RECORD:
                fh.seek(offset)
                data = fh.read(HEADER_SIZE + length)
                records, _scanned = scan(data, number, offset)
    if not records:
        # Unreadable from here on (a torn tail left by a crash): move on to the next
        # segment. Nothing here was acknowledged: acks wait for the covering fsync.
        return [], True
    return records, len(data) >= want


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""The journal: append-only, checksummed segment files with group commit."""

from trackhouse.journal.segments import Position, Record, read_range
from trackhouse.journal.writer import Journal

__all__ = ["Journal", "Position", "Record", "read_range"]

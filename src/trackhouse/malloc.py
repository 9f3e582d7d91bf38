"""Asking glibc's allocator to hand freed memory back (no-ops elsewhere).

By default glibc gives each thread that allocates its own arena (up to 8 per core) and
keeps freed memory in them: after a burst of imports, a server that needs 150 MB holds
several hundred. Fewer arenas and a trim when the loader goes idle keep the resident
size near what is in use, for a small cost in allocator contention.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

_M_ARENA_MAX = -8  # mallopt parameter, from glibc's malloc.h


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


_LIBC = _glibc()


def limit_arenas(count: int) -> None:
    """At most ``count`` malloc arenas; call before threads start allocating."""
    if _LIBC is not None and not _LIBC.mallopt(_M_ARENA_MAX, count):
        log.debug("mallopt(M_ARENA_MAX, %d) refused", count)


def release_free_memory() -> None:
    """Return freed heap pages to the operating system."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)

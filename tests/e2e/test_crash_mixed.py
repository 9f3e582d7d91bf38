"""Crash safety under mixed load on every ingestion endpoint at once, killed 32 times.

One server holds two projects: clients send /track and /import to one (the event
crash test's requests and checks, tests/e2e/test_crash.py) and /engage and /groups to
the other (the profile crash test's, tests/e2e/test_profile_crash.py) concurrently, and
the server is SIGKILLed and restarted on the same data directory 32 times. At the end:
every acknowledged event is exported exactly once and every acknowledged profile update
folded exactly once; every unacknowledged request is there whole or not at all; nothing
refused or unsent is stored. With test_crash (12 kills) and test_profile_crash (6 + 1)
the suite kills a loaded server 51 times.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e import test_crash as events
from tests.e2e import test_profile_crash as profiles
from tests.serverproc import Server, cli

pytestmark = pytest.mark.e2e

KILLS = 32
SEED = 20_261_129
LOAD_SECONDS = (0.2, 0.6)
EVENT_WORKERS = 2
PROFILE_WORKERS = 2


@pytest.mark.timeout(300)
def test_every_endpoint_under_load_survives_32_sigkills(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    data_dir = tmp_path / "mixed"
    cli(
        data_dir, "projects", "create", "events", "--token", events.TOKEN, "--secret", events.SECRET
    )
    cli(
        data_dir,
        "projects",
        "create",
        "profiles",
        "--token",
        profiles.TOKEN,
        "--secret",
        profiles.SECRET,
    )
    first_day = events._utc_day()
    rng = random.Random(SEED)
    started = time.monotonic()
    server = start_server(data_dir)

    # The profile clients run throughout and follow the server to each new port; the
    # event clients are started per round, as in test_crash.
    bits = profiles.Bits()
    stop = threading.Event()
    profile_sent: list[list[profiles.Sent]] = [[] for _ in range(PROFILE_WORKERS)]
    threads = [
        threading.Thread(
            target=profiles._worker,
            args=(server, worker, bits, stop, profile_sent[worker]),
            name=f"mixed-profiles-{worker}",
            daemon=True,
        )
        for worker in range(PROFILE_WORKERS)
    ]
    event_requests: list[events.SentRequest] = []
    for thread in threads:
        thread.start()
    try:
        for kill_round in range(KILLS):
            event_requests.extend(
                events._load_then_kill(
                    server, kill_round, rng.uniform(*LOAD_SECONDS), workers=EVENT_WORKERS
                )
            )
            server.start()
        time.sleep(profiles.TAIL_S)
    finally:
        stop.set()
        for thread in threads:
            thread.join(profiles.HTTP_TIMEOUT + 5)
    assert not any(t.is_alive() for t in threads), "a profile client did not stop"
    profile_requests = [r for worker_sent in profile_sent for r in worker_sent]

    event_figures = events.Figures()
    try:
        events._verify(server, first_day, event_requests, event_figures)
        stored = profiles._read_all(server)
        profile_figures = profiles._verify(stored, profile_requests)
    except AssertionError:
        print(f"server log (tail):\n{server.log()[-5000:]}")
        raise

    event_outcomes = Counter(r.outcome for r in event_requests)
    print(
        f"\nmixed crash test: {KILLS} SIGKILLs under load on /track, /import, /engage and "
        f"/groups; events: {len(event_requests)} requests ("
        + ", ".join(f"{o.value} {event_outcomes[o]}" for o in events.Outcome)
        + f"), {event_figures.acked_events} acknowledged events exported once "
        f"(lost 0, duplicated 0), {event_figures.unknown_landed} unanswered requests "
        f"landed whole, {event_figures.unknown_absent} absent; profiles: "
        f"{len(profile_requests)} requests ("
        + ", ".join(f"{o.value} {profile_figures.requests[o]}" for o in profiles.Outcome)
        + f"), {profile_figures.acked_increments} acknowledged updates applied once, "
        f"{profile_figures.unknown_landed} unanswered requests landed whole, "
        f"{profile_figures.unknown_absent} absent; {time.monotonic() - started:.1f}s"
    )
    assert event_outcomes[events.Outcome.ACKED] > 0, "no event request was acknowledged"
    assert profile_figures.requests[profiles.Outcome.ACKED] > 0, "no profile update acknowledged"

"""While servers run, the garbage collector stays out of the way; afterwards it is exactly as it was (an agent that
runs exbe in-process, as the suite does, keeps nothing frozen)."""

from __future__ import annotations

import gc

from exbe import collector


def test_a_fleet_run_leaves_the_collector_as_it_found_it(fleet, exbe, monkeypatch):
    seen: list[tuple[tuple[int, int, int], int]] = []
    quiet = collector.quiet

    def watched():
        with quiet():
            seen.append((gc.get_threshold(), gc.get_freeze_count()))
            yield

    import contextlib
    monkeypatch.setattr(collector, "quiet", contextlib.contextmanager(watched))
    before = gc.get_threshold()
    assert exbe(fleet, "verify", "--all").code == 0
    assert seen and seen[0][0][0] == collector.YOUNG_THRESHOLD and seen[0][1] > 0, "start-up objects frozen"
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_cyclic_garbage_made_while_servers_run_is_still_collected():
    class Node:
        def __init__(self) -> None:
            self.me = self

    with collector.quiet():
        gc.collect()
        Node()
        assert gc.collect() >= 1

"""A server's side work (its Exchange read beside the first pipeline, closing its endpoints together) runs on threads
kept for the run: it starts at once whatever else is under way, it sees the server's context (its deadline), a failure
reaches the server's job, and a fleet's later servers reuse the threads of the earlier ones."""

from __future__ import annotations

import contextvars
import threading
from concurrent.futures import wait

import pytest

from exbe.beside import beside

_SERVER: contextvars.ContextVar[str] = contextvars.ContextVar("server", default="none")


def _kept_threads() -> int:
    return sum(1 for thread in threading.enumerate() if thread.name == "exbe-beside")


def test_side_work_starts_at_once_even_while_other_servers_side_work_hangs():
    release = threading.Event()
    hanging = [beside(release.wait, 30) for _ in range(3)]  # closes stuck on servers that do not answer
    try:
        assert beside(lambda: "read").result(timeout=5) == "read"
    finally:
        release.set()
    assert all(future.result(timeout=5) for future in hanging)


def test_side_work_sees_the_servers_context_and_its_failure_reaches_the_server():
    _SERVER.set("exch01")
    assert beside(_SERVER.get).result(timeout=5) == "exch01"

    def fails() -> None:
        raise ConnectionError("TLS validation failed")

    with pytest.raises(ConnectionError, match="TLS validation failed"):
        beside(fails).result(timeout=5)


def test_later_servers_reuse_the_threads_earlier_servers_started():
    wait([beside(lambda: None) for _ in range(4)])
    kept = _kept_threads()
    for _ in range(20):  # one server after another, as a fleet with free slots runs them
        wait([beside(lambda: None), beside(lambda: None)])
    assert _kept_threads() == kept

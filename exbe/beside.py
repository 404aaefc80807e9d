"""Work a server's job runs beside its own thread, on threads kept for the whole process (issue 26).

A server's run does two things at once twice: it reads the Exchange endpoint while the WinRM endpoint runs the first
pipeline, and it closes both endpoints' pools together at the end. Each was a thread started for that server and
ended with it (two thread starts per server, about 0.5 ms of CPU); here a thread that has finished its work waits
for the next piece instead of ending.

Work never waits behind other work: a piece is handed to a thread that is idle, counted exactly under one lock, or
to a new thread (``concurrent.futures.ThreadPoolExecutor`` queues work once it has ``max_workers`` threads, so a read
could wait for closes stuck on an unanswering server). The context (the server's deadline, :mod:`exbe.deadline`)
goes along. The threads are daemons, so an idle one never holds the process open; at exit the process waits for the
work under way (a pool being closed on a server), as it waited for the threads of before.
"""

from __future__ import annotations

import atexit
import contextvars
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from queue import SimpleQueue
from typing import Any, TypeVar

_T = TypeVar("_T")

_Work = tuple["Future[Any]", contextvars.Context, Callable[..., Any], tuple[object, ...]]


class _Kept:
    """Threads kept for work handed to them; ``idle`` counts those waiting for work and not yet promised any."""

    def __init__(self) -> None:
        self.lock = threading.Condition(threading.Lock())
        self.idle = 0
        self.running = 0
        self.work: SimpleQueue[_Work] = SimpleQueue()

    def hand(self, work: Callable[..., _T], args: tuple[object, ...]) -> Future[_T]:
        future: Future[_T] = Future()
        piece: _Work = (future, contextvars.copy_context(), work, args)
        with self.lock:
            promised = self.idle > 0
            if promised:
                self.idle -= 1  # that thread's next piece is this one
            self.running += 1
        if promised:
            self.work.put(piece)
            return future
        try:
            threading.Thread(target=self._serve, args=(piece,), name="exbe-beside", daemon=True).start()
        except BaseException:
            with self.lock:
                self.running -= 1
            raise
        return future

    def _serve(self, piece: _Work | None) -> None:
        while True:
            future, context, work, args = piece if piece is not None else self.work.get()
            started = future.set_running_or_notify_cancel()  # False: cancelled before it started (nothing does)
            value: Any = None
            failure: BaseException | None = None
            if started:
                try:
                    value = context.run(work, *args)
                except BaseException as exc:  # noqa: BLE001 - the caller's to see, through the future
                    failure = exc
            piece = None
            del context, work, args  # nothing of a finished server kept alive by an idle thread
            with self.lock:  # free before the caller learns the result: its next piece finds this thread idle
                self.running -= 1
                self.idle += 1
                self.lock.notify_all()
            if started and failure is None:
                future.set_result(value)
            elif started:
                future.set_exception(failure)
            del future, value, failure

    def drain(self) -> None:
        """Wait for the work under way."""
        with self.lock:
            self.lock.wait_for(lambda: self.running == 0)


_kept = _Kept()


def beside(work: Callable[..., _T], *args: object) -> Future[_T]:
    """Start ``work(*args)`` on a kept thread at once, in a copy of the caller's context."""
    return _kept.hand(work, args)


def _forked() -> None:
    """A forked child has none of its parent's threads: it keeps its own."""
    global _kept
    _kept = _Kept()


atexit.register(lambda: _kept.drain())
os.register_at_fork(after_in_child=_forked)

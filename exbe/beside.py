"""Work a server's job runs beside its own thread, on threads kept for the whole process (issue 26).

A server's run does two things at once twice: it reads the Exchange endpoint while the WinRM endpoint runs the first
pipeline, and it closes both endpoints' pools together at the end. Each was a thread started for that server and
ended with it (two thread starts per server, about 0.5 ms of CPU); here the threads are started as work first needs
them and reused for every server after. A piece of work never waits for another piece of work, so work that finds
every thread busy only waits its turn. The context (the server's deadline, :mod:`exbe.deadline`) goes along.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

_T = TypeVar("_T")

#: At most this many pieces of work at once: far more than servers run at once (threads start only as needed).
MAX_THREADS = 256

_pool: ThreadPoolExecutor | None = None
_made = threading.Lock()


def beside(work: Callable[..., _T], *args: object) -> Future[_T]:
    """Start ``work(*args)`` on a kept thread, in a copy of the caller's context."""
    global _pool
    with _made:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=MAX_THREADS, thread_name_prefix="exbe-beside")
    return _pool.submit(contextvars.copy_context().run, work, *args)

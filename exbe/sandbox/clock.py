"""The sandbox's clock: real time plus an offset the tests move (``advance``), so that a servicelet's effective date,
a certificate's expiry or a lock's time to live can be reached without waiting. Every simulated server reads it
(:func:`exbe.sandbox.state.utcnow`); it is one per process, as the servers of one sandbox share one machine's clock."""

from __future__ import annotations

import datetime
import threading

_lock = threading.Lock()
_offset = datetime.timedelta(0)


def now() -> datetime.datetime:
    """The simulated servers' time (UTC, whole seconds)."""
    with _lock:
        offset = _offset
    return (datetime.datetime.now(datetime.timezone.utc) + offset).replace(microsecond=0)


def advance(delta: datetime.timedelta) -> None:
    """Move every simulated server's clock forward by ``delta``."""
    global _offset
    with _lock:
        _offset += delta


def reset() -> None:
    """Back to real time."""
    global _offset
    with _lock:
        _offset = datetime.timedelta(0)

"""Signals at every instant of a run: a stop request (SIGINT, SIGTERM, and on Windows SIGBREAK) ends exbe with exit
code 130 whenever it comes, and never with a traceback or a half-written report.

* **At start-up** (the command line read, the configuration and the inventory loaded, nothing contacted yet): one line
  and exit 130 at once; nothing was started.
* **During the run**: the first signal cancels (:class:`exbe.fleet.Cancel`: no server or step starts any more, the
  running steps end); a second one stops waiting for them. The reports are written, the exit code is 130.
* **After the last change** (reports being written): they are finished, and the exit code is still 130.

The handlers are installed before anything else (:func:`install`, the first thing :mod:`exbe.__main__` does for
``exbe`` and ``python -m exbe``) and stay until the process exits. Windows has no SIGTERM: Azure Pipelines' agent
and GitHub's runner stop a job with Ctrl+C, then Ctrl+Break, which Python raises as SIGINT and SIGBREAK. Used as a
library (no :func:`install`), exbe catches signals only while the servers run, in the main thread
(:func:`cancel_on_signals`), as before.

This module imports nothing heavy: it is loaded before everything else.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any, Protocol

#: The stop requests exbe honours, where the platform has them (SIGBREAK: Windows only; SIGTERM: not on Windows).
SIGNALS = tuple(name for name in ("SIGINT", "SIGTERM", "SIGBREAK") if hasattr(signal, name))
#: The exit code of a stopped run: 128 + SIGINT, as a shell reports a command that Ctrl-C ended.
EXIT_CANCELLED = 130


class Cancellable(Protocol):
    """What a signal stops (:class:`exbe.fleet.Cancel`)."""

    @property
    def requested(self) -> bool: ...

    def request(self, reason: str, grace_s: float) -> None: ...

    def abandon(self) -> None: ...


class _Handler:
    """The process-wide handler: before a run is attached it ends the process; then it cancels the run."""

    def __init__(self) -> None:
        self.installed = False
        self.received: str | None = None  # the first signal's name
        self._cancel: Cancellable | None = None
        self._grace_s = 0.0

    def __call__(self, number: int, frame: Any) -> None:
        name = signal.Signals(number).name
        self.received = self.received or name
        cancel = self._cancel
        if cancel is None:
            sys.stderr.write(f"exbe: {name}: stopped before any server was contacted; nothing was done\n")
            sys.stderr.flush()
            sys.stdout.flush()
            os._exit(EXIT_CANCELLED)
        if not cancel.requested:
            cancel.request(f"exbe received {name}", self._grace_s)
            sys.stderr.write(f"exbe: {name}: cancelling: no server or step starts any more; waiting at most "
                             f"{self._grace_s:.0f} s for the running steps to end (signal again to stop waiting)\n")
        else:
            cancel.abandon()
            sys.stderr.write(f"exbe: {name} again: not waiting for the running steps; writing the reports\n")
        sys.stderr.flush()

    def attach(self, cancel: Cancellable, grace_s: float) -> None:
        self._cancel, self._grace_s = cancel, grace_s


HANDLER = _Handler()


def install() -> None:
    """Install the handlers for the life of this process (the ``exbe`` command: call it before anything else)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for name in SIGNALS:
        signal.signal(getattr(signal, name), HANDLER)
    HANDLER.installed = True


def exit_code(code: int) -> int:
    """The process's exit code: 130 once a stop request came, whatever the run came to."""
    return EXIT_CANCELLED if HANDLER.received else code


@contextlib.contextmanager
def cancel_on_signals(cancel: Cancellable, grace_s: float) -> Iterator[None]:
    """While the servers run: the first signal requests ``cancel`` (no new server or step starts; running steps end,
    waited for at most ``grace_s``), a second one abandons the wait. Each says so in one line. Under :func:`install`
    the run stays attached after this block (a signal while the reports are written still counts); otherwise the
    handlers are installed for the block only, in the main thread (outside it signals cannot be caught)."""
    if HANDLER.installed:
        HANDLER.attach(cancel, grace_s)
        yield
        return
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = _Handler()
    handler.attach(cancel, grace_s)
    previous = {name: signal.signal(getattr(signal, name), handler) for name in SIGNALS}
    try:
        yield
    finally:
        for name, before in previous.items():
            signal.signal(getattr(signal, name), before)

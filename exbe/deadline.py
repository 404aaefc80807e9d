"""One deadline per server: ``server_timeout`` bounds a server's whole run, its lock's release and closing included.

Without it a server that stops answering costs each request's ``read_timeout`` over and over: pypsrp sends a Receive
up to six times after read timeouts (with growing pauses between), a lost answer is followed by a release on a new
connection, and closing sends a Delete per endpoint. With it:

* each HTTP request of the server waits at most ``min(read_timeout, time left)`` for its answer (and as much for its
  connection), and no request starts once the deadline has passed (nor a pypsrp retry whose pause would end after
  it): the request raises :class:`DeadlinePassed`, a ConnectionFailed of kind ``timeout`` naming the setting;
* a run stopped so, or any run still holding its lock at the deadline, gets :func:`release_allowance` more
  (``min(30 s, read_timeout)``) to release the lock (:meth:`Deadline.allowance`), on the open connection or a new
  one; what it could not release is reported with the exact ``exbe unlock --server S --run R``. Closing the pools
  after the deadline sends nothing (WinRM ends an idle shell at its own idle timeout);
* the time a server waits for another server's IIS restart (one at a time in a fleet, :class:`exbe.fleet.Fleetwide`)
  does not count (:meth:`Deadline.paused`): a server is not stopped for its neighbours' slowness.

So a server's run ends within ``server_timeout + min(30, read_timeout)`` seconds of its start, give or take the
agent's own work between requests (README, "How long a server can take").

The deadline of the run under way reaches the transport through :data:`CURRENT` (a context variable, set by
:func:`running`): exbe's HTTP transport (:class:`exbe.http_transport.HttpTransport`) reads it when an endpoint's
pool is opened and bounds each of its requests itself; where pypsrp's requests transport carries an endpoint (CredSSP,
a proxy over TLS or SOCKS), :func:`bound_requests` wraps that transport's requests the same way.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .errors import ConnectionFailed

if TYPE_CHECKING:
    from .inventory import Server

#: The setting (exbe.defaults / EXBE_SERVER_TIMEOUT) the deadline comes from: messages name it.
SETTING = "server_timeout"
#: Seconds a lock release still gets after the deadline, at most (part of the documented bound): the server's
#: ``read_timeout`` when it is shorter (:func:`release_allowance`).
RELEASE_ALLOWANCE_S = 30.0


class Deadline:
    """A monotonic instant after which a server's requests are refused. Thread-safe: both endpoints of a server
    (the Exchange read runs beside the WinRM pipeline) share one."""

    def __init__(self, seconds: float, *, reason: str = "") -> None:
        self.seconds = seconds
        # what a refused request says: the setting that set the deadline, as the advice names it
        self.reason = reason or (f"this server's run reached {SETTING} ({seconds:g} s, exbe.defaults.{SETTING} or "
                                 f"EXBE_{SETTING.upper()})")
        self._at = time.monotonic() + seconds
        self._lock = threading.Lock()
        self.fired = False  # a request was refused or cut short by it

    def left(self) -> float:
        with self._lock:
            return self._at - time.monotonic()

    @property
    def passed(self) -> bool:
        return self.left() <= 0

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Time spent inside does not count (waiting for the fleet's restart gate)."""
        entered = time.monotonic()
        try:
            yield
        finally:
            with self._lock:
                self._at += time.monotonic() - entered

    @contextlib.contextmanager
    def allowance(self, seconds: float) -> Iterator[None]:
        """Inside, when less than ``seconds`` are left (or the deadline has passed), the deadline is ``seconds``
        from now: the lock's release at the end of a run. Afterwards it is what it was."""
        with self._lock:
            saved = self._at
            self._at = max(saved, time.monotonic() + seconds)
        try:
            yield
        finally:
            with self._lock:
                self._at = saved

    def refused(self, server: Server, endpoint: str, *, waiting: bool = False) -> DeadlinePassed:
        """The error of a request refused at the deadline (``waiting``: cut short while awaiting its answer)."""
        self.fired = True
        return DeadlinePassed(server, endpoint, self, waiting=waiting)


class DeadlinePassed(ConnectionFailed):
    """A request of a server whose deadline had passed (or was reached while it waited): kind ``timeout``, naming
    the setting, so the run's advice says which one to raise."""

    def __init__(self, server: Server, endpoint: str, deadline: Deadline, *, waiting: bool = False) -> None:
        exchange = endpoint == "exchange"
        self.waiting = waiting  # a request had gone out: what it asked for may have been done
        super().__init__(
            server=server.name, host=server.exchange_host if exchange else server.host,
            port=server.exchange_port if exchange else server.port, kind="timeout",
            detail=f"{deadline.reason}; no request is sent to it after that")


def release_allowance(server: Server) -> float:
    """What a lock release still gets after the deadline: :data:`RELEASE_ALLOWANCE_S`, or the server's
    ``read_timeout`` when shorter (a release is one round trip on a connection that works)."""
    return float(min(RELEASE_ALLOWANCE_S, server.read_timeout))


#: The deadline of the server whose run this thread (or context) is doing; None outside a server's run.
CURRENT: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar("exbe_deadline", default=None)


@contextlib.contextmanager
def running(deadline: Deadline) -> Iterator[Deadline]:
    """Pools opened inside (this context, and contexts copied from it) are bound by ``deadline``."""
    token = CURRENT.set(deadline)
    try:
        yield deadline
    finally:
        CURRENT.reset(token)


def request_timeouts(deadline: Deadline | None, timeout: float | tuple[float, float] | None,
                     defaults: tuple[float, float], server: Server, endpoint: str) -> tuple[float, float]:
    """A request's (connect, read) timeouts as requests takes them (None: ``defaults``; one number: both), each at
    most the time left before ``deadline``; a request that would start after it is refused."""
    if timeout is None:
        connect, read = defaults
    elif isinstance(timeout, tuple):
        connect, read = timeout
    else:
        connect = read = timeout
    if deadline is None:
        return connect, read
    left = deadline.left()
    if left <= 0:
        raise deadline.refused(server, endpoint)
    return min(connect, left), min(read, left)


def bound_requests(wsman: Any, server: Server, endpoint: str) -> None:
    """Bind every HTTP request of pypsrp's ``wsman`` to the current deadline (none: unchanged). pypsrp sends each
    request through its transport's ``_send_request(request, timeout)``; this wraps it:

    * a request that would start after the deadline is refused (:class:`DeadlinePassed`);
    * its connect and read timeouts become at most the time left;
    * a timeout that the deadline cut short, or after which pypsrp's pause before its retry would pass the deadline,
      raises :class:`DeadlinePassed` instead of the timeout (pypsrp retries only timeouts)."""
    deadline = CURRENT.get()
    if deadline is None:
        return
    import requests

    transport = wsman.transport
    send = transport._send_request
    timeouts_in_a_row = [0]

    def send_bounded(request: Any, timeout: Any = None) -> Any:
        bounded = request_timeouts(deadline, timeout, (transport.connection_timeout, transport.read_timeout),
                                   server, endpoint)
        try:
            answer = send(request, timeout=bounded)
        except (requests.exceptions.ConnectTimeout, requests.exceptions.ReadTimeout):
            timeouts_in_a_row[0] += 1
            # pypsrp pauses reconnection_backoff * 2**attempt at most before its retry
            pause = float(getattr(transport, "reconnection_backoff", 0.0)) * 2 ** timeouts_in_a_row[0]
            if deadline.left() > pause:
                raise
            transport.encryption = None  # as pypsrp does after a timeout: the next request authenticates anew
        else:
            timeouts_in_a_row[0] = 0
            return answer
        raise deadline.refused(server, endpoint, waiting=True)  # outside the except: not chained to the timeout

    transport._send_request = send_bounded

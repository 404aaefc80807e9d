"""The fleet: any per-server job run on every selected server, at most ``concurrency`` at once.

:func:`run_fleet` knows nothing of what a job does on a server. It starts one per server through a factory
(:data:`StartJob`) and gets back what :class:`ServerJob` promises: the server's record (:class:`exbe.model.ServerRun`),
the stage under way, and whether the server refused the credentials. Around the jobs it keeps what a fleet needs:

* **isolation**: one server's trouble stays that server's; whatever escapes a job (a bug, an error raised inside
  pypsrp) fails that server at its current stage, and every server gets a record whatever happened on the others;
* **lockout safety**: the run's first logon is one endpoint of one server (:class:`FirstLogon`); the other servers
  start only once it succeeded, or failed for a reason other than the credentials. Once a server refuses the
  credentials, the servers not yet started are not attempted (each further try is a bad logon against one domain
  account), unless ``--keep-going``: a wrong password costs one bad logon per run;
* **the restart gate**: one lock shared by the servers' jobs, so that one server of the fleet restarts IIS at a time;
* **cancellation** (:class:`Cancel`: SIGINT/SIGTERM): no server starts after it, each running job stops before its
  next step (it raises :class:`Cancelled` from its ``begin``), and after the grace period or a second signal the
  fleet stops waiting and reports the running servers with their current step's outcome unknown.

A new job is a class built on :class:`exbe.server_run.ServerJob` (see there) and one entry in
:data:`exbe.jobs.JOBS`; nothing here changes.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from . import collector
from .facts import iso
from .model import ServerRun, StepResult
from .quoting import unlock_command, verify_command
from .steps import restart as restart_step
from .transport import preload

if TYPE_CHECKING:
    from .inventory import Server

log = logging.getLogger("exbe.fleet")

Progress = Callable[[str, str, str, str], None]  # server, step, status, message


class Cancel:
    """A request to stop the run, from SIGINT/SIGTERM (:func:`exbe.cli.run_task`). Once :meth:`request` ed, no server
    starts, and each running server stops before its next step (:meth:`exbe.server_run.ServerJob.begin`): threads are
    never killed, so every step either runs whole or not at all and each server's job ends as it always does,
    releasing what it holds. :func:`run_fleet` waits for the running steps at most ``grace_s`` after the request, or
    until :meth:`abandon` (a second signal); then it stops waiting and reports those servers with their outcome
    unknown."""

    def __init__(self) -> None:
        self._requested = threading.Event()
        self._abandoned = threading.Event()
        self.reason = ""
        self.deadline: float | None = None  # time.monotonic() after which run_fleet stops waiting

    def request(self, reason: str, grace_s: float) -> None:
        """Stop starting steps (the first request counts; ``reason`` says why, e.g. "exbe received SIGINT")."""
        if not self._requested.is_set():
            self.reason, self.deadline = reason, time.monotonic() + grace_s
            self._requested.set()

    def abandon(self) -> None:
        """Stop waiting for the running steps too."""
        self._abandoned.set()

    @property
    def requested(self) -> bool:
        return self._requested.is_set()

    @property
    def abandoned(self) -> bool:
        """run_fleet stopped waiting (a second signal, or the grace period ran out): steps may still be running."""
        return self._abandoned.is_set()


class Cancelled(Exception):
    """Raised at the start of ``stage`` when the run was cancelled: the server stops there."""

    def __init__(self, stage: str) -> None:
        super().__init__(stage)
        self.stage = stage


def cancel_grace(servers: list[Server]) -> float:
    """How long running steps get to end after a cancel: the longest step, the restart, waits up to
    restart.TIMEOUT_SECONDS on the server, and any one answer may take a server's read_timeout."""
    return float(restart_step.TIMEOUT_SECONDS + max((server.read_timeout for server in servers), default=0))


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How to reach and drive the servers (not what to decide: that is Settings)."""

    template_dir: Path | None = None
    thumbprint: str | None = None  # `exbe bind --thumbprint`: bind this certificate instead of the selected one
    cleanup: bool = False  # `exbe renew --cleanup`
    # `--restart-iis=always`: the renew chain restarts IIS even when nothing bound changed and W3SVC/WAS run;
    # implies Settings.restart_iis.
    restart_always: bool = False
    # `--keep-going`: try the remaining servers even after one refused the credentials (a lockout risk)
    keep_going: bool = False
    # this invocation's id: the servers' locks and journals name it (`exbe unlock --run`)
    run_id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex[:12])
    # `exbe unlock`: remove only this run's lock (`--run`), or whatever lock is there (`--yes`)
    unlock_run: str | None = None
    unlock_any: bool = False
    # SIGINT/SIGTERM: see Cancel
    cancel: Cancel = dataclasses.field(default_factory=Cancel)
    # called with each server's run as it finishes (the console prints a server's lines together, exbe.console)
    finished: Callable[[ServerRun], None] | None = None
    # called with (server, step) as each step of a server begins (the console names what is still running)
    began: Callable[[str, str], None] | None = None


class FirstLogon:
    """Lockout arithmetic: the run's first logon is one endpoint of one server, and every other server waits until
    it is decided -- it succeeded, or it failed for a reason other than the credentials -- so that a wrong password
    costs one bad logon per run, not two per server started at once. The first server's job calls :meth:`decided`
    once its WinRM endpoint accepted (or refused) the logon, before it opens its Exchange endpoint; the fleet calls
    it too when that job ends, whatever happened."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._claimed = False
        self._decided = threading.Event()
        self.refused_by: str | None = None  # the server whose refusal decided it

    def turn(self, cancel: Cancel) -> bool:
        """Wait for this server's turn to log on: True at once for the first caller (it logs on first and must be
        decided), else False once the first logon is decided or the run is cancelled."""
        with self._lock:
            if not self._claimed:
                self._claimed = True
                return True
        while not self._decided.wait(0.1) and not cancel.requested:
            pass
        return False

    def decided(self, refused_by: str | None = None) -> None:
        """The first logon is decided (``refused_by``: the server that refused the credentials)."""
        with self._lock:
            if refused_by and self.refused_by is None:
                self.refused_by = refused_by
        self._decided.set()


@dataclasses.dataclass(frozen=True)
class Fleetwide:
    """What the fleet shares with every server's job."""

    restart_gate: threading.Lock = dataclasses.field(default_factory=threading.Lock)  # one IIS restart at a time
    first_logon: FirstLogon = dataclasses.field(default_factory=FirstLogon)


class ServerJob(Protocol):
    """What the fleet needs of one server's job (:class:`exbe.server_run.ServerJob` provides it)."""

    run: ServerRun  # the record, appended to as the job goes (the fleet copies it when it stops waiting)
    stage: str  # the step under way: an exception that escapes the job fails this one
    credentials_refused: bool  # the server refused the logon (lockout safety)

    def execute(self) -> ServerRun: ...

    def abandoned(self) -> list[str]:
        """The fleet stopped waiting for it: release what it holds on the server, beside its running step; the
        warnings to report."""
        ...


#: Builds one server's job; the second argument is what the fleet shares with every job.
StartJob = Callable[["Server", Fleetwide], ServerJob]


def new_run(server: Server) -> ServerRun:
    """The record of one server's run, starting now, with what its configuration weakens (TLS validation off,
    CredSSP) among the run's warnings: said on every run, in every report."""
    return ServerRun(server=server.name, host=server.host,
                     started_at=iso(datetime.datetime.now(datetime.timezone.utc)), warnings=list(server.warnings))


def unexpected_message(exc: BaseException) -> str:
    """An exception exbe did not expect, in one line: its type and its text."""
    text = " ".join(str(exc).split())
    return f"unexpected error: {type(exc).__name__}" + (f": {text}" if text else "")


def fail_unexpectedly(run: ServerRun, step: str, exc: BaseException, progress: Progress | None) -> None:
    """Record ``exc`` as ``step``'s failure and the server's error. Reporting it must not fail in turn: a progress
    callback that raises is logged, the result is kept."""
    message = unexpected_message(exc)
    if run.error is None:
        run.error, run.error_kind = message, "unexpected"
    result = StepResult(server=run.server, step=step, status="failed", message=message)
    run.steps.append(result)
    if progress is not None:
        try:
            progress(run.server, step, "failed", message)
        except Exception:  # noqa: BLE001 - the report still has it
            log.debug("%s: reporting progress failed", run.server, exc_info=True)


def mark_cancelled(run: ServerRun, stage: str | None, reason: str, *, running: bool = False) -> None:
    """Record that the run was cancelled (``reason``) on this server: before it started (``stage`` None), before
    ``stage`` started, or (``running``) while ``stage`` ran and exbe stopped waiting for it. No progress line: the
    command line says once that the run was cancelled, and the reports say it per server."""
    if stage is None:
        step, message = "connect", f"cancelled before exbe started on this server ({reason}); nothing was done on it"
    elif running:
        step, message = stage, (f"cancelled while {stage} was running ({reason}) and exbe stopped waiting: the "
                                f"outcome of {stage} is unknown; {verify_command(run.server)} shows where the "
                                "server stands")
    else:
        step, message = stage, (f"cancelled before {stage} started ({reason}); the steps before it ran whole; "
                                f"{verify_command(run.server)} shows where the server stands")
    run.error, run.error_kind = message, "cancelled"
    run.steps.append(StepResult(server=run.server, step=step, status="skipped", message=message))


def not_attempted(server: Server, refused_by: str, progress: Progress) -> ServerRun:
    """A server exbe did not try because another refused the same credentials: each further try is a bad logon
    against one domain account, and a fleet's worth of them locks it out."""
    reason = (f"not attempted: {refused_by} refused the credentials, so exbe stopped using them before the account "
              "locks out; fix EXBE_USERNAME/EXBE_PASSWORD (or pass --keep-going to try every server)")
    run = new_run(server)
    run.error, run.error_kind = reason, "not_attempted"
    run.steps.append(StepResult(server=server.name, step="connect", status="skipped", message=reason))
    progress(server.name, "connect", "skipped", reason)
    return run


def run_fleet(servers: list[Server], start: StartJob, options: RunOptions, progress: Progress,
              concurrency: int) -> list[ServerRun]:
    """Run the job ``start`` builds on every server, at most ``concurrency`` at once; results in the servers' order,
    one for every server whatever happened on the others.

    After ``options.cancel`` is requested no server starts and the running ones stop before their next step; this
    waits for them until the cancel's deadline or :meth:`Cancel.abandon`, then returns without them, each reported
    with what it had done and its current step's outcome unknown (their threads end on their own)."""
    shared = Fleetwide()
    refused_by: list[str] = []  # servers that refused the credentials, first first
    cancel = options.cancel
    jobs: dict[int, ServerJob] = {}  # the servers that started, by position
    preload()

    def one(index: int, server: Server) -> ServerRun:
        job: ServerJob | None = None
        started = time.monotonic()
        if cancel.requested:
            run = new_run(server)
            mark_cancelled(run, None, cancel.reason)
            return run
        first = shared.first_logon.turn(cancel)
        try:
            if cancel.requested:
                run = new_run(server)
                mark_cancelled(run, None, cancel.reason)
                return run
            refused = refused_by[0] if refused_by else shared.first_logon.refused_by
            if refused and not options.keep_going:
                return not_attempted(server, refused, progress)
            job = start(server, shared)
            jobs[index] = job
            run = job.execute()
            if job.credentials_refused:
                refused_by.append(server.name)
            return run
        except Exception as exc:  # noqa: BLE001 - what the job's execute did not catch (building it, reporting)
            log.debug("%s: the server's run failed unexpectedly", server.name, exc_info=True)
            if job is not None:
                run, stage = job.run, job.stage
            else:
                run = new_run(server)
                stage = "connect"
            fail_unexpectedly(run, stage, exc, progress)
            run.duration_s = round(time.monotonic() - started, 3)
            return run
        finally:
            if first:
                shared.first_logon.decided(server.name if job is not None and job.credentials_refused else None)

    def reported(index: int, server: Server) -> ServerRun:
        run = one(index, server)
        if options.finished is not None:
            options.finished(run)
        return run

    pool = ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(servers))), thread_name_prefix="exbe")
    with collector.quiet():
        futures = [pool.submit(reported, index, server) for index, server in enumerate(servers)]
        all_done = _all_done(futures)
        try:
            # short waits, so that the signal handlers of the main thread run and the deadline is noticed
            while not all_done.wait(0.2) and not cancel.abandoned:
                if cancel.deadline is not None and time.monotonic() > cancel.deadline:
                    cancel.abandon()
        finally:
            pool.shutdown(wait=not cancel.abandoned, cancel_futures=True)
    runs = [future.result() if future.done() and not future.cancelled() else _unfinished(server, jobs.get(index),
                                                                                         cancel.reason)
            for index, (future, server) in enumerate(zip(futures, servers, strict=True))]
    left = [(run, job) for run, future, job in zip(runs, futures, [jobs.get(i) for i in range(len(servers))],
                                                    strict=True)
            if job is not None and not (future.done() and not future.cancelled())]
    if left:  # abandoned while a step ran: each releases its lock on a new connection, all at once
        with ThreadPoolExecutor(max_workers=len(left), thread_name_prefix="exbe-abandoned") as releases:
            for (run, _), said in zip(left, releases.map(lambda item: _abandon(item[1], item[0], options.run_id),
                                                         left), strict=True):
                run.warnings.extend(said)
    return runs


def _all_done(futures: list[Future[ServerRun]]) -> threading.Event:
    """An event set once every future is done (or cancelled). Waiting on it costs the same for one server or a
    thousand: ``concurrent.futures.wait`` locks and walks every pending future on each call (1.9 ms at 1,000
    pending, five times a second)."""
    done = threading.Event()
    left = len(futures)
    lock = threading.Lock()

    def one(_: Future[ServerRun]) -> None:
        nonlocal left
        with lock:
            left -= 1
            if not left:
                done.set()

    if not futures:
        done.set()
    for future in futures:
        future.add_done_callback(one)
    return done


def _abandon(job: ServerJob, run: ServerRun, run_id: str) -> list[str]:
    try:
        return job.abandoned()
    except Exception as exc:  # noqa: BLE001 - the report is written whatever this comes to
        log.debug("%s: releasing an abandoned server's lock failed", run.server, exc_info=True)
        return [f"exbe stopped waiting and could not release the lock of run {run_id} ({unexpected_message(exc)}); "
                f"{unlock_command(run.server, run_id)} removes it"]


def _unfinished(server: Server, job: ServerJob | None, reason: str) -> ServerRun:
    """A server run_fleet stopped waiting for: what its job had recorded so far (a copy: the job may still append),
    marked cancelled while its current step ran; a server that had not started, cancelled before it started."""
    if job is None:
        run = new_run(server)
        mark_cancelled(run, None, reason)
        return run
    run = dataclasses.replace(job.run, steps=list(job.run.steps), warnings=list(job.run.warnings))
    mark_cancelled(run, job.stage, reason, running=True)
    return run

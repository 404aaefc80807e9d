"""What every job on one server shares: the session on both endpoints, the server's lock, the recorder of
StepResults and the current facts.

**Writing a job** (the back-end chain, :mod:`exbe.jobs.backend`, is one; the Auth certificate's would be another):

1. Subclass :class:`ServerJob` in a new module ``exbe/jobs/<name>.py``; list the tasks that change servers in
   ``LOCKING_TASKS`` (they take the lock in their first pipeline; dry runs and the others only look at it).
2. Write :meth:`ServerJob.steps`: the job's runbook, top to bottom. Each step calls :meth:`begin` (a cancel stops the
   server there), does its work through :meth:`scripts` (WinRM step scripts, ``exbe/steps/<step>.py`` +
   ``ps_templates/<step>.ps1.j2``, in one pipeline: the lock's context and journal ride along) or through the
   session's Exchange endpoint (``self.session``, :mod:`exbe.exchange`; journal such a change with
   ``self.lock.note_exchange_change``), and answers with one StepResult through :meth:`record` or :meth:`fail`.
   :meth:`first_read` is the usual first pipeline: the lock, the facts, and the Exchange read beside them.
   The last change passes ``release=True`` to :meth:`scripts`; a run that ends otherwise releases at the end.
3. Register its tasks in :data:`exbe.jobs.JOBS`. The fleet (:func:`exbe.fleet.run_fleet`) runs it on every server
   with the same concurrency, cancellation, lockout safety and restart gate as every other job; the reports read
   its StepResults as they read any.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from concurrent.futures import wait
from typing import TYPE_CHECKING, Any, ClassVar

from . import batch, contract, exchange, steps
from .beside import beside
from .deadline import Deadline, DeadlinePassed, release_allowance, running
from .errors import ConnectionFailed
from .facts import ExchangeFacts, HostFacts
from .fleet import Cancelled, Fleetwide, Progress, RunOptions, fail_unexpectedly, mark_cancelled, new_run
from .lock import Planned, ServerLock
from .model import ServerRun, Settings, StepResult
from .quoting import verify_command
from .render import render_step
from .steps import facts as facts_step
from .transport import Session

if TYPE_CHECKING:
    from .config import Credentials
    from .inventory import Server

log = logging.getLogger("exbe.run")

#: The ConnectionFailed kinds that mean "the Exchange endpoint is not usable": the job works from the certificate
#: store without it (another kind, e.g. TLS validation refused, fails the server).
EXCHANGE_DOWN_KINDS = {"unreachable", "unavailable", "winrm_not_enabled", "auth", "no_credentials", "timeout",
                       "protocol", "server_error", "dropped"}


class ServerJob:
    """One server's run of one task of a job: every step answers with one StepResult appended to ``self.run``."""

    #: The tasks of this job that change servers: they take the lock in their first pipeline (not in dry runs).
    LOCKING_TASKS: ClassVar[tuple[str, ...]] = ()

    def __init__(self, server: Server, task: str, credentials: Credentials, settings: Settings, options: RunOptions,
                 progress: Progress, fleetwide: Fleetwide) -> None:
        self.server = server
        self.task = task
        self.settings = settings
        self.options = options
        self.progress = progress
        self.fleetwide = fleetwide  # the restart gate (one IIS restart in the fleet at a time), the first logon
        self.session = Session(server, credentials)
        self._credentials = credentials
        self.run = new_run(server)
        self.facts: HostFacts | None = None
        self.exchange: ExchangeFacts | None = None
        self.lock_read: dict[str, Any] | None = None  # the lock a read-only run found held (`exbe status`)
        self.exchange_reason = ""
        self.exchange_notes: list[str] = []  # warnings of the last Exchange read (statements that did not answer)
        self.credentials_refused = False  # the server refused the logon (lockout safety, exbe.fleet)
        self.stage = "connect"  # the step under way: an unexpected exception fails this one
        self.deadline = Deadline(server.server_timeout)  # started now: the job is built as the server's run starts
        self.lock = ServerLock(server.name, options.run_id, task, warn=self.run.warnings.append,
                               taking=task in self.LOCKING_TASKS and not settings.dry_run)

    # -- the job's runbook -------------------------------------------------------------------------------------------
    def steps(self) -> None:
        """The job's steps for ``self.task``, in order (each subclass writes its own)."""
        raise NotImplementedError

    def execute(self) -> ServerRun:
        """Run :meth:`steps` over one session, within the server's deadline (:mod:`exbe.deadline`); whatever
        happens, release the lock (within the deadline's allowance) and return the record."""
        started = time.monotonic()
        try:
            with running(self.deadline), self.session:
                try:
                    self.steps()
                finally:
                    with self.deadline.allowance(release_allowance(self.server)):
                        self.lock.release_at_end(self._run_planned, lambda: self.session.discard("winrm"))
        except Cancelled as stop:
            mark_cancelled(self.run, stop.stage, self.options.cancel.reason)
        except DeadlinePassed as exc:
            self.run.error, self.run.error_kind = str(exc), exc.kind
            what = (f"while {self.stage} awaited the server's answer: the outcome of {self.stage} is unknown, "
                    f"{verify_command(self.server.name)} shows where the server stands" if exc.waiting
                    else f"before {self.stage} could send its next request")
            self.record(StepResult(server=self.server.name, step=self.stage, status="failed",
                                   message=f"stopped by server_timeout {what} ({exc})"))
        except ConnectionFailed as exc:
            self.run.error = str(exc)
            self.run.error_kind = exc.kind
            self.credentials_refused = exc.kind == "auth"
            self.record(StepResult(server=self.server.name, step="connect", status="failed", message=str(exc)))
        except Exception as exc:  # noqa: BLE001 - one server's bug or library error never ends the fleet's run
            log.debug("%s: %s failed unexpectedly", self.server.name, self.stage, exc_info=True)
            fail_unexpectedly(self.run, self.stage, exc, self.progress)
        finally:
            self.run.duration_s = round(time.monotonic() - started, 3)
        return self.run

    # -- what steps use ----------------------------------------------------------------------------------------------
    def begin(self, stage: str) -> None:
        """Enter ``stage`` (the step an unexpected exception fails), or stop here when the run was cancelled."""
        if self.options.cancel.requested:
            raise Cancelled(stage)
        self.stage = stage
        if self.options.began is not None:
            self.options.began(self.server.name, stage)

    @contextlib.contextmanager
    def restart_turn(self) -> Iterator[None]:
        """Hold the fleet's restart gate (one IIS restart at a time) inside; the wait for it, behind another
        server's restart, does not count against this server's deadline."""
        with self.deadline.paused():
            self.fleetwide.restart_gate.acquire()
        try:
            yield
        finally:
            self.fleetwide.restart_gate.release()

    def record(self, result: StepResult) -> None:
        self.run.steps.append(result)
        self.progress(self.server.name, result.step, result.status, result.message)

    def fail(self, step: str, message: str, duration: float, warnings: list[str] | None = None) -> bool:
        """Record ``step`` as failed with ``message``; returns False (what a step that failed returns)."""
        self.record(StepResult(server=self.server.name, step=step, status="failed", message=message,
                               warnings=warnings or [], duration_s=round(duration, 3)))
        return False

    def current_facts(self) -> HostFacts:
        assert self.facts is not None, "the first read reads the facts first"
        return self.facts

    def first_read(self) -> tuple[list[str] | None, dict[str, Any]]:
        """The first pipeline: the lock (taken by a changing task, else looked at) and the facts, with the Exchange
        endpoint read beside it. Returns the lock's warnings (None: this server stops here, the lock step recorded)
        and the facts envelope."""
        self.log_on()
        exchange_read = beside(self.read_exchange)  # the deadline too (the context goes along)
        try:
            # the lock first: a changing task reads the facts it decides with under its lock (same round trip)
            lock_answer, envelope = self.scripts([self.lock.first_statement(),
                                                  ("facts", facts_step.plan(self.settings))])
            # before the Exchange read's failure can end the run: a lock taken here is this run's to release
            result, lock_warnings = self.lock.first_answered(lock_answer)
            if lock_answer["ok"] and not self.lock.taking and lock_answer["data"].get("held"):
                # a lock held by another run, as `exbe status` shows it
                self.lock_read = {"now": lock_answer["data"]["now"], "held": lock_answer["data"]["held"]}
            if result is not None:
                self.record(result)
        finally:
            wait([exchange_read])  # whatever happened here, the read has ended before the run goes on or stops
        exchange_read.result()  # a connection failure there (e.g. TLS validation) is the run's failure too
        return lock_warnings, envelope

    def log_on(self) -> None:
        """Open the WinRM endpoint (authentication, the pool's Create) before anything else of this server: the
        fleet's other servers wait for the run's first logon (:class:`exbe.fleet.FirstLogon`), and the Exchange
        endpoint is not tried with credentials WinRM refused. A refusal raises ConnectionFailed ("auth")."""
        try:
            self.session.open("winrm")
        except ConnectionFailed as exc:
            if exc.kind == "auth":
                self.credentials_refused = True
                self.fleetwide.first_logon.decided(self.server.name)
            raise
        self.fleetwide.first_logon.decided()

    def read_exchange(self) -> None:
        """Read the Exchange endpoint's facts into ``self.exchange`` (None with ``exchange_reason`` when it is
        down or its cmdlets failed)."""
        try:
            self.exchange, self.exchange_notes = exchange.read_facts(self.session, self.server.name)
            if self.exchange is None:
                self.exchange_reason = "; ".join(self.exchange_notes) or "the Exchange cmdlets failed"
        except ConnectionFailed as exc:
            if exc.kind not in EXCHANGE_DOWN_KINDS or isinstance(exc, DeadlinePassed):
                raise
            self.exchange, self.exchange_reason = None, str(exc)

    def scripts(self, planned: Planned, *, release: bool = False, retake: bool = False) -> list[dict[str, Any]]:
        """Render and run step scripts in one pipeline, under this run's lock (:meth:`ServerLock.pipeline`: its
        context, journal notes and ``release``/``retake`` ride along); one envelope per step, each checked against
        its step's result schema; failures (and answers that break the contract) as failed envelopes."""
        return self.lock.pipeline(self._run_planned, planned, release=release, retake=retake, stage=self.stage)

    def abandoned(self) -> list[str]:
        """The fleet stopped waiting for this server (a second signal) while ``self.stage`` ran: release this run's
        lock on a session of its own, beside the step still running (the release carries the run id, so it removes
        only this run's lock); the warnings to report (the exact unlock command when that failed)."""
        said: list[str] = []
        own = self.lock.beside(said.append)
        allowed = release_allowance(self.server)
        with running(Deadline(allowed, reason=f"releasing the lock took its whole allowance ({allowed:g} s)")), \
                Session(self.server, self._credentials) as fresh:
            own.release_abandoned(lambda planned: self._run_planned(planned, session=fresh), self.stage)
        return said

    def _run_planned(self, planned: Planned, session: Session | None = None) -> list[dict[str, Any]]:
        scripts = [render_step(step, data, override_dir=self.options.template_dir) for step, data in planned]
        # a pipeline that only reads is sent again if its connection drops; one that changes something never is
        result = (session or self.session).run_scripts(
            scripts, repeatable=not any(steps.get(step).mutating for step, _ in planned))
        # each statement's own answer (exbe.batch): a failed one leaves a record and no envelope, the rest run on
        envelopes = []
        for (step, _), answer in zip(planned, batch.step_answers([step for step, _ in planned], result.events),
                                     strict=True):
            try:
                envelope = contract.one_result(step, answer.output)
                steps.get(step).check_result(envelope)
            except contract.ContractError as exc:
                reason = answer.why() if answer.failed else str(exc)
                envelope = contract.make_result(step, ok=False, error=reason, dry_run=self.settings.dry_run)
            records = [] if answer.failed else [e.text for e in [*answer.errors, *answer.unplaced]]
            envelope["warnings"] = [*envelope["warnings"], *records, *result.warnings]
            envelopes.append(envelope)
        return envelopes

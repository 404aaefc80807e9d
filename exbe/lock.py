"""The server's lock as one run holds it: take it with the first pipeline, carry its context into each mutating
statement, journal a change made on the Exchange endpoint, release it with the last change, take it again for a
restart no one expected, report an interrupted run, and remove it (`exbe unlock`).

The lock itself -- a file on the server, its record and journal, what its script answers -- is the ``lock`` step
(:mod:`exbe.steps.lock`); this object is the only reader of those answers. A job never sees them: it asks for the
first statement, hands over the answers, and sends its pipelines through :meth:`ServerLock.pipeline`, which adds the
lock's statements (a retake first, a pending journal note, the release last) and hands back the job's own envelopes.

One run's lock costs no round trip of its own: every lock statement rides on a pipeline the job sends anyway, except
the release at the end of a run whose last pipeline did not carry it (:meth:`ServerLock.release_at_end`).
"""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import Callable
from typing import Any

from . import steps
from .errors import ConnectionFailed
from .facts import HostFacts, iso
from .fleet import unexpected_message
from .model import StepResult
from .quoting import unlock_command
from .steps import lock as lock_step

log = logging.getLogger("exbe.lock")

#: The ConnectionFailed kinds after which a pipeline's statements may have run on the server although its answer was
#: lost (a connection dropped after the request went out, no answer in time, an HTTP 500): a lock it asked for may be
#: this run's. The others (refused logon, no route, TLS refused...) mean the request never reached PowerShell.
ANSWER_LOST_KINDS = frozenset({"dropped", "timeout", "protocol", "server_error"})

Planned = list[tuple[str, dict[str, Any]]]  # (step, input) statements of one pipeline
RunPipeline = Callable[[Planned], list[dict[str, Any]]]  # runs them, one envelope per statement


def agent_name() -> str:
    """This agent's host name, as the lock records it."""
    return socket.gethostname()


class ServerLock:
    """One run's hold on one server's lock. ``taking``: the run changes the server (it takes the lock); otherwise
    its first statement only looks. Run-level warnings (a lock lost, a release that failed) go to ``warn``."""

    def __init__(self, server: str, run_id: str, task: str, *, taking: bool, warn: Callable[[str], None]) -> None:
        self.server = server
        self.run_id = run_id
        self.task = task
        self.taking = taking
        self._warn = warn
        self.found: lock_step.LockFacts | None = None  # what the first pipeline found (verify's check reads it)
        self.held = False  # this run holds the lock: mutating statements carry its context, a release ends it
        self._note: dict[str, Any] | None = None  # a journal entry for the next pipeline (a change without script)
        self._released_early = False  # released with the bind, as no restart was expected: a restart retakes it
        self._maybe_held = False  # an acquire whose answer was lost: the lock may be this run's though not known so
        self.released = False  # a release of this run's lock was answered

    # -- the first pipeline ------------------------------------------------------------------------------------------
    def first_statement(self) -> tuple[str, dict[str, Any]]:
        """The first pipeline's first statement: a changing run takes the lock, others only look at it."""
        return "lock", self._request("acquire" if self.taking else "show")

    def first_answered(self, envelope: dict[str, Any]) -> tuple[StepResult | None, list[str] | None]:
        """The first statement's answer: the ``lock`` step to record (taken, or refused), and the warnings for the
        run's first step, None when this server must stop here (locked by another run, or the lock could not be
        taken). A run that took the lock reports the interrupted run it found first."""
        self._maybe_held = False
        if not envelope["ok"]:
            if self.taking:
                return self._failed(f"exbe's lock on this server could not be taken ({envelope['error']}); nothing "
                                    "was changed"), None
            return None, [f"exbe's lock on this server could not be read: {envelope['error']}"]
        found = lock_step.LockFacts.parse(envelope["data"])
        self.found = found
        interrupted = found.interrupted()
        notes = [lock_step.interrupted_message(interrupted) + ("; this run converges from the facts" if self.taking
                                                               else "")] if interrupted else []
        notes += envelope["warnings"]  # e.g. a %ProgramData%\exbe whose ACL lets others in (lock.ps1.j2)
        if not self.taking:
            if found.held is not None and not found.held.expired(found.now):
                notes.append(found.held.held_by_another(self.server))
            return None, notes
        if not found.acquired:
            held = found.held
            unlock = unlock_command(self.server, held.run_id) if held and held.run_id else \
                unlock_command(self.server, any_lock=True)
            return self._failed(f"locked by {held.holder() if held else 'another run'}: nothing was changed on this "
                                "server; wait for that run, or remove its lock with "
                                f"{unlock} once it is gone", warnings=notes), None
        self.held = True
        mine = found.held
        if found.took_over is not None:
            notes.append(f"took over its expired lock ({found.took_over.holder()})")
        return StepResult(server=self.server, step="lock", status="ok",
                          message=f"took the lock for run {self.run_id} ({self.task}) until "
                                  f"{iso(mine.expires_at) if mine and mine.expires_at else 'its expiry'}",
                          data={"run_id": self.run_id, "agent": agent_name()}, warnings=notes), []

    def interrupted(self) -> lock_step.LockRecord | None:
        """The journal of an interrupted run the first pipeline found (None: none, or the lock was not read)."""
        return self.found.interrupted() if self.found is not None else None

    def replacement(self, facts: HostFacts) -> tuple[str, str] | None:
        """The certificate the last run made to replace the back-end one and did not bind, and who made it
        (:meth:`exbe.steps.lock.LockFacts.replacement`); None when the lock was not read."""
        if self.found is None:
            return None
        return self.found.replacement({certificate.thumbprint for certificate in facts.certificates})

    # -- every pipeline ----------------------------------------------------------------------------------------------
    def pipeline(self, run: RunPipeline, planned: Planned, *, release: bool = False, retake: bool = False,
                 stage: str = "") -> list[dict[str, Any]]:
        """Run ``planned`` in one pipeline with ``run``; one envelope per planned statement.

        Under this run's lock, each mutating step carries the lock context (it checks the lock is this run's and
        journals itself). Lock statements ride along, their answers read here: first (``retake``) taking again a
        lock this run released early, then a pending journal note, and last, with ``release``, the release.
        ``stage``: the step this pipeline belongs to (a release with the bind may be retaken by a restart)."""
        retake = retake and not self.held and self._released_early
        if self.held or retake:
            context = lock_step.context(self.run_id)
            planned = [(step, {**data, lock_step.CONTEXT_KEY: context} if steps.get(step).mutating else data)
                       for step, data in planned]
        else:
            release = False
        head = [self._request("acquire")] if retake else []
        noted = self._note is not None and (self.held or retake)
        if noted:  # it happened before this pipeline's steps
            head.append(self._request("note", entry=self._note))
        tail = [self._request("release")] if release else []
        statements = [*(("lock", r) for r in head), *planned, *(("lock", r) for r in tail)]
        try:
            envelopes = run(statements)
        except ConnectionFailed as lost:
            if lost.kind in ANSWER_LOST_KINDS and any(step == "lock" and data["action"] == "acquire"
                                                      for step, data in statements):
                self._maybe_held = True
            # a note whose pipeline lost its answer may not have been written: it rides on the next pipeline too
            # (the release, on a new connection if need be); its id makes a second copy count once
            # (exbe.steps.lock.LockRecord)
            raise
        if noted:
            self._note = None
        for request, envelope in zip([*head, *tail], [*envelopes[:len(head)], *envelopes[len(envelopes) - len(tail):]],
                                     strict=True):
            self._tail_answered(request["action"], envelope, stage)
        return envelopes[len(head):len(envelopes) - len(tail)]

    def note_exchange_change(self, step: str, intent: str, replaced: str | None, new: str | None,
                             error: str | None) -> None:
        """A change made on the Exchange endpoint, which runs no scripts: its journal entry rides on the very next
        WinRM request, the Command of the next pipeline -- the next step's, or the release's when the run stops
        before that step (a cancel, a failure, the deadline) -- and again on the release when that pipeline lost
        its answer, so an interruption after the change still leaves its certificate named in the journal (the
        lock's first entry holds what LocalMachine\\My held before)."""
        if self.held:
            self._note = {"step": step, "phase": "end", "intent": intent, "ok": new is not None,
                          "changed": new is not None, "error": error, lock_step.NOTE_ID: uuid.uuid4().hex[:12],
                          "result": {"replaced": replaced, "new_thumbprint": new}}

    def release_at_end(self, run: RunPipeline, fresh_connection: Callable[[], None]) -> None:
        """At the end of the run: release a lock the last pipeline did not (a step stopped the chain, nothing was
        left to clean up, a connection failed, a cancel): one more pipeline, 2 requests (after a lost connection on
        a new pool: authentication and Create too). When even that fails, say how the admin removes it.

        A lock this run may hold without knowing it (the answer to its acquire was lost) is released the same way,
        on a fresh connection: the release carries this run's id, so it removes only a lock this run holds."""
        if self._maybe_held and not self.held:
            self._release_unknown(run, fresh_connection)
            return
        if not self.held:
            return
        for fresh in (False, True):  # a connection that failed is not used again: a new pool, once
            try:
                if fresh:
                    fresh_connection()
                self.pipeline(run, [], release=True)
                break
            except ConnectionFailed as exc:
                log.debug("%s: releasing the lock failed", self.server, exc_info=True)
                if fresh:
                    self._warn(f"exbe's lock could not be released ({exc})")
            except Exception as exc:  # noqa: BLE001 - the run's own outcome stands; the lock's fate is a warning
                log.debug("%s: releasing the lock failed", self.server, exc_info=True)
                self._warn(f"exbe's lock could not be released ({unexpected_message(exc)})")
                break
        if self.held:
            self._warn(f"exbe's lock of run {self.run_id} stays on {self.server} until it expires "
                       f"({lock_step.TTL_MINUTES} minutes after its last step); "
                       f"{unlock_command(self.server, self.run_id)} removes it")

    def beside(self, warn: Callable[[str], None]) -> ServerLock:
        """A copy of this hold for a release sent beside the step still running (a second signal): it knows whether
        the lock was released, and carries a journal note not yet answered."""
        own = ServerLock(self.server, self.run_id, self.task, taking=self.taking, warn=warn)
        own.released, own._note = self.released, self._note
        return own

    def release_abandoned(self, run: RunPipeline, stage: str) -> None:
        """exbe stopped waiting for this run's ``stage`` (a second signal): a lock it took, or may have taken, is
        released through ``run`` (a fresh connection, beside the running step) with this run's id; when that fails,
        the exact command that removes it is said."""
        if self.taking and not self.released:
            self._release_unknown(run, lambda: None, abandoned=stage)

    def _release_unknown(self, run: RunPipeline, fresh_connection: Callable[[], None], *,
                         abandoned: str | None = None) -> None:
        self._maybe_held = False
        why = (f"exbe stopped waiting for {abandoned}" if abandoned is not None
               else "the answer to exbe's lock request was lost")
        failure = ""
        note = [("lock", self._request("note", entry=self._note))] if self._note is not None else []
        try:
            fresh_connection()
            envelope = run([*note, ("lock", self._request("release"))])[-1]
        except ConnectionFailed as exc:
            failure = str(exc)
        except Exception as exc:  # noqa: BLE001 - the run's own outcome stands; the lock's fate is a warning
            failure = unexpected_message(exc)
        else:
            if envelope["ok"] and envelope["data"].get("released"):
                self._warn(f"{why}; the lock run {self.run_id} had taken was released on a new connection")
                return
            if envelope["ok"]:
                return  # no lock of this run's: the request never took it
            failure = str(envelope["error"])
        log.debug("%s: releasing a lock whose taking went unanswered failed: %s", self.server, failure)
        self._warn(f"{why} and releasing the lock failed ({failure}): the lock of run {self.run_id} may stay on "
                   f"{self.server} until it expires ({lock_step.TTL_MINUTES} minutes); "
                   f"{unlock_command(self.server, self.run_id)} removes it")

    # -- exbe unlock -------------------------------------------------------------------------------------------------
    def removal(self, run_id: str | None, force: bool) -> tuple[str, dict[str, Any]]:
        """`exbe unlock`'s statement: remove the lock when it is run ``run_id``'s (``--run``), expired, or with
        ``force`` (``--yes``) whatever holds it."""
        return "lock", self._request("remove", run_id=run_id or "", force=force)

    def removed(self, envelope: dict[str, Any]) -> StepResult:
        """`exbe unlock`'s result; the removed record stays as last-run.json, so the next run reports it."""
        if not envelope["ok"]:
            return self._failed(f"exbe's lock could not be read or removed: {envelope['error']}", step="unlock")
        found = lock_step.LockFacts.parse(envelope["data"])
        if found.removed is not None:
            return StepResult(server=self.server, step="unlock", status="changed", changed=True,
                              message=f"removed the lock of {found.removed.holder()}; its last step: "
                                      f"{found.removed.last_step()}", data=envelope["data"])
        if found.held is None:
            return StepResult(server=self.server, step="unlock", status="ok",
                              message="no exbe run holds the lock on this server", data=envelope["data"])
        return self._failed(f"not removed: locked by {found.held.holder()}; last step {found.held.last_step()}. "
                            f"{unlock_command(self.server, found.held.run_id)} removes that run's lock "
                            "(or --yes, whatever holds it)", step="unlock")

    # -- inside ------------------------------------------------------------------------------------------------------
    def _request(self, action: str, *, run_id: str | None = None, force: bool = False,
                 entry: dict[str, Any] | None = None) -> dict[str, Any]:
        return lock_step.request(action, self.run_id if run_id is None else run_id, agent_name(), self.task,
                                 force=force, entry=entry)

    def _failed(self, message: str, *, step: str = "lock", warnings: list[str] | None = None) -> StepResult:
        return StepResult(server=self.server, step=step, status="failed", message=message, warnings=warnings or [])

    def _tail_answered(self, action: str, envelope: dict[str, Any], stage: str) -> None:
        """A lock statement that rode on a pipeline: a lock no longer this run's stops carrying the context."""
        refused = envelope["data"].get("refused") if envelope["ok"] else None
        if envelope["ok"] and action == "release" and envelope["data"].get("released"):
            self.held = False
            self.released = True
            self._released_early = stage == "bind"
            return
        if action == "acquire":
            self._maybe_held = False
            self.held = bool(envelope["ok"] and envelope["data"].get("acquired"))
            if not self.held:
                held = lock_step.LockFacts.parse(envelope["data"]).held if envelope["ok"] else None
                self._warn("exbe's lock could not be taken again for the restart: "
                           + (f"locked by {held.holder()}" if held else str(envelope["error"])))
            return
        if refused:
            self.held = False
            self._warn(f"exbe's lock was no longer this run's ({refused})")
            return
        if not envelope["ok"]:
            self._warn(f"exbe's lock: the {action} failed: {envelope['error']}")

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
from collections.abc import Callable
from typing import Any

from . import steps
from .errors import ConnectionFailed
from .facts import iso
from .fleet import unexpected_message
from .model import StepResult
from .steps import lock as lock_step

log = logging.getLogger("exbe.lock")

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

    # -- the first pipeline ------------------------------------------------------------------------------------------
    def first_statement(self) -> tuple[str, dict[str, Any]]:
        """The first pipeline's first statement: a changing run takes the lock, others only look at it."""
        return "lock", self._request("acquire" if self.taking else "show")

    def first_answered(self, envelope: dict[str, Any]) -> tuple[StepResult | None, list[str] | None]:
        """The first statement's answer: the ``lock`` step to record (taken, or refused), and the warnings for the
        run's first step, None when this server must stop here (locked by another run, or the lock could not be
        taken). A run that took the lock reports the interrupted run it found first."""
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
                notes.append(f"locked by {found.held.holder()}: another exbe run is changing this server")
            return None, notes
        if not found.acquired:
            held = found.held
            return self._failed(f"locked by {held.holder() if held else 'another run'}: nothing was changed on this "
                                "server; wait for that run, or remove its lock with "
                                f"`exbe unlock --server {self.server}` once it is gone", warnings=notes), None
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
        if self._note is not None and (self.held or retake):  # it happened before this pipeline's steps
            head.append(self._request("note", entry=self._note))
            self._note = None
        tail = [self._request("release")] if release else []
        envelopes = run([*(("lock", r) for r in head), *planned, *(("lock", r) for r in tail)])
        for request, envelope in zip([*head, *tail], [*envelopes[:len(head)], *envelopes[len(envelopes) - len(tail):]],
                                     strict=True):
            self._tail_answered(request["action"], envelope, stage)
        return envelopes[len(head):len(envelopes) - len(tail)]

    def note_exchange_change(self, step: str, intent: str, replaced: str | None, new: str | None,
                             error: str | None) -> None:
        """A change made on the Exchange endpoint, which runs no scripts: its journal entry rides on the next WinRM
        pipeline (the lock's first entry holds what LocalMachine\\My held before)."""
        if self.held:
            self._note = {"step": step, "phase": "end", "intent": intent, "ok": new is not None,
                          "changed": new is not None, "error": error,
                          "result": {"replaced": replaced, "new_thumbprint": new}}

    def release_at_end(self, run: RunPipeline, fresh_connection: Callable[[], None]) -> None:
        """At the end of the run: release a lock the last pipeline did not (a step stopped the chain, nothing was
        left to clean up, a connection failed, a cancel): one more pipeline, 2 requests (after a lost connection on
        a new pool: authentication and Create too). When even that fails, say how the admin removes it."""
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
                       f"({lock_step.TTL_MINUTES} minutes after its last step); `exbe unlock --server {self.server} "
                       f"--run {self.run_id}` removes it")

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
                            f"`exbe unlock --server {self.server} --run {found.held.run_id}` removes that run's lock "
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
            self._released_early = stage == "bind"
            return
        if action == "acquire":
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

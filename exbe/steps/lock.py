"""``lock``: exbe's lock on the server itself, with the journal of the run that holds it.

Where and how (``ps_templates/_lock.ps1.j2``): one file, ``%ProgramData%\\exbe\\lock.json``, created with
``[System.IO.File]::Open(path, CreateNew, ReadWrite, None)``. ``CreateNew`` is CreateFile's ``CREATE_NEW``: the
existence test and the creation are one operation of the file system, so of two runs creating it at once exactly one
succeeds and the other gets ``ERROR_FILE_EXISTS``. A registry key would not do: ``New-Item`` on ``HKLM:`` tests then
creates, and .NET's ``CreateSubKey`` does not say whether the key was new. Every later read or write of the record
opens it with ``FileShare.None`` (another exbe script that tries at that moment gets a sharing violation and waits),
so the check "this record is my run's" and the write after it cannot interleave with another run's.

The record holds the run id, the agent's host name, the task, the start and expiry times (server clock: every
comparison is made on the server, so agents' clocks never matter) and the journal. Each mutating step script of the
run checks that the record still names its run before it changes anything (else it refuses: nothing changed), writes
a ``begin`` entry (its intent and the state it replaces) and after the change an ``end`` entry (its result), and moves
the expiry on by :data:`TTL_MINUTES`. A run that holds the lock releases it in its last pipeline: the record, with
``ended``, becomes ``%ProgramData%\\exbe\\last-run.json`` and ``lock.json`` is deleted. ``exbe unlock`` does the same
with ``ended.how = "removed"``. A record that is older than its expiry is taken over by the next run, which keeps it
in its own record (``took_over``). So the journal of an interrupted run is either an expired ``lock.json``, or a
``last-run.json`` that was removed by ``exbe unlock`` rather than released: the next run reports it first.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Mapping
from typing import Any

from ..facts import iso, parse_time
from ..quoting import unlock_command

NAME = "lock"
SUMMARY = "take, release, show or remove exbe's lock on the server, with its journal (%ProgramData%\\exbe\\lock.json)"
#: Bookkeeping, never rehearsed: a dry run does not lock, so this step takes no -WhatIf (read-only tasks use "show").
MUTATING = False
#: How long a lock lives after the run's last step wrote to it: every mutating step moves the expiry on, so a live
#: run's lock never expires; the longest gap between two steps of one run is a restart (iisreset's wait, then one
#: start attempt per service: well under 10 minutes). A killed run blocks the server until then, or `exbe unlock`.
TTL_MINUTES = 30
ACTIONS = ("acquire", "release", "show", "remove", "note")
INPUTS = {"action": (str,), "run_id": (str,), "agent": (str,), "task": (str,), "ttl_minutes": (int,),
          "force": (bool,), "entry": (dict, type(None))}
CHOICES = {"action": ACTIONS}
#: ``held``: lock.json as it was found (null: no lock); ``last_run``: last-run.json (null: none); ``acquired``: this
#: run holds the lock now; ``took_over``: the expired record it replaced; ``released``/``removed``: the record that
#: this call moved to last-run.json; ``refused``: why a release, removal or note did nothing.
RESULT = {"action": (str,), "now": (str,), "held": (dict, type(None)), "last_run": (dict, type(None)),
          "acquired": (bool,), "took_over": (dict, type(None)), "released": (bool,), "removed": (dict, type(None)),
          "refused": (str, type(None))}
#: The key a mutating step's input carries when it runs under the lock (exbe.steps.Step.check_input accepts it),
#: and what it holds (:func:`context`).
CONTEXT_KEY = "lock"
CONTEXT = {"run_id": (str,), "ttl_minutes": (int,)}
#: The journal entries whose result names a certificate made to replace the back-end one (``new_thumbprint``): the
#: Exchange endpoint's renewal (a note) and the clone.
REPLACING_STEPS = ("renew", "clone")
#: The key of a note's id (exbe.lock.ServerLock.note_exchange_change): a note sent again after its pipeline lost
#: its answer may be in the journal twice; the reader keeps its first copy, where it happened.
NOTE_ID = "note_id"


def request(action: str, run_id: str, agent: str, task: str, *, force: bool = False,
            entry: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The lock step's input."""
    return {"action": action, "run_id": run_id, "agent": agent, "task": task, "ttl_minutes": TTL_MINUTES,
            "force": force, "entry": dict(entry) if entry is not None else None}


def context(run_id: str) -> dict[str, Any]:
    """What a mutating step's input carries under :data:`CONTEXT_KEY`: whose lock it must find, how far to move the
    expiry."""
    return {"run_id": run_id, "ttl_minutes": TTL_MINUTES}


@dataclasses.dataclass(frozen=True)
class LockRecord:
    """lock.json or last-run.json, parsed. ``unreadable``: the file exists but holds no record (a writer killed
    between creating and writing it); its expiry is then the file's write time plus the TTL."""

    run_id: str | None
    agent: str
    task: str
    started_at: datetime.datetime | None
    expires_at: datetime.datetime | None
    journal: tuple[Mapping[str, Any], ...]
    ended: Mapping[str, Any] | None
    took_over: Mapping[str, Any] | None
    unreadable: str | None = None

    @classmethod
    def parse(cls, data: Mapping[str, Any] | None) -> LockRecord | None:
        if not data:
            return None
        return cls(run_id=data.get("run_id") or None, agent=str(data.get("agent") or "an unknown agent"),
                   task=str(data.get("task") or "an unknown task"), started_at=_time(data.get("started_at")),
                   expires_at=_time(data.get("expires_at")),
                   journal=_once(e for e in data.get("journal") or [] if isinstance(e, Mapping)),
                   ended=data.get("ended") if isinstance(data.get("ended"), Mapping) else None,
                   took_over=data.get("took_over") if isinstance(data.get("took_over"), Mapping) else None,
                   unreadable=data.get("unreadable") or None)

    def holder(self) -> str:
        """``run R (renew) from agent A since T; expires at E``: who holds it, as an admin reads it."""
        if self.unreadable:
            return (f"an unreadable lock record ({self.unreadable}); expires at {_at(self.expires_at)}")
        return (f"run {self.run_id} ({self.task}) from agent {self.agent} since {_at(self.started_at)}; expires at "
                f"{_at(self.expires_at)}")

    def held_by_another(self, server: str) -> str:
        """A lock another run holds and that has not expired, as what it may be: that run at work, or one that died
        without releasing it (one read cannot tell them apart: a live run moves the expiry on at each step)."""
        unlock = unlock_command(server, self.run_id) if self.run_id else unlock_command(server, any_lock=True)
        return (f"locked by {self.holder()}: another exbe run is changing this server, or it stopped without "
                f"releasing its lock; if that run is gone, {unlock} removes it (or wait for its expiry)")

    def expired(self, now: datetime.datetime) -> bool:
        return self.expires_at is None or self.expires_at <= now

    def last_step(self) -> str:
        """The journal's last word: ``bind (begun at T, no result: ...)``, ``trust (ended changed)``, or that no step
        began."""
        steps = [e for e in self.journal if e.get("step") != NAME]
        if not steps:
            return "no step begun after taking the lock"
        last = steps[-1]
        if last.get("phase") == "begin":
            return f"{last.get('step')} (begun at {last.get('at')}, no result: {last.get('intent')})"
        outcome = "failed: " + str(last.get("error")) if not last.get("ok") else (
            "changed" if last.get("changed") else "no change")
        return f"{last.get('step')} (ended {outcome})"

    def unfinished(self, step: str) -> Mapping[str, Any] | None:
        """The ``begin`` entry of ``step`` when it is the journal's last word (the run stopped inside it)."""
        steps = [e for e in self.journal if e.get("step") != NAME]
        if steps and steps[-1].get("step") == step and steps[-1].get("phase") == "begin":
            return steps[-1]
        return None

    def my_before(self) -> set[str]:
        """The thumbprints LocalMachine\\My held when the lock was taken (the acquire entry records them)."""
        for entry in self.journal:
            if entry.get("step") == NAME and entry.get("phase") == "begin":
                return {str(t).upper() for t in (entry.get("replaces") or {}).get("my") or []}
        return set()


@dataclasses.dataclass(frozen=True)
class LockFacts:
    """What the lock step found on the server: the held lock, the last run's record, what this call did."""

    now: datetime.datetime
    held: LockRecord | None
    last_run: LockRecord | None
    acquired: bool
    took_over: LockRecord | None
    released: bool
    removed: LockRecord | None
    refused: str | None

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> LockFacts:
        return cls(now=parse_time(str(data["now"])), held=LockRecord.parse(data.get("held")),
                   last_run=LockRecord.parse(data.get("last_run")), acquired=bool(data.get("acquired")),
                   took_over=LockRecord.parse(data.get("took_over")), released=bool(data.get("released")),
                   removed=LockRecord.parse(data.get("removed")), refused=data.get("refused") or None)

    def replacement(self, my_now: set[str]) -> tuple[str, str] | None:
        """The certificate the last run made to replace the back-end certificate, and in words who made it: what
        its journal recorded (a renewal's or a clone's result), else, for a run that stopped without recording one,
        the one certificate LocalMachine\\My gained after it took the lock. None when there is no such run or
        certificate. Selection prefers it when 444 names none (:func:`exbe.selection.select_backend`)."""
        record = self.took_over or (self.held if self.held is not None and not self.acquired else None) \
            or self.last_run
        if record is None or record.unreadable:
            return None
        who = f"run {record.run_id} ({record.task}) from agent {record.agent}"
        for entry in reversed(record.journal):
            result = entry.get("result") if isinstance(entry.get("result"), Mapping) else {}
            if entry.get("step") in REPLACING_STEPS and entry.get("phase") == "end" and entry.get("ok") \
                    and result.get("new_thumbprint"):
                return str(result["new_thumbprint"]).upper(), f"made by {who} to replace the back-end certificate"
        created = leftovers(record, my_now, set())
        if len(created) == 1 and (record.ended or {}).get("how") != "released":
            return created[0], f"created after {who} took the lock, which stopped before recording its renewal"
        return None

    def interrupted(self) -> LockRecord | None:
        """The journal of a run that did not end by releasing its lock, and that no run has followed since: the
        expired record this call took over or still finds, or a last run whose lock was removed by `exbe unlock`."""
        if self.took_over is not None:
            return self.took_over
        if self.held is not None and self.held.expired(self.now) and not self.acquired:
            return self.held
        if (self.held is None or self.acquired) and self.last_run is not None \
                and (self.last_run.ended or {}).get("how") != "released":
            return self.last_run
        return None


def interrupted_message(record: LockRecord) -> str:
    """The warning a run gives first when it finds an interrupted run's journal."""
    if record.unreadable:
        return f"an interrupted exbe run left {record.holder()}"
    return (f"an interrupted exbe run was found: run {record.run_id} ({record.task}) from agent {record.agent} since "
            f"{_at(record.started_at)}, last step {record.last_step()}")


def leftovers(record: LockRecord, my_now: set[str], bound: set[str]) -> list[str]:
    """Certificates in My now that were not there when the interrupted run took the lock and that nothing binds."""
    before = record.my_before()
    if not before:
        return []
    return sorted(my_now - before - bound)


def describe(data: Mapping[str, Any], changed: bool, dry_run: bool) -> str:
    facts = LockFacts.parse(data)
    action = data.get("action")
    if facts.refused:
        return f"{action}: {facts.refused}"
    if action == "acquire":
        if facts.acquired:
            mine = facts.held
            return f"took the lock for run {mine.run_id} until {_at(mine.expires_at)}" if mine else "took the lock"
        return f"locked by {facts.held.holder()}" if facts.held else "the lock was not taken"
    if action == "release":
        return "released the lock" if facts.released else "the lock was not held"
    if action == "remove":
        return f"removed the lock of {facts.removed.holder()}" if facts.removed else "no lock to remove"
    if action == "note":
        return "journal entry written"
    return f"locked by {facts.held.holder()}" if facts.held else "no exbe run holds the lock"


def _once(entries: Iterable[Mapping[str, Any]]) -> tuple[Mapping[str, Any], ...]:
    """The journal with each note once (:data:`NOTE_ID`): its first copy, in its place."""
    seen: set[str] = set()
    kept = []
    for entry in entries:
        note = entry.get(NOTE_ID)
        if isinstance(note, str) and note:
            if note in seen:
                continue
            seen.add(note)
        kept.append(entry)
    return tuple(kept)


def _time(value: Any) -> datetime.datetime | None:
    try:
        return parse_time(str(value)) if value else None
    except ValueError:
        return None


def _at(moment: datetime.datetime | None) -> str:
    return iso(moment) if moment else "an unknown time"

"""The runbook: preflight -> renew -> trust -> bind -> (restart) -> verify -> (cleanup), per server, over one session.

Round trips are the cost, so steps that need no decision in between share a pipeline: trust, bind and the
post-change facts read go to WinRM as three statements of one pipeline. Preflight reads both endpoints at once.
A changing task takes the server's lock (:mod:`exbe.steps.lock`) as the first statement of preflight's pipeline and
releases it as the last statement of its last change's pipeline; its mutating steps journal themselves in it.

One server's trouble stays that server's: any exception in its work (a lost connection, an error raised inside pypsrp,
a bug) ends that server's run with a failed step naming it, and the fleet goes on; :func:`run_fleet` returns a
:class:`ServerRun` for every server. The renew chain's ``--restart-iis`` restarts only when needed
(:func:`exbe.steps.restart.needed`), else the restart step is recorded as skipped. A cancel (:class:`Cancel`: SIGINT or
SIGTERM) starts no further server or step; each running server stops before its next one.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import checks, contract, exchange, plan, steps
from .errors import ConfigError, ConnectionFailed
from .facts import Certificate, ExchangeFacts, HostFacts, iso
from .model import CheckResult, ServerRun, Settings, StepResult, StepStatus
from .probe import probe_backend
from .render import render_step
from .selection import (
    BACKEND_LABEL,
    SelectionError,
    assignments_unknown,
    backend_binding,
    exchange_blinded,
    loopback_binding,
    select_backend,
)
from .steps import bind as bind_step
from .steps import cleanup as cleanup_step
from .steps import clone as clone_step
from .steps import facts as facts_step
from .steps import lock as lock_step
from .steps import restart as restart_step
from .steps import trust as trust_step
from .transport import Session, preload

if TYPE_CHECKING:
    from .config import Credentials, Server

TASKS = ("preflight", "renew", "trust", "bind", "restart", "verify", "cleanup", "unlock")
#: Tasks that change a server: they take its lock in their first pipeline, before the facts are read (not dry runs).
LOCKING_TASKS = ("renew", "trust", "bind", "restart", "cleanup")
METHODS = {"exchange": "New-ExchangeCertificate -Services None on the Exchange endpoint",
           "clone": "New-SelfSignedCertificate -CloneCert with a legacy CSP over WinRM"}
EXCHANGE_DOWN_KINDS = {"unreachable", "unavailable", "winrm_not_enabled", "auth", "no_credentials", "timeout",
                       "protocol", "dropped"}

log = logging.getLogger("exbe.flow")


class Cancel:
    """A request to stop the run, from SIGINT/SIGTERM (:func:`exbe.cli.run_task`). Once :meth:`request` ed, no server
    starts, and each running server stops before its next step (:meth:`ServerFlow._begin`): threads are never killed,
    so every step either runs whole or not at all and each server's flow ends as it always does, releasing what it
    holds. :func:`run_fleet` waits for the running steps at most ``grace_s`` after the request, or until
    :meth:`abandon` (a second signal); then it stops waiting and reports those servers with their outcome unknown."""

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


Progress = Callable[[str, str, str, str], None]  # server, step, status, message


class ServerFlow:
    """One server's run of a task: every step answers with one StepResult appended to ``self.run``."""

    def __init__(self, server: Server, credentials: Credentials, settings: Settings, options: RunOptions,
                 progress: Progress,
                 restart_gate: threading.Lock) -> None:
        self.server = server
        self.settings = settings
        self.options = options
        self.progress = progress
        self.restart_gate = restart_gate
        self.session = Session(server, credentials)
        self.run = new_run(server)
        self.facts: HostFacts | None = None
        self.exchange: ExchangeFacts | None = None
        self.exchange_reason = ""
        self.credentials_refused = False  # the server refused the logon (lockout safety, run_fleet)
        self.selected: Certificate | None = None
        self.stage = "connect"  # the step under way: an unexpected exception fails this one
        self.task = "preflight"
        self.lock: lock_step.LockFacts | None = None  # what the first pipeline found of exbe's lock (verify's check)
        self.lock_held = False  # this run holds the server's lock: mutating steps carry its context, a release ends it
        self.lock_note: dict[str, Any] | None = None  # a journal entry for the next pipeline (a change without script)
        self.lock_released_early = False  # released with the bind, as no restart was expected: a restart retakes it

    # -- entry -------------------------------------------------------------------------------------------------------
    def execute(self, task: str) -> ServerRun:
        started = time.monotonic()
        self.task = task
        try:
            with self.session:
                try:
                    self._execute(task)
                finally:
                    self._release_lock()
        except Cancelled as stop:
            mark_cancelled(self.run, stop.stage, self.options.cancel.reason)
        except ConnectionFailed as exc:
            self.run.error = str(exc)
            self.run.error_kind = exc.kind
            self.credentials_refused = exc.kind == "auth"
            self._record(StepResult(server=self.server.name, step="connect", status="failed", message=str(exc)))
        except Exception as exc:  # noqa: BLE001 - one server's bug or library error never ends the fleet's run
            log.debug("%s: %s failed unexpectedly", self.server.name, self.stage, exc_info=True)
            fail_unexpectedly(self.run, self.stage, exc, self.progress)
        finally:
            self.run.duration_s = round(time.monotonic() - started, 3)
        return self.run

    def _execute(self, task: str) -> None:
        if task == "unlock":
            self.unlock()
            return
        if not self.preflight():
            return
        if task == "preflight":
            return
        if task == "verify":
            self.verify(reuse_facts=True)
            return
        if self.selected is None and task in ("trust", "bind", "cleanup") and not self.options.thumbprint:
            self._fail(task, "no back-end certificate to act on; run `exbe renew` first", 0.0)
            return
        if task == "trust":
            self.trust_and_bind(self._target_thumbprint(), trust=True, bind=False)
            return
        if task == "bind":
            self.trust_and_bind(self._target_thumbprint(), trust=False, bind=True)
            return
        if task == "restart":
            self.restart("asked for (exbe restart)")  # the admin asked for it: always
            return
        if task == "cleanup":
            if self.verify(reuse_facts=True):
                self.cleanup()
            return
        # renew: the whole chain
        new = self.renew()
        if new is None:
            return
        if not self.trust_and_bind(new, trust=self.settings.trust, bind=True):
            return
        restarted = False
        if self.settings.restart_iis or self.options.restart_always:
            outcome = self.restart_when_needed()
            if outcome is False:
                return
            restarted = outcome is True
        if restarted and self.exchange is None:
            self._read_exchange()  # its endpoint is an IIS application: down at preflight, perhaps up again now
        passed = self.verify(reuse_facts=not restarted)
        if self.options.cleanup and passed:
            self.cleanup(switched=self.run.new_thumbprint not in (None, self.run.old_thumbprint))

    # -- steps -------------------------------------------------------------------------------------------------------
    def preflight(self) -> bool:
        """Both endpoints at once; the certificate store is the source of truth, Exchange adds assignments."""
        self._begin("preflight")
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"exbe-{self.server.name}-exchange") as side:
            exchange_read = side.submit(self._read_exchange)
            # the lock first: a changing task reads the facts it decides with under its lock (same round trip)
            lock_answer, envelope = self._scripts([("lock", self._lock_request(self._first_lock_action())),
                                                   ("facts", facts_step.plan(self.settings))])
            # before the Exchange read's failure can end the run: a lock taken here is this run's to release
            lock_warnings = self._lock_answered(lock_answer)
            exchange_read.result()  # a connection failure there (e.g. TLS validation) is the run's failure too
        duration = time.monotonic() - started
        if lock_warnings is None:
            return False
        if not envelope["ok"]:
            return self._fail("preflight", f"reading the certificate store and IIS failed: {envelope['error']}",
                              duration)
        self.facts = HostFacts.parse(envelope["data"])
        warnings = [*lock_warnings, *envelope["warnings"], *self._exchange_warnings()]
        try:
            selection = select_backend(self.facts, self.settings)
        except SelectionError as exc:
            if exc.candidates:  # several possible back-end certificates and none bound: a human must choose
                return self._fail("preflight", str(exc), duration, warnings=warnings)
            # No back-end certificate at all (KB 2779694): renew creates one; the other tasks have nothing to act on.
            warnings.append(f"{exc}; `exbe renew` creates a new one (Microsoft's repair, KB 2779694)")
            self.selected = None
            self._record(StepResult(server=self.server.name, step="preflight", status="ok",
                                    message=f"no back-end certificate in LocalMachine\\My ({exc.found})",
                                    data={"selected": None, **self._read_data(lock_answer)}, warnings=warnings,
                                    duration_s=round(duration, 3)))
            return True
        self.selected = self.facts.certificate(selection.thumbprint)
        self.run.old_thumbprint = selection.thumbprint
        self._record(StepResult(
            server=self.server.name, step="preflight", status="ok", message=selection.reason,
            data={"selected": selection.thumbprint, **self._read_data(lock_answer)},
            warnings=warnings, duration_s=round(duration, 3)))
        return True

    def _read_data(self, lock_answer: dict[str, Any]) -> dict[str, Any]:
        """What preflight read, for the run record and `exbe status`: Exchange's view, the facts, exbe's lock."""
        return {"exchange": self.exchange.to_dict() if self.exchange else None,
                "facts": dict(self._facts().document), "lock": lock_answer["data"] if lock_answer["ok"] else None}

    def renew(self) -> str | None:
        """The thumbprint the chain goes on with: the selected one, a staged one, or a new one; None to stop."""
        self._begin("renew")
        started = time.monotonic()
        facts = self._facts()
        blockers = bind_step.blockers(facts)
        if blockers:
            self._fail("renew", "; ".join(blockers), 0.0)
            return None
        if self.selected is None:  # nothing in My to renew: Microsoft's repair creates one (KB 2779694)
            thumb, reasons, method = None, ["no back-end certificate in LocalMachine\\My"], "exchange"
            blinded = exchange_blinded(facts, self.exchange)
            if self.exchange is None or blinded:
                return self._renew_failed(
                    "there is no back-end certificate to clone and the Exchange endpoint cannot create one "
                    f"({self.exchange_reason or blinded}); run `exbe render renew` and the script in the Exchange "
                    "Management Shell", started)
        else:
            thumb = self.selected.thumbprint
            reasons = plan.renew_reasons(self.selected, facts, self.settings)
            if not reasons:
                days = facts.days_left(self.selected)
                return self._keep(thumb, f"not needed: {thumb} has {days} days left (threshold {self.settings.days})",
                                  {}, started)
            staged = plan.staged_replacement(facts, self.selected, self.settings)
            if staged:
                return self._keep(staged, f"reusing staged certificate {staged} ({'; '.join(reasons)})",
                                  {"reasons": reasons, "staged": staged}, started)
            method = plan.renew_method(facts, self.exchange)
        how = METHODS[method]
        what = f"renew {thumb}" if thumb else "create one"
        if self.settings.dry_run:
            if method == "clone" and self.selected is not None:
                # the clone script honours -WhatIf: the server itself checks what it would clone
                rehearsal = self._scripts([("clone", clone_step.plan(self.selected, dry_run=True))])[0]
                if not rehearsal["ok"]:
                    return self._renew_failed(f"cloning {thumb} would fail: {rehearsal['error']}", started)
            self._record(StepResult(server=self.server.name, step="renew", status="changed", changed=True,
                                    message=f"would {what} ({'; '.join(reasons)}) with {how}",
                                    data={"reasons": reasons, "method": method}, duration_s=0.0))
            self._plan_rest_of_chain()
            self.verify(reuse_facts=True)  # today's findings, those the plan fixes marked so (no round trip)
            return None
        warnings: list[str] = []
        try:
            if method == "exchange":
                new, data = self._create_with_exchange(reasons)
                self._note_exchange_change("renew", f"renew {thumb or 'nothing'} with {how}", thumb, new,
                                           data.get("error"))
                if new is None:
                    return self._renew_failed(data["error"], started)
            else:
                assert self.selected is not None and thumb is not None
                envelope = self._scripts([("clone", clone_step.plan(self.selected, dry_run=False))])[0]
                new = envelope["data"].get("new_thumbprint") if envelope["ok"] else None
                if new is None:
                    return self._renew_failed(f"cloning {thumb} failed: {envelope['error']}", started)
                data = {"reasons": reasons, "method": method, **envelope["data"]}
        except ConnectionFailed as lost:
            return self._renew_failed(self._after_lost_creation(lost), started)
        if self.settings.smtp == "move":
            unknown = self._assignments_unknown()
            if unknown:
                warnings.append(f"SMTP not moved: the service assignments are unknown ({unknown})")
            else:
                errors = self._move_smtp(new)
                if errors:
                    return self._renew_failed(f"moving SMTP to {new} failed: {'; '.join(errors)}", started)
        self.run.new_thumbprint = new
        done = f"renewed {thumb} -> {new}" if thumb else f"created {new}"
        self._record(StepResult(server=self.server.name, step="renew", status="changed", changed=True,
                                message=f"{done} with {how} ({'; '.join(reasons)})",
                                before={"thumbprint": thumb}, after={"thumbprint": new}, data=data,
                                warnings=warnings, duration_s=round(time.monotonic() - started, 3)))
        return new

    def _keep(self, thumb: str, message: str, data: dict[str, Any], started: float) -> str | None:
        """No new certificate: the chain goes on with ``thumb``. With ``--smtp move``, SMTP moves to it now when it
        is elsewhere (the advice of internal_transport_cert, which a renewal-only move would never follow): a
        change, journaled and counted like one."""
        warnings, smtp_from, error = self._smtp_to(thumb)
        if error:
            return self._renew_failed(f"{message}; moving SMTP to {thumb} failed: {error}", started)
        changed = smtp_from is not None
        if changed:
            verb = "would move" if self.settings.dry_run else "moved"
            message = f"{message}; {verb} SMTP to {thumb} (from {smtp_from or 'none'})"
        self._record(StepResult(server=self.server.name, step="renew", status="changed" if changed else "ok",
                                changed=changed, message=message, data=data, warnings=warnings,
                                before={"smtp": smtp_from} if changed else {},
                                after={"smtp": thumb} if changed else {},
                                duration_s=round(time.monotonic() - started, 3)))
        self.run.new_thumbprint = thumb
        return thumb

    def _smtp_to(self, thumb: str) -> tuple[list[str], str | None, str | None]:
        """``--smtp move`` onto a certificate that is not new: (warnings, where SMTP was when it moves -- "" for
        nowhere -- else None, the error when the move failed)."""
        if self.settings.smtp != "move":
            return [], None, None
        unknown = self._assignments_unknown()
        if unknown:
            return [f"SMTP not moved: the service assignments are unknown ({unknown})"], None, None
        assert self.exchange is not None
        current = self.exchange.internal_transport
        if current == thumb:
            return [], None, None
        if self.settings.dry_run:
            return [], current or "", None
        errors = self._move_smtp(thumb)
        self._note_exchange_change("renew", f"move SMTP to {thumb} (--smtp move)", current, None if errors else thumb,
                                   "; ".join(errors) or None)
        return [], current or "", "; ".join(errors) or None

    def trust_and_bind(self, thumbprint: str, *, trust: bool, bind: bool) -> bool:
        """Trust and bind in one pipeline, followed by a fresh facts read for verify."""
        self._begin("bind" if bind else "trust")
        started = time.monotonic()
        facts = self._facts()
        if bind:
            blockers = bind_step.blockers(facts)
            if blockers:
                return self._fail("bind", "; ".join(blockers), 0.0)
        scripts: list[tuple[str, dict[str, Any]]] = []
        if trust:
            scripts.append(("trust", trust_step.plan(thumbprint, dry_run=self.settings.dry_run)))
        if bind:
            scripts.append(("bind", self._finish_interrupted_bind(facts, bind_step.plan(facts, thumbprint,
                                                                                      self.settings))))
        scripts.append(("facts", facts_step.plan(self.settings)))
        envelopes = self._scripts(scripts, release=self._last_change("bind", scripts))
        duration = round(time.monotonic() - started, 3)
        ok = True
        for envelope in envelopes[:-1]:
            self._record(StepResult.from_envelope(self.server.name, envelope, duration))
            ok = ok and envelope["ok"]
        if envelopes[-1]["ok"]:
            self.facts = HostFacts.parse(envelopes[-1]["data"])
            if ok and not self.settings.dry_run:
                left = bind_step.unconverged(self.facts, thumbprint, self.settings, trust=trust, bind=bind)
                if left:
                    return self._fail("bind" if bind else "trust", f"the steps reported success but re-reading the "
                                      f"server shows {'; '.join(left)}", 0.0)
        return ok

    def restart_when_needed(self) -> bool | None:
        """The renew chain's ``--restart-iis``: restart when this run changed a binding or W3SVC/WAS are not running
        (or when forced), else record the step as skipped. None when skipped, else whether the restart succeeded."""
        self._begin("restart")
        bind_changed = any(step.step == "bind" and step.changed for step in self.run.steps)
        reason = restart_step.needed(self._facts(), bind_changed=bind_changed)
        if self.options.restart_always:
            reason = "forced (--restart-iis=always)" + (f"; {reason}" if reason else "")
        if reason is None:
            self._record(StepResult(server=self.server.name, step="restart", status="skipped",
                                    message=restart_step.NOT_NEEDED))
            return None
        return self.restart(reason)

    def restart(self, reason: str) -> bool:
        """iisreset, one server of the fleet at a time, waiting for W3SVC, then one start attempt for W3SVC/WAS if
        they stayed stopped. It ends the Exchange endpoint's pools: the next Exchange call opens a new one."""
        started = time.monotonic()
        with self.restart_gate:  # a cancel that came while waiting for the gate stops the restart before it starts
            self._begin("restart")
            envelope = self._scripts([("restart", restart_step.plan(dry_run=self.settings.dry_run))],
                                     release=self._last_change("restart"), retake=True)[0]
        if not self.settings.dry_run:
            self.session.discard("exchange")
        result = StepResult.from_envelope(self.server.name, envelope, time.monotonic() - started)
        result.data["reason"] = reason
        if result.status != "failed":
            result.message = f"{result.message} ({reason})"
        self._record(result)
        return bool(envelope["ok"])

    def verify(self, *, reuse_facts: bool) -> bool:
        self._begin("verify")
        started = time.monotonic()
        if not reuse_facts or self.facts is None:
            envelope = self._scripts([("facts", facts_step.plan(self.settings))])[0]
            if not envelope["ok"]:
                return self._fail("verify", f"reading the certificate store and IIS failed: {envelope['error']}", 0.0)
            self.facts = HostFacts.parse(envelope["data"])
        probe = probe_backend(self.server.host, self.server.backend_port, timeout=self.server.connect_timeout)
        results = checks.run_checks(self.facts, self.exchange, probe, self.settings, lock=self.lock)
        fixed: dict[str, str] = {}
        if self.settings.dry_run:
            results, fixed = planned_fixes(results, [s.step for s in self.run.steps if s.status == "changed"],
                                           self.settings)
        failed = [c for c in results if c.status == "fail"]
        warned = [c for c in results if c.status == "warn"]
        status: StepStatus = "failed" if failed else "ok"
        message = (f"{len(failed)} check(s) failed: {', '.join(c.id for c in failed)}" if failed
                   else f"{len(results)} checks, {len(warned)} warning(s)")
        if fixed:
            message += f", {len(fixed)} finding(s) the plan fixes"
        self._record(StepResult(server=self.server.name, step="verify", status=status, message=message,
                                checks=results, data={"would_fix": fixed} if fixed else {},
                                duration_s=round(time.monotonic() - started, 3)))
        return not failed

    def cleanup(self, *, switched: bool = False) -> bool:
        """Remove superseded certificates; ``switched``: this run bound a new one (its predecessors wait)."""
        self._begin("cleanup")
        facts = self._facts()
        if self.exchange is not None and switched:
            self._read_exchange()  # this run created a certificate: the assignments as they are now
        cleanup_plan = cleanup_step.plan(facts, self.exchange, self.settings,
                                               switched_at=facts.now if switched else None)
        if cleanup_plan.refused:
            return self._fail("cleanup", cleanup_plan.refused, 0.0)
        if cleanup_plan.waiting:
            self._record(StepResult(server=self.server.name, step="cleanup", status="skipped",
                                    message=cleanup_plan.waiting))
            return True
        if not cleanup_plan.remove:
            self._record(StepResult(server=self.server.name, step="cleanup", status="ok", message="nothing to remove",
                                    data={"kept": cleanup_plan.kept}, warnings=cleanup_plan.warnings))
            return True
        envelope = self._scripts([("cleanup", cleanup_step.step_input(cleanup_plan.remove, self.settings))],
                                 release=True)[0]
        envelope["warnings"] = [*cleanup_plan.warnings, *envelope["warnings"]]
        result = StepResult.from_envelope(self.server.name, envelope, 0.0)
        result.data["kept"] = cleanup_plan.kept  # what stays, and why: the console lists it
        self._record(result)
        return bool(envelope["ok"])

    # -- helpers -----------------------------------------------------------------------------------------------------
    def _begin(self, stage: str) -> None:
        """Enter ``stage`` (the step an unexpected exception fails), or stop here when the run was cancelled."""
        if self.options.cancel.requested:
            raise Cancelled(stage)
        self.stage = stage
        if self.options.began is not None:
            self.options.began(self.server.name, stage)

    def _create_with_exchange(self, reasons: list[str]) -> tuple[str | None, dict[str, Any]]:
        """New-ExchangeCertificate; the new certificate named from its output's RawData, else by comparing My before
        and after, so a renewal never leaves a certificate exbe cannot name."""
        facts = self._facts()
        params = plan.new_exchange_certificate_params(self.selected, facts, self.exchange,
                                                      friendly_name=self.settings.friendly_name)
        new, errors = exchange.new_certificate(self.session, params)
        data: dict[str, Any] = {"reasons": reasons, "method": "exchange", "errors": errors}
        if new is None:
            created = self._created_since(facts) or []
            if len(created) != 1:
                found = (f"it created {', '.join(created)}: bind the right one with `exbe bind --thumbprint`"
                         if created else "LocalMachine\\My holds no new certificate")
                data["error"] = (f"New-ExchangeCertificate did not name the certificate it made "
                                 f"({'; '.join(errors) or 'no output'}); {found}")
                data["created"] = created
                return None, data
            new = created[0]
            data["identified_by"] = "comparing LocalMachine\\My before and after"
        data["new_thumbprint"] = new
        return new, data

    def _after_lost_creation(self, lost: ConnectionFailed) -> str:
        """The connection ended while a certificate was being created, perhaps after it was: read My again on a new
        WinRM pool and name what this run left there, so no certificate stays unnamed. Re-raises ``lost`` when the
        server cannot be read at all."""
        self.session.discard("winrm")
        try:
            created = self._created_since(self._facts())
        except ConnectionFailed:
            raise lost from None
        if created is None:
            raise lost
        left = (f"LocalMachine\\My now holds {', '.join(created)}, created by this run and not bound; the next "
                "`exbe renew` reuses it" if created else "LocalMachine\\My holds no new certificate")
        return f"the connection ended while creating the certificate ({lost}); {left}"

    def _created_since(self, before: HostFacts) -> list[str] | None:
        """Read My again and name the back-end candidates that were not there ``before`` (None: the read failed)."""
        envelope = self._scripts([("facts", facts_step.plan(self.settings))])[0]
        if not envelope["ok"]:
            return None
        return plan.created_certificate(before, HostFacts.parse(envelope["data"]), self.settings)

    def _assignments_unknown(self) -> str:
        """Why Exchange's service assignments are unknown on this server ("" when they were read)."""
        unknown = assignments_unknown(self._facts(), self.exchange)
        return f"{unknown}: {self.exchange_reason}" if self.exchange is None else unknown

    def _move_smtp(self, new: str) -> list[str]:
        """Enable-ExchangeCertificate -Services SMTP; the errors (none when it moved)."""
        errors = exchange.enable_smtp(self.session, self.server.name, new)
        if not errors:
            self._read_exchange()  # assignments changed: verify and cleanup judge the new ones
        return errors

    def _read_exchange(self) -> None:
        try:
            self.exchange, errors = exchange.read_facts(self.session, self.server.name)
            if self.exchange is None:
                self.exchange_reason = "; ".join(errors) or "the Exchange cmdlets failed"
        except ConnectionFailed as exc:
            if exc.kind not in EXCHANGE_DOWN_KINDS:
                raise
            self.exchange, self.exchange_reason = None, str(exc)

    def _exchange_warnings(self) -> list[str]:
        if self.exchange is None:
            return [f"Exchange endpoint not used: {self.exchange_reason}"]
        blinded = exchange_blinded(self._facts(), self.exchange)
        if blinded:
            return [f"{blinded}: working from the certificate store; service assignments unknown"]
        if self.exchange.assignments_unknown:
            return [f"service assignments unknown ({self.exchange.assignments_unknown}): SMTP is not moved and "
                    "cleanup keeps every superseded certificate"]
        return []

    def _facts(self) -> HostFacts:
        assert self.facts is not None, "preflight reads the facts first"
        return self.facts

    def _scripts(self, planned: list[tuple[str, dict[str, Any]]], *, release: bool = False,
                 retake: bool = False) -> list[dict[str, Any]]:
        """Render and run step scripts in one pipeline; one envelope per step, each checked against its step's
        result schema; failures (and answers that break the contract) as failed envelopes.

        Under this run's lock, each mutating step carries the lock context (it checks the lock is this run's and
        journals itself). ``lock`` statements ride along, their envelopes handled here, not returned: first
        (``retake``) taking again a lock this run released early, then a pending journal note, and last, with
        ``release``, the release."""
        retake = retake and not self.lock_held and self.lock_released_early
        if self.lock_held or retake:
            context = lock_step.context(self.options.run_id)
            planned = [(step, {**data, lock_step.CONTEXT_KEY: context} if steps.get(step).mutating else data)
                       for step, data in planned]
        else:
            release = False
        head = [self._lock_request("acquire")] if retake else []
        if self.lock_note is not None and (self.lock_held or retake):  # it happened before this pipeline's steps
            head.append(self._lock_request("note", entry=self.lock_note))
            self.lock_note = None
        tail = [self._lock_request("release")] if release else []
        envelopes = self._run_planned([*(("lock", r) for r in head), *planned, *(("lock", r) for r in tail)])
        for request, envelope in zip([*head, *tail], [*envelopes[:len(head)], *envelopes[len(envelopes) - len(tail):]],
                                     strict=True):
            self._lock_tail_answered(request["action"], envelope)
        return envelopes[len(head):len(envelopes) - len(tail)]

    def _run_planned(self, planned: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        scripts = [render_step(step, data, override_dir=self.options.template_dir) for step, data in planned]
        # a pipeline that only reads is sent again if its connection drops; one that changes something never is
        result = self.session.run_scripts(scripts, repeatable=not any(steps.get(step).mutating for step, _ in planned))
        decoded = contract.envelopes(result.output)
        envelopes = []
        for index, (step, _) in enumerate(planned):
            # its envelope is the one that names it (the lock step may run twice: the n-th names the n-th)
            nth = sum(1 for earlier, _ in planned[:index] if earlier == step)
            try:
                envelope = contract.one_result(step, [e for e in decoded if e.get("step") == step][nth:nth + 1])
                steps.get(step).check_result(envelope)
                envelopes.append(envelope)
            except contract.ContractError as exc:
                reason = result.failed or str(exc)
                envelopes.append(contract.make_result(step, ok=False, error=reason, dry_run=self.settings.dry_run))
        for envelope in envelopes:
            envelope["warnings"] = [*envelope["warnings"], *result.errors, *result.warnings]
        return envelopes

    # -- the lock (exbe.steps.lock) ----------------------------------------------------------------------------------
    def unlock(self) -> None:
        """`exbe unlock`: show the lock, then remove it when it is the named run's (``--run``), expired, or with
        ``--yes`` whatever holds it; its record stays as last-run.json, so the next run reports the interrupted run."""
        self._begin("unlock")
        envelope = self._scripts([("lock", self._lock_request("remove", run_id=self.options.unlock_run or "",
                                                               force=self.options.unlock_any))])[0]
        if not envelope["ok"]:
            self._fail("unlock", f"exbe's lock could not be read or removed: {envelope['error']}", 0.0)
            return
        found = lock_step.LockFacts.parse(envelope["data"])
        if found.removed is not None:
            self._record(StepResult(server=self.server.name, step="unlock", status="changed", changed=True,
                                    message=f"removed the lock of {found.removed.holder()}; its last step: "
                                            f"{found.removed.last_step()}", data=envelope["data"]))
        elif found.held is None:
            self._record(StepResult(server=self.server.name, step="unlock", status="ok",
                                    message="no exbe run holds the lock on this server", data=envelope["data"]))
        else:
            self._fail("unlock", f"not removed: locked by {found.held.holder()}; last step {found.held.last_step()}. "
                       f"`exbe unlock --server {self.server.name} --run {found.held.run_id}` removes that run's lock "
                       "(or --yes, whatever holds it)", 0.0)

    def _first_lock_action(self) -> str:
        """A changing task takes the lock; read-only tasks and dry runs only look at it."""
        return "acquire" if self.task in LOCKING_TASKS and not self.settings.dry_run else "show"

    def _lock_request(self, action: str, *, run_id: str | None = None, force: bool = False,
                      entry: dict[str, Any] | None = None) -> dict[str, Any]:
        return lock_step.request(action, self.options.run_id if run_id is None else run_id, agent_name(), self.task,
                                 force=force, entry=entry)

    def _lock_answered(self, envelope: dict[str, Any]) -> list[str] | None:
        """The first pipeline's lock answer: None when this server must stop here (locked by another run, or the
        lock could not be taken), else the warnings for preflight. A run that took the lock records a ``lock`` step
        first, with the warning about an interrupted run it found."""
        locking = self._first_lock_action() == "acquire"
        if not envelope["ok"]:
            if locking:
                self._fail("lock", f"exbe's lock on this server could not be taken ({envelope['error']}); nothing "
                           "was changed", 0.0)
                return None
            return [f"exbe's lock on this server could not be read: {envelope['error']}"]
        found = lock_step.LockFacts.parse(envelope["data"])
        self.lock = found
        interrupted = found.interrupted()
        notes = [lock_step.interrupted_message(interrupted) + ("; this run converges from the facts" if locking
                                                               else "")] if interrupted else []
        notes += envelope["warnings"]  # e.g. a %ProgramData%\exbe whose ACL lets others in (lock.ps1.j2)
        if not locking:
            if found.held is not None and not found.held.expired(found.now):
                notes.append(f"locked by {found.held.holder()}: another exbe run is changing this server")
            return notes
        if not found.acquired:
            held = found.held
            self._fail("lock", f"locked by {held.holder() if held else 'another run'}: nothing was changed on this "
                       "server; wait for that run, or remove its lock with "
                       f"`exbe unlock --server {self.server.name}` once it is gone", 0.0, warnings=notes)
            return None
        self.lock_held = True
        mine = found.held
        if found.took_over is not None:
            notes.append(f"took over its expired lock ({found.took_over.holder()})")
        self._record(StepResult(server=self.server.name, step="lock", status="ok",
                                message=f"took the lock for run {self.options.run_id} ({self.task}) until "
                                        f"{iso(mine.expires_at) if mine and mine.expires_at else 'its expiry'}",
                                data={"run_id": self.options.run_id, "agent": agent_name()}, warnings=notes))
        return []

    def _lock_tail_answered(self, action: str, envelope: dict[str, Any]) -> None:
        """A lock statement that rode on a pipeline: a lock no longer this run's stops carrying the context."""
        refused = envelope["data"].get("refused") if envelope["ok"] else None
        if envelope["ok"] and action == "release" and envelope["data"].get("released"):
            self.lock_held = False
            self.lock_released_early = self.stage == "bind"
            return
        if action == "acquire":
            self.lock_held = bool(envelope["ok"] and envelope["data"].get("acquired"))
            if not self.lock_held:
                held = lock_step.LockFacts.parse(envelope["data"]).held if envelope["ok"] else None
                self.run.warnings.append("exbe's lock could not be taken again for the restart: "
                                         + (f"locked by {held.holder()}" if held else str(envelope["error"])))
            return
        if refused:
            self.lock_held = False
            self.run.warnings.append(f"exbe's lock was no longer this run's ({refused})")
            return
        if not envelope["ok"]:
            self.run.warnings.append(f"exbe's lock: the {action} failed: {envelope['error']}")

    def _release_lock(self) -> None:
        """At the end of the run: release a lock the last pipeline did not (a step stopped the chain, nothing was
        left to clean up, a connection failed, a cancel): one more pipeline, 2 requests (after a lost connection on
        a new pool: authentication and Create too). When even that fails, say how the admin removes it."""
        if not self.lock_held:
            return
        for fresh in (False, True):  # a connection that failed is not used again: a new pool, once
            try:
                if fresh:
                    self.session.discard("winrm")
                self._scripts([], release=True)
                break
            except ConnectionFailed as exc:
                log.debug("%s: releasing the lock failed", self.server.name, exc_info=True)
                if fresh:
                    self.run.warnings.append(f"exbe's lock could not be released ({exc})")
            except Exception as exc:  # noqa: BLE001 - the run's own outcome stands; the lock's fate is a warning
                log.debug("%s: releasing the lock failed", self.server.name, exc_info=True)
                self.run.warnings.append(f"exbe's lock could not be released ({unexpected_message(exc)})")
                break
        if self.lock_held:
            self.run.warnings.append(
                f"exbe's lock of run {self.options.run_id} stays on {self.server.name} until it expires "
                f"({lock_step.TTL_MINUTES} minutes after its last step); `exbe unlock --server {self.server.name} "
                f"--run {self.options.run_id}` removes it")

    def _last_change(self, stage: str, planned: list[tuple[str, dict[str, Any]]] | None = None) -> bool:
        """Whether ``stage`` is the last change this run makes, so its pipeline carries the lock's release: in the
        renew chain a cleanup may follow the bind and the restart, and ``--restart-iis`` restarts after the bind
        when it changes a binding or W3SVC/WAS are not running. Whether the bind will change one is read from its
        input (``planned``); a restart that was not expected takes the lock again in its own pipeline."""
        if self.task != "renew":
            return True
        if self.options.cleanup:
            return stage == "cleanup"
        if stage != "bind" or not (self.settings.restart_iis or self.options.restart_always):
            return True
        if self.options.restart_always:
            return False
        bind_input = next((data for step, data in planned or [] if step == "bind"), None)
        backend = backend_binding(self._facts(), self.settings)
        moves = bind_input is not None and (bind_input["loopback_binding"] is not None or bind_input["thumbprint"]
                                            != (backend.certificate_hash if backend else None))
        return restart_step.needed(self._facts(), bind_changed=moves) is None

    def _finish_interrupted_bind(self, facts: HostFacts, bind_input: dict[str, Any]) -> dict[str, Any]:
        """An interrupted run stopped inside its bind: the back end may carry its certificate while the loopback
        127.0.0.1:443: binding still carries the one that bind was replacing (a split binding the facts alone do not
        show). Finish it: the loopback follows when it still carries what the journal says that bind replaced."""
        record = self.lock.interrupted() if self.lock is not None else None
        begun = record.unfinished("bind") if record is not None else None
        replaced = (begun.get("replaces") or {}).get("loopback") if begun is not None else None
        loopback = loopback_binding(facts, self.settings)
        if (not replaced or bind_input["loopback_binding"] is not None or loopback is None
                or loopback.certificate_hash != str(replaced).upper()
                or loopback.certificate_hash == bind_input["thumbprint"]):
            return bind_input
        self.run.warnings.append(f"finishing the interrupted run's bind: {loopback.information} still carries "
                                 f"{loopback.certificate_hash}, which that bind was replacing")
        return {**bind_input, "loopback_binding": loopback.information, "loopback_from": loopback.certificate_hash}

    def _note_exchange_change(self, step: str, intent: str, replaced: str | None, new: str | None,
                              error: str | None) -> None:
        """A change made on the Exchange endpoint, which runs no scripts: its journal entry rides on the next WinRM
        pipeline (the lock's first entry holds what LocalMachine\\My held before)."""
        if self.lock_held:
            self.lock_note = {"step": step, "phase": "end", "intent": intent, "ok": new is not None,
                              "changed": new is not None, "error": error,
                              "result": {"replaced": replaced, "new_thumbprint": new}}

    def _target_thumbprint(self) -> str:
        assert self.selected is not None
        return (self.options.thumbprint or self.selected.thumbprint).upper()

    def _plan_rest_of_chain(self) -> None:
        """Dry run with a renewal pending: the later steps cannot run without the new certificate; say what they
        would do."""
        facts = self._facts()
        old = self.selected.thumbprint if self.selected else "nothing usable"
        planned = []
        if self.settings.trust:
            planned.append(("trust", "would add the new certificate's public part to LocalMachine\\Root"))
        bind_input = bind_step.plan(facts, "NEW", self.settings)
        planned.append(("bind", f"would bind the new certificate on {self.settings.backend_site} "
                                f"{bind_input['backend_binding'] or BACKEND_LABEL} (now {old})"
                        + (f" and on {self.settings.frontend_site} {bind_input['loopback_binding']}"
                           if bind_input["loopback_binding"] else "")))
        if self.settings.restart_iis or self.options.restart_always:
            planned.append(("restart", "would run iisreset and wait for W3SVC (the bind changes a binding)"))
        for step, message in planned:
            self._record(StepResult(server=self.server.name, step=step, status="changed", changed=True,
                                    message=message))

    def _renew_failed(self, message: str, started: float) -> str | None:
        """Record the failed renewal; returns what ``renew`` returns to stop the chain (None)."""
        self._fail("renew", message, time.monotonic() - started)
        return None

    def _fail(self, step: str, message: str, duration: float, warnings: list[str] | None = None) -> bool:
        self._record(StepResult(server=self.server.name, step=step, status="failed", message=message,
                                warnings=warnings or [], duration_s=round(duration, 3)))
        return False

    def _record(self, result: StepResult) -> None:
        self.run.steps.append(result)
        self.progress(self.server.name, result.step, result.status, result.message)


#: In a dry run, the verify findings each planned step fixes: the real run applies it, reads the server again and
#: verifies what it left (bind includes 127.0.0.1:443 where it was; restart brings W3SVC and http.sys back).
FIXED_BY: dict[str, frozenset[str]] = {
    "renew": frozenset({"backend_binding_present", "backend_days_left", "backend_signature", "backend_key_size",
                        "backend_key_provider"}),
    "trust": frozenset({"root_copy"}),
    "bind": frozenset({"backend_binding_present", "loopback_443", "tls_444_serves_bound"}),
    "restart": frozenset({"w3svc_running", "tls_444_serves_bound", "backend_http_401"}),
}


def planned_fixes(results: list[CheckResult], planned: list[str],
                  settings: Settings) -> tuple[list[CheckResult], dict[str, str]]:
    """A dry run's verify: each failed or warning check that a planned step (one the dry run reports as a change)
    fixes becomes ``skip`` -- not judged, as the plan changes what it looks at -- with the step named in its message;
    returns the results and ``{check id: step}``. What no planned step fixes keeps its status: it blocks the plan."""
    fixes = {check: step for step in reversed(planned) for check in FIXED_BY.get(step, ())}
    if "renew" in planned and settings.smtp == "move":
        fixes["internal_transport_cert"] = "renew"  # --smtp move puts SMTP on the new certificate
    fixed: dict[str, str] = {}
    judged = []
    for result in results:
        step = fixes.get(result.id)
        if step and result.status in ("fail", "warn"):
            fixed[result.id] = step
            result = dataclasses.replace(result, status="skip",
                                         message=f"{result.message} (the planned {step} fixes this)")
        judged.append(result)
    return judged, fixed


def agent_name() -> str:
    """This agent's host name, as the lock records it."""
    return socket.gethostname()


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
                                f"outcome of {stage} is unknown; `exbe verify --server {run.server}` shows where the "
                                "server stands")
    else:
        step, message = stage, (f"cancelled before {stage} started ({reason}); the steps before it ran whole; "
                                f"`exbe verify --server {run.server}` shows where the server stands")
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


def run_fleet(servers: list[Server], task: str, credentials: Credentials, settings: Settings, options: RunOptions,
              progress: Progress, concurrency: int) -> list[ServerRun]:
    """Run ``task`` on every server, at most ``concurrency`` at once; results in the servers' order, one for every
    server whatever happened on the others.

    After ``options.cancel`` is requested no server starts and the running ones stop before their next step; this
    waits for them until the cancel's deadline or :meth:`Cancel.abandon`, then returns without them, each reported
    with what it had done and its current step's outcome unknown (their threads end on their own)."""
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
    gate = threading.Lock()
    refused_by: list[str] = []  # servers that refused the credentials, first first
    cancel = options.cancel
    flows: dict[int, ServerFlow] = {}  # the servers that started, by position
    preload()

    def one(index: int, server: Server) -> ServerRun:
        flow: ServerFlow | None = None
        started = time.monotonic()
        if cancel.requested:
            run = new_run(server)
            mark_cancelled(run, None, cancel.reason)
            return run
        if refused_by and not options.keep_going:
            return not_attempted(server, refused_by[0], progress)
        try:
            flow = ServerFlow(server, credentials, settings, options, progress, gate)
            flows[index] = flow
            run = flow.execute(task)
            if flow.credentials_refused:
                refused_by.append(server.name)
            return run
        except Exception as exc:  # noqa: BLE001 - what ServerFlow.execute did not catch (building it, reporting)
            log.debug("%s: the server's run failed unexpectedly", server.name, exc_info=True)
            if flow is not None:
                run, stage = flow.run, flow.stage
            else:
                run = new_run(server)
                stage = "connect"
            fail_unexpectedly(run, stage, exc, progress)
            run.duration_s = round(time.monotonic() - started, 3)
            return run

    def reported(index: int, server: Server) -> ServerRun:
        run = one(index, server)
        if options.finished is not None:
            options.finished(run)
        return run

    pool = ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(servers))), thread_name_prefix="exbe")
    futures = [pool.submit(reported, index, server) for index, server in enumerate(servers)]
    try:
        # short waits, so that the signal handlers of the main thread run and the deadline is noticed
        while wait(futures, timeout=0.2).not_done and not cancel.abandoned:
            if cancel.deadline is not None and time.monotonic() > cancel.deadline:
                cancel.abandon()
    finally:
        pool.shutdown(wait=not cancel.abandoned, cancel_futures=True)
    return [future.result() if future.done() and not future.cancelled() else _unfinished(server, flows.get(index),
                                                                                         cancel.reason)
            for index, (future, server) in enumerate(zip(futures, servers, strict=True))]


def _unfinished(server: Server, flow: ServerFlow | None, reason: str) -> ServerRun:
    """A server run_fleet stopped waiting for: what its flow had recorded so far (a copy: the flow may still append),
    marked cancelled while its current step ran; a server that had not started, cancelled before it started."""
    if flow is None:
        run = new_run(server)
        mark_cancelled(run, None, reason)
        return run
    run = dataclasses.replace(flow.run, steps=list(flow.run.steps), warnings=list(flow.run.warnings))
    mark_cancelled(run, flow.stage, reason, running=True)
    return run

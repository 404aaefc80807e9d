"""The back-end certificate's runbook: preflight -> renew -> trust -> bind -> (restart) -> verify -> (cleanup), per
server, over one session (:class:`exbe.server_run.ServerJob`).

Round trips are the cost, so steps that need no decision in between share a pipeline: trust, bind and the
post-change facts read go to WinRM as three statements of one pipeline. Preflight reads both endpoints at once.
A changing task takes the server's lock (:mod:`exbe.lock`) as the first statement of preflight's pipeline and
releases it as the last statement of its last change's pipeline; its mutating steps journal themselves in it.
What each step changes is planned in its module (``exbe/steps/``) and decided in :mod:`exbe.plan`; this module is
the order, and what one step's outcome means for the next.

The renew chain's ``--restart-iis`` restarts only when needed (:func:`exbe.steps.restart.needed`), else the restart
step is recorded as skipped.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from .. import checks, exchange, plan
from ..errors import ConnectionFailed
from ..facts import Certificate, HostFacts
from ..model import StepResult, StepStatus
from ..probe import probe_backend
from ..quoting import exbe_command
from ..selection import SelectionError, assignments_unknown, backend_binding, exchange_blinded, select_backend
from ..server_run import ServerJob
from ..steps import bind as bind_step
from ..steps import cleanup as cleanup_step
from ..steps import clone as clone_step
from ..steps import facts as facts_step
from ..steps import restart as restart_step
from ..steps import trust as trust_step

TASKS = ("preflight", "renew", "trust", "bind", "restart", "verify", "cleanup")
METHODS = {"exchange": "New-ExchangeCertificate -Services None on the Exchange endpoint",
           "clone": "New-SelfSignedCertificate -CloneCert with a legacy CSP over WinRM"}


#: The end of the bind's refusal when the trust before it in the same pipeline did not put the certificate in
#: LocalMachine\\Root (ps_templates/bind.ps1.j2, the sandbox's model in exbe/sandbox/steps.py).
TRUST_UNFINISHED = "is not in LocalMachine\\Root (the trust before this bind did not complete)"


def stopped_by(earlier: StepResult, result: StepResult) -> bool:
    """Whether ``result``, a later statement of the pipeline in which ``earlier`` failed, failed only because of it:
    the bind that refused since the failed trust left its certificate out of Root, or a statement that answered
    with the earlier failure's own text (a pipeline that failed whole). A statement that ran and refused or failed
    for a reason of its own is reported as that."""
    if result.status != "failed" or result.changed:
        return False
    if result.message == earlier.message:
        return True
    return earlier.step == "trust" and result.step == "bind" and TRUST_UNFINISHED in result.message


class BackendJob(ServerJob):
    """The back-end certificate's tasks on one server."""

    LOCKING_TASKS: ClassVar[tuple[str, ...]] = ("renew", "trust", "bind", "restart", "cleanup")

    selected: Certificate | None = None  # the back-end certificate preflight selected

    # -- the runbook -------------------------------------------------------------------------------------------------
    def steps(self) -> None:
        task = self.task
        if not self.preflight():
            return
        if task == "preflight":
            return
        if task == "verify":
            self.verify(reuse_facts=True)
            return
        if self.selected is None and task in ("trust", "bind", "cleanup") and not self.options.thumbprint:
            self.fail(task, "no back-end certificate to act on; run `exbe renew` first", 0.0)
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
            self.read_exchange()  # its endpoint is an IIS application: down at preflight, perhaps up again now
        passed = self.verify(reuse_facts=not restarted)
        if self.options.cleanup and passed:
            self.cleanup(switched=self.run.new_thumbprint not in (None, self.run.old_thumbprint))

    # -- steps -------------------------------------------------------------------------------------------------------
    def preflight(self) -> bool:
        """Both endpoints at once; the certificate store is the source of truth, Exchange adds assignments."""
        self.begin("preflight")
        started = time.monotonic()
        lock_warnings, envelope = self.first_read()
        duration = time.monotonic() - started
        if lock_warnings is None:
            return False
        if not envelope["ok"]:
            return self.fail("preflight", f"reading the certificate store and IIS failed: {envelope['error']}",
                             duration)
        self.facts = HostFacts.parse(envelope["data"])
        warnings = [*lock_warnings, *envelope["warnings"], *self._exchange_warnings()]
        try:
            selection = select_backend(self.facts, self.settings, replacement=self.lock.replacement(self.facts))
        except SelectionError as exc:
            if exc.candidates:  # several possible back-end certificates and none bound: a human must choose
                return self.fail("preflight", str(exc), duration, warnings=warnings)
            # No back-end certificate at all (KB 2779694): renew creates one; the other tasks have nothing to act on.
            warnings.append(f"{exc}; `exbe renew` creates a new one (Microsoft's repair, KB 2779694)")
            self.selected = None
            self.record(StepResult(server=self.server.name, step="preflight", status="ok",
                                   message=f"no back-end certificate in LocalMachine\\My ({exc.found})",
                                   data={"selected": None, **self._read_data()}, warnings=warnings,
                                   duration_s=round(duration, 3)))
            return True
        self.selected = self.facts.certificate(selection.thumbprint)
        self.run.old_thumbprint = selection.thumbprint
        self.record(StepResult(
            server=self.server.name, step="preflight", status="ok", message=selection.reason,
            data={"selected": selection.thumbprint, **self._read_data()},
            warnings=warnings, duration_s=round(duration, 3)))
        return True

    def _read_data(self) -> dict[str, Any]:
        """What preflight read, for the run record and `exbe status`: Exchange's view, the facts, exbe's lock."""
        return {"exchange": self.exchange.to_dict() if self.exchange else None,
                "facts": dict(self.current_facts().document), **({"lock": self.lock_read} if self.lock_read else {})}

    def renew(self) -> str | None:
        """The thumbprint the chain goes on with: the selected one, a staged one, or a new one; None to stop."""
        self.begin("renew")
        started = time.monotonic()
        facts = self.current_facts()
        blockers = bind_step.blockers(facts)
        if blockers:
            self.fail("renew", "; ".join(blockers), 0.0)
            return None
        if self.selected is None:  # nothing in My to renew: Microsoft's repair creates one (KB 2779694)
            thumb, reasons, method = None, ["no back-end certificate in LocalMachine\\My"], "exchange"
            blinded = exchange_blinded(facts, self.exchange)
            if self.exchange is None or blinded:
                return self._renew_failed(
                    "there is no back-end certificate to clone and the Exchange endpoint cannot create one "
                    f"({self.exchange_reason or blinded}); run `exbe render renew` and the script in the Exchange "
                    "Management Shell" + (f", or first {exbe_command('auth', ('--server', self.server.name))} "
                                          "(it renews the Auth certificate that blinds the cmdlets)" if blinded
                                          else ""), started)
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
                rehearsal = self.scripts([("clone", clone_step.plan(self.selected, dry_run=True))])[0]
                if not rehearsal["ok"]:
                    return self._renew_failed(f"cloning {thumb} would fail: {rehearsal['error']}", started)
            self.record(StepResult(server=self.server.name, step="renew", status="changed", changed=True,
                                   message=f"would {what} ({'; '.join(reasons)}) with {how}",
                                   data={"reasons": reasons, "method": method}, duration_s=0.0))
            for step, message in plan.rest_of_chain(facts, self.selected, self.settings, restart=(
                    self.settings.restart_iis or self.options.restart_always)):
                self.record(StepResult(server=self.server.name, step=step, status="changed", changed=True,
                                       message=message))
            self.verify(reuse_facts=True)  # today's findings, those the plan fixes marked so (no round trip)
            return None
        warnings: list[str] = []
        try:
            if method == "exchange":
                new, data = self._create_with_exchange(reasons)
                self.lock.note_exchange_change("renew", f"renew {thumb or 'nothing'} with {how}", thumb, new,
                                               data.get("error"))
                if new is None:
                    return self._renew_failed(data["error"], started)
            else:
                assert self.selected is not None and thumb is not None
                envelope = self.scripts([("clone", clone_step.plan(self.selected, dry_run=False))])[0]
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
        self.record(StepResult(server=self.server.name, step="renew", status="changed", changed=True,
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
        self.record(StepResult(server=self.server.name, step="renew", status="changed" if changed else "ok",
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
        self.lock.note_exchange_change("renew", f"move SMTP to {thumb} (--smtp move)", current,
                                       None if errors else thumb, "; ".join(errors) or None)
        return [], current or "", "; ".join(errors) or None

    def trust_and_bind(self, thumbprint: str, *, trust: bool, bind: bool) -> bool:
        """Trust and bind in one pipeline, followed by a fresh facts read for verify."""
        self.begin("bind" if bind else "trust")
        started = time.monotonic()
        facts = self.current_facts()
        if bind:
            blockers = bind_step.blockers(facts)
            if blockers:
                return self.fail("bind", "; ".join(blockers), 0.0)
        scripts: list[tuple[str, dict[str, Any]]] = []
        if trust:
            scripts.append(("trust", trust_step.plan(thumbprint, dry_run=self.settings.dry_run)))
        if bind:
            scripts.append(("bind", self._finish_interrupted_bind(
                facts, bind_step.plan(facts, thumbprint, self.settings, after_trust=trust))))
        scripts.append(("facts", facts_step.plan(self.settings)))
        envelopes = self.scripts(scripts, release=self._last_change("bind", scripts))
        duration = round(time.monotonic() - started, 3)
        ok = True
        first_failure: StepResult | None = None
        for envelope in envelopes[:-1]:
            result = StepResult.from_envelope(self.server.name, envelope, duration)
            if first_failure is not None and stopped_by(first_failure, result):
                # one failure per cause: this step did not act because the earlier one failed
                result = StepResult(server=self.server.name, step=result.step, status="skipped",
                                    message=f"not run: {first_failure.step} failed before it ({result.message})"
                                    if result.message != first_failure.message else
                                    f"not run: {first_failure.step} failed before it")
            elif first_failure is None and result.status == "failed":
                first_failure = result
            self.record(result)
            ok = ok and envelope["ok"]
        if envelopes[-1]["ok"]:
            self.facts = HostFacts.parse(envelopes[-1]["data"])
            if ok and not self.settings.dry_run:
                left = bind_step.unconverged(self.facts, thumbprint, self.settings, trust=trust, bind=bind)
                if left:
                    return self.fail("bind" if bind else "trust", f"the steps reported success but re-reading the "
                                     f"server shows {'; '.join(left)}", 0.0)
        return ok

    def restart_when_needed(self) -> bool | None:
        """The renew chain's ``--restart-iis``: restart when this run changed a binding or W3SVC/WAS are not running
        (or when forced), else record the step as skipped. None when skipped, else whether the restart succeeded."""
        self.begin("restart")
        bind_changed = any(step.step == "bind" and step.changed for step in self.run.steps)
        reason = restart_step.needed(self.current_facts(), bind_changed=bind_changed)
        if self.options.restart_always:
            reason = "forced (--restart-iis=always)" + (f"; {reason}" if reason else "")
        if reason is None:
            self.record(StepResult(server=self.server.name, step="restart", status="skipped",
                                   message=restart_step.NOT_NEEDED))
            return None
        return self.restart(reason)

    def restart(self, reason: str) -> bool:
        """iisreset, one server of the fleet at a time, waiting for W3SVC, then one start attempt for W3SVC/WAS if
        they stayed stopped. It ends the Exchange endpoint's pools: the next Exchange call opens a new one."""
        started = time.monotonic()
        # a cancel that came while waiting for the gate stops the restart before it starts
        with self.restart_turn():
            self.begin("restart")
            envelope = self.scripts([("restart", restart_step.plan(dry_run=self.settings.dry_run))],
                                    release=self._last_change("restart"), retake=True)[0]
        if not self.settings.dry_run:
            self.session.discard("exchange")
        result = StepResult.from_envelope(self.server.name, envelope, time.monotonic() - started)
        result.data["reason"] = reason
        if result.status != "failed":
            result.message = f"{result.message} ({reason})"
        self.record(result)
        return bool(envelope["ok"])

    def verify(self, *, reuse_facts: bool) -> bool:
        self.begin("verify")
        started = time.monotonic()
        if not reuse_facts or self.facts is None:
            envelope = self.scripts([("facts", facts_step.plan(self.settings))])[0]
            if not envelope["ok"]:
                return self.fail("verify", f"reading the certificate store and IIS failed: {envelope['error']}", 0.0)
            self.facts = HostFacts.parse(envelope["data"])
        # not a WinRM request, but bounded by the server's deadline too (at least 1 s: a live 444 answers at once)
        probe = probe_backend(self.server.host, self.server.backend_port,
                              timeout=min(self.server.connect_timeout, max(self.deadline.left(), 1.0)))
        results = checks.run_checks(self.facts, self.exchange, probe, self.settings, lock=self.lock.found)
        fixed: dict[str, str] = {}
        if self.settings.dry_run:
            results, fixed = plan.planned_fixes(results, [s.step for s in self.run.steps if s.status == "changed"],
                                                self.settings)
        failed = [c for c in results if c.status == "fail"]
        warned = [c for c in results if c.status == "warn"]
        status: StepStatus = "failed" if failed else "ok"
        message = (f"{len(failed)} check(s) failed: {', '.join(c.id for c in failed)}" if failed
                   else f"{len(results)} checks, {len(warned)} warning(s)")
        if fixed:
            message += f", {len(fixed)} finding(s) the plan fixes"
        self.record(StepResult(server=self.server.name, step="verify", status=status, message=message,
                               checks=results, data={"would_fix": fixed} if fixed else {},
                               duration_s=round(time.monotonic() - started, 3)))
        return not failed

    def cleanup(self, *, switched: bool = False) -> bool:
        """Remove superseded certificates; ``switched``: this run bound a new one (its predecessors wait)."""
        self.begin("cleanup")
        facts = self.current_facts()
        if self.exchange is not None and switched:
            self.read_exchange()  # this run created a certificate: the assignments as they are now
        cleanup_plan = cleanup_step.plan(facts, self.exchange, self.settings,
                                         switched_at=facts.now if switched else None)
        if cleanup_plan.refused:
            return self.fail("cleanup", cleanup_plan.refused, 0.0)
        if cleanup_plan.waiting:
            self.record(StepResult(server=self.server.name, step="cleanup", status="skipped",
                                   message=cleanup_plan.waiting))
            return True
        if not cleanup_plan.remove:
            self.record(StepResult(server=self.server.name, step="cleanup", status="ok", message="nothing to remove",
                                   data={"kept": cleanup_plan.kept}, warnings=cleanup_plan.warnings))
            return True
        envelope = self.scripts([("cleanup", cleanup_step.step_input(cleanup_plan.remove, self.settings))],
                                release=True)[0]
        envelope["warnings"] = [*cleanup_plan.warnings, *envelope["warnings"]]
        result = StepResult.from_envelope(self.server.name, envelope, 0.0)
        result.data["kept"] = cleanup_plan.kept  # what stays, and why: the console lists it
        self.record(result)
        return bool(envelope["ok"])

    # -- helpers -----------------------------------------------------------------------------------------------------
    def _create_with_exchange(self, reasons: list[str]) -> tuple[str | None, dict[str, Any]]:
        """New-ExchangeCertificate; the new certificate named from its output's RawData, else by comparing My before
        and after, so a renewal never leaves a certificate exbe cannot name."""
        facts = self.current_facts()
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
            created = self._created_since(self.current_facts())
        except ConnectionFailed:
            raise lost from None
        if created is None:
            raise lost
        left = (f"LocalMachine\\My now holds {', '.join(created)}, created by this run and not bound; the next "
                "`exbe renew` reuses it" if created else "LocalMachine\\My holds no new certificate")
        return f"the connection ended while creating the certificate ({lost}); {left}"

    def _created_since(self, before: HostFacts) -> list[str] | None:
        """Read My again and name the back-end candidates that were not there ``before`` (None: the read failed)."""
        envelope = self.scripts([("facts", facts_step.plan(self.settings))])[0]
        if not envelope["ok"]:
            return None
        return plan.created_certificate(before, HostFacts.parse(envelope["data"]), self.settings)

    def _assignments_unknown(self) -> str:
        """Why Exchange's service assignments are unknown on this server ("" when they were read)."""
        unknown = assignments_unknown(self.current_facts(), self.exchange)
        return f"{unknown}: {self.exchange_reason}" if self.exchange is None else unknown

    def _move_smtp(self, new: str) -> list[str]:
        """Enable-ExchangeCertificate -Services SMTP; the errors (none when it moved)."""
        errors = exchange.enable_smtp(self.session, self.server.name, new)
        if not errors:
            self.read_exchange()  # assignments changed: verify and cleanup judge the new ones
        return errors

    def _exchange_warnings(self) -> list[str]:
        if self.exchange is None:
            return [f"Exchange endpoint not used: {self.exchange_reason}"]
        notes = list(self.exchange_notes)  # the server's own words for what did not answer
        blinded = exchange_blinded(self.current_facts(), self.exchange)
        if blinded:
            return [*notes, f"{blinded}: working from the certificate store; service assignments unknown; "
                            f"{exbe_command('auth', ('--server', self.server.name))} renews the Auth certificate"]
        if self.exchange.assignments_unknown:
            return [*notes, f"service assignments unknown ({self.exchange.assignments_unknown}): SMTP is not moved "
                            "and cleanup keeps every superseded certificate"]
        return notes

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
        backend = backend_binding(self.current_facts(), self.settings)
        moves = bind_input is not None and (bind_input["loopback_binding"] is not None or bind_input["thumbprint"]
                                            != (backend.certificate_hash if backend else None))
        return restart_step.needed(self.current_facts(), bind_changed=moves) is None

    def _finish_interrupted_bind(self, facts: HostFacts, bind_input: dict[str, Any]) -> dict[str, Any]:
        """The bind's input, finishing the bind of an interrupted run the lock found (``bind.finish_interrupted``)."""
        record = self.lock.interrupted()
        bind_input, warning = bind_step.finish_interrupted(
            facts, bind_input, record.unfinished("bind") if record is not None else None, self.settings)
        if warning:
            self.run.warnings.append(warning)
        return bind_input

    def _target_thumbprint(self) -> str:
        assert self.selected is not None
        return (self.options.thumbprint or self.selected.thumbprint).upper()

    def _renew_failed(self, message: str, started: float) -> str | None:
        """Record the failed renewal; returns what ``renew`` returns to stop the chain (None)."""
        self.fail("renew", message, time.monotonic() - started)
        return None

"""The runbook: preflight -> renew -> trust -> bind -> (restart) -> verify -> (cleanup), per server, over one session.

Round trips are the cost, so steps that need no decision in between share a pipeline: trust, bind and the
post-change facts read go to WinRM as three statements of one pipeline. Preflight reads both endpoints at once.

One server's trouble stays that server's: any exception in its work (a lost connection, an error raised inside pypsrp,
a bug) ends that server's run with a failed step naming it, and the fleet goes on; :func:`run_fleet` returns a
:class:`ServerRun` for every server. The renew chain's ``--restart-iis`` restarts only when needed
(:func:`exbe.steps.restart.needed`), else the restart step is recorded as skipped.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import checks, contract, exchange, plan, steps
from .errors import ConfigError, ConnectionFailed
from .facts import Certificate, ExchangeFacts, HostFacts, iso
from .model import ServerRun, Settings, StepResult, StepStatus
from .probe import probe_backend
from .render import render_step
from .selection import BACKEND_LABEL, SelectionError, assignments_unknown, exchange_blinded, select_backend
from .steps import bind as bind_step
from .steps import cleanup as cleanup_step
from .steps import clone as clone_step
from .steps import facts as facts_step
from .steps import restart as restart_step
from .steps import trust as trust_step
from .transport import Session, preload

if TYPE_CHECKING:
    from .config import Credentials, Server

TASKS = ("preflight", "renew", "trust", "bind", "restart", "verify", "cleanup")
METHODS = {"exchange": "New-ExchangeCertificate -Services None on the Exchange endpoint",
           "clone": "New-SelfSignedCertificate -CloneCert with a legacy CSP over WinRM"}
EXCHANGE_DOWN_KINDS = {"unreachable", "unavailable", "winrm_not_enabled", "auth", "no_credentials", "timeout",
                       "protocol", "dropped"}

log = logging.getLogger("exbe.flow")


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How to reach and drive the servers (not what to decide: that is Settings)."""

    template_dir: Path | None = None
    thumbprint: str | None = None  # `exbe bind --thumbprint`: bind this certificate instead of the selected one
    cleanup: bool = False  # `exbe renew --cleanup`
    # `--restart-iis=always` (no flag sets it yet): the renew chain restarts IIS even when nothing bound changed and
    # W3SVC/WAS run; implies Settings.restart_iis.
    restart_always: bool = False
    # `--keep-going`: try the remaining servers even after one refused the credentials (a lockout risk)
    keep_going: bool = False


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

    # -- entry -------------------------------------------------------------------------------------------------------
    def execute(self, task: str) -> ServerRun:
        started = time.monotonic()
        try:
            with self.session:
                self._execute(task)
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
        passed = self.verify(reuse_facts=not restarted)
        if self.options.cleanup and passed:
            self.cleanup(switched=self.run.new_thumbprint not in (None, self.run.old_thumbprint))

    # -- steps -------------------------------------------------------------------------------------------------------
    def preflight(self) -> bool:
        """Both endpoints at once; the certificate store is the source of truth, Exchange adds assignments."""
        self.stage = "preflight"
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"exbe-{self.server.name}-exchange") as side:
            exchange_read = side.submit(self._read_exchange)
            envelope = self._scripts([("facts", facts_step.plan(self.settings))])[0]
            exchange_read.result()  # a connection failure there (e.g. TLS validation) is the run's failure too
        duration = time.monotonic() - started
        if not envelope["ok"]:
            return self._fail("preflight", f"reading the certificate store and IIS failed: {envelope['error']}",
                              duration)
        self.facts = HostFacts.parse(envelope["data"])
        warnings = [*envelope["warnings"], *self._exchange_warnings()]
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
                                    data={"selected": None}, warnings=warnings, duration_s=round(duration, 3)))
            return True
        self.selected = self.facts.certificate(selection.thumbprint)
        self.run.old_thumbprint = selection.thumbprint
        self._record(StepResult(
            server=self.server.name, step="preflight", status="ok", message=selection.reason,
            data={"selected": selection.thumbprint,
                  "exchange": self.exchange.to_dict() if self.exchange else None,
                  "facts": dict(self.facts.document)},
            warnings=warnings, duration_s=round(duration, 3)))
        return True

    def renew(self) -> str | None:
        """The thumbprint the chain goes on with: the selected one, a staged one, or a new one; None to stop."""
        self.stage = "renew"
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
                self._record(StepResult(server=self.server.name, step="renew", status="ok", message=(
                    f"not needed: {thumb} has {days} days left (threshold {self.settings.days})")))
                self.run.new_thumbprint = thumb
                return thumb
            staged = plan.staged_replacement(facts, self.selected, self.settings)
            if staged:
                self._record(StepResult(server=self.server.name, step="renew", status="ok",
                                        message=f"reusing staged certificate {staged} ({'; '.join(reasons)})",
                                        data={"reasons": reasons, "staged": staged}))
                self.run.new_thumbprint = staged
                return staged
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
            return None
        warnings: list[str] = []
        try:
            if method == "exchange":
                new, data = self._create_with_exchange(reasons)
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

    def trust_and_bind(self, thumbprint: str, *, trust: bool, bind: bool) -> bool:
        """Trust and bind in one pipeline, followed by a fresh facts read for verify."""
        self.stage = "bind" if bind else "trust"
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
            scripts.append(("bind", bind_step.plan(facts, thumbprint, self.settings)))
        scripts.append(("facts", facts_step.plan(self.settings)))
        envelopes = self._scripts(scripts)
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
        self.stage = "restart"
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
        self.stage = "restart"
        started = time.monotonic()
        with self.restart_gate:
            envelope = self._scripts([("restart", restart_step.plan(dry_run=self.settings.dry_run))])[0]
        if not self.settings.dry_run:
            self.session.discard("exchange")
        result = StepResult.from_envelope(self.server.name, envelope, time.monotonic() - started)
        result.data["reason"] = reason
        if result.status != "failed":
            result.message = f"{result.message} ({reason})"
        self._record(result)
        return bool(envelope["ok"])

    def verify(self, *, reuse_facts: bool) -> bool:
        self.stage = "verify"
        started = time.monotonic()
        if not reuse_facts or self.facts is None:
            envelope = self._scripts([("facts", facts_step.plan(self.settings))])[0]
            if not envelope["ok"]:
                return self._fail("verify", f"reading the certificate store and IIS failed: {envelope['error']}", 0.0)
            self.facts = HostFacts.parse(envelope["data"])
        probe = probe_backend(self.server.host, self.server.backend_port, timeout=self.server.connect_timeout)
        results = checks.run_checks(self.facts, self.exchange, probe, self.settings)
        failed = [c for c in results if c.status == "fail"]
        warned = [c for c in results if c.status == "warn"]
        status: StepStatus = "failed" if failed else "ok"
        message = (f"{len(failed)} check(s) failed: {', '.join(c.id for c in failed)}" if failed
                   else f"{len(results)} checks, {len(warned)} warning(s)")
        self._record(StepResult(server=self.server.name, step="verify", status=status, message=message,
                                checks=results, duration_s=round(time.monotonic() - started, 3)))
        return not failed

    def cleanup(self, *, switched: bool = False) -> bool:
        """Remove superseded certificates; ``switched``: this run bound a new one (its predecessors wait)."""
        self.stage = "cleanup"
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
        envelope = self._scripts([("cleanup", cleanup_step.step_input(cleanup_plan.remove, self.settings))])[0]
        envelope["warnings"] = [*cleanup_plan.warnings, *envelope["warnings"]]
        self._record(StepResult.from_envelope(self.server.name, envelope, 0.0))
        return bool(envelope["ok"])

    # -- helpers -----------------------------------------------------------------------------------------------------
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

    def _scripts(self, planned: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        """Render and run step scripts in one pipeline; one envelope per step, each checked against its step's
        result schema; failures (and answers that break the contract) as failed envelopes."""
        scripts = [render_step(step, data, override_dir=self.options.template_dir) for step, data in planned]
        result = self.session.run_scripts(scripts)
        decoded = contract.envelopes(result.output)
        envelopes = []
        for step, _ in planned:  # a pipeline runs each step once: its envelope is the one that names it
            try:
                envelope = contract.one_result(step, [e for e in decoded if e.get("step") == step])
                steps.get(step).check_result(envelope)
                envelopes.append(envelope)
            except contract.ContractError as exc:
                reason = result.failed or str(exc)
                envelopes.append(contract.make_result(step, ok=False, error=reason, dry_run=self.settings.dry_run))
        for envelope in envelopes:
            envelope["warnings"] = [*envelope["warnings"], *result.errors, *result.warnings]
        return envelopes

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


def new_run(server: Server) -> ServerRun:
    """The record of one server's run, starting now."""
    return ServerRun(server=server.name, host=server.host,
                     started_at=iso(datetime.datetime.now(datetime.timezone.utc)))


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
    server whatever happened on the others."""
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
    gate = threading.Lock()
    refused_by: list[str] = []  # servers that refused the credentials, first first
    preload()

    def one(server: Server) -> ServerRun:
        flow: ServerFlow | None = None
        started = time.monotonic()
        if refused_by and not options.keep_going:
            return not_attempted(server, refused_by[0], progress)
        try:
            flow = ServerFlow(server, credentials, settings, options, progress, gate)
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

    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(servers))), thread_name_prefix="exbe") as pool:
        return list(pool.map(one, servers))

"""`exbe auth`: the organization's Auth certificate, read once, decided by MEAC's rule, changed once.

The runbook, top down (:func:`run_auth`):

1. **lock** every selected server (exbe's per-server lock, in parallel): no second `exbe auth` and no back-end
   `exbe renew` runs on any of them meanwhile; the lock's answer carries each server's clock;
2. **read** the organization on the first selected server's Exchange endpoint: ``Get-AuthConfig`` and
   ``Get-HybridConfiguration`` once, then per server ``Get-ExchangeCertificate -Server -Thumbprint`` for the
   current and next certificates (missing and unreachable told apart: :mod:`exbe.auth_exchange`);
3. **decide** with MEAC's rule (:func:`exbe.auth_rule.decide`);
4. **act** once, on that server: stage (create with ``-Services None``, ``Set-AuthConfig -NewCertificateThumbprint
   -NewCertificateEffectiveDate`` later than *its* clock plus the skew margin), replace (create, stage, publish,
   clear previous), publish the staged one, or import a certificate a server lacks (PFX exported over WinRM from
   a server that has it, ``Import-ExchangeCertificate -Server`` on one lacking server per AD site: :mod:`exbe.
   auth_import`); each Exchange change is journaled in that server's lock; a replacement ends, on each server one
   at a time, with MSExchangeServiceHost restarted and the OWA and ECP app pools recycled (failures are warnings);
5. **verify**: read the organization again and decide again: nothing left to do, or only waiting for replication.

A next certificate the servicelet has not copied yet is not "missing" while its effective date is more than
:data:`REPLICATION_GRACE` away (MEAC runs daily and would import it at once; exbe runs right after staging, so
it waits for the servicelet as Microsoft describes: KB 2617816).
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from .. import auth_exchange, auth_import
from ..auth_exchange import OrgRead, Presence, ReadFailed
from ..auth_rule import Decision, OrgAuthState, Thresholds, days_left, decide, effective_date, lead_time
from ..errors import ConnectionFailed
from ..facts import iso
from ..fleet import Cancelled, Fleetwide, Progress, RunOptions, fail_unexpectedly, mark_cancelled, run_fleet
from ..model import CheckResult, ServerRun, Settings, StepResult
from ..steps import clone as clone_step
from ..steps import reload as reload_step
from .backend import BackendJob
from .flags import JobFlags

if TYPE_CHECKING:
    from ..config import Credentials
    from ..inventory import Server

#: A staged next certificate that has not reached a server yet counts as missing there only this close to its
#: effective date (admins set it 48-96 h ahead in large organizations: ../shared/auth-certificate.md §1).
REPLICATION_GRACE = datetime.timedelta(hours=48)
HYBRID_STEPS = ("before {date}: add the public key {cer} to the Exchange hybrid application in Entra ID -- run the "
                "Hybrid Configuration Wizard, or ConfigureExchangeHybridApplication.ps1 -UpdateCertificate -- so "
                "that free/busy and cloud archive keep working when it becomes current; exbe cannot see whether "
                "Entra has it: this stays pending until you confirm it")


class AuthServer(BackendJob):
    """One selected server of an organization job: its session, lock and recorder (the back-end job's
    machinery, :class:`exbe.server_run.ServerJob`); the organization job drives its steps itself."""

    LOCKING_TASKS: ClassVar[tuple[str, ...]] = ("auth", "federation")

    locked = False  # this server is locked for the run (in a dry run: its lock was read)

    def execute(self) -> ServerRun:
        """The fleet's part (:func:`exbe.fleet.run_fleet`: first logon, lockout safety, cancellation): lock this
        server and keep the session open; the organization job goes on from there and releases at its end."""
        self.locked = _guard(self, self.take_lock) and self.run.error is None
        return self.run

    def take_lock(self) -> bool:
        """Lock (or, in a dry run, look at the lock); False when this server must not be changed."""
        self.begin("lock")
        self.log_on()
        answer = self.scripts([self.lock.first_statement()])[0]
        result, warnings = self.lock.first_answered(answer)
        if result is not None:
            self.record(result)
        if warnings is None:
            return False
        self.run.warnings.extend(warnings)
        return True

    @property
    def clock(self) -> datetime.datetime:
        """This server's clock, as its lock answered at the start (never the agent's)."""
        assert self.lock.found is not None
        return self.lock.found.now

    def step(self, step: str, status: Any, message: str, **extra: Any) -> None:
        self.record(StepResult(server=self.server.name, step=step, status=status, message=message, **extra))

    def note(self, step: str, intent: str, replaced: str | None, new: str | None, error: str | None) -> None:
        """Journal an Exchange change in this server's lock now (the Exchange endpoint runs no scripts)."""
        if self.lock.held:
            self.lock.note_exchange_change(step, intent, replaced, new, error)
            self.scripts([])

    def release(self) -> None:
        self.lock.release_at_end(self._run_planned, lambda: self.session.discard("winrm"))


def organization_run(servers: list[Server], task: str, credentials: Credentials, settings: Settings,
                     options: RunOptions, progress: Progress, concurrency: int,
                     body: Callable[[list[AuthServer], list[bool]], None]) -> list[ServerRun]:
    """An organization job: every selected server locked by the fleet (in parallel, ``concurrency`` at once, after
    the run's first logon), then ``body`` with the servers and which of them are locked (the first one reads and
    changes the organization), then every lock released; one record per server."""
    jobs: dict[str, AuthServer] = {}

    def start(server: Server, fleetwide: Fleetwide) -> AuthServer:
        jobs[server.name] = AuthServer(server, task, credentials, settings, options, progress, fleetwide)
        return jobs[server.name]

    started = time.monotonic()
    runs = run_fleet(servers, start, dataclasses.replace(options, finished=None), progress, concurrency)
    flows = []
    for server, run in zip(servers, runs, strict=True):
        flow = jobs.get(server.name) or AuthServer(server, task, credentials, settings, options, progress,
                                                   Fleetwide())  # not started (cancelled, not attempted)
        flow.run = run
        flows.append(flow)
    try:
        if not options.cancel.requested:
            body(flows, [flow.locked for flow in flows])
    finally:
        for flow in flows:
            _guard(flow, flow.release)
            _guard(flow, flow.session.close)
            flow.run.duration_s = round(time.monotonic() - started, 3)
    if options.finished is not None:
        for flow in flows:
            options.finished(flow.run)
    return [flow.run for flow in flows]


def run_auth(servers: list[Server], task: str, credentials: Credentials, settings: Settings, options: RunOptions,
             progress: Progress, concurrency: int, *, flags: JobFlags) -> list[ServerRun]:
    """`exbe auth` over ``servers`` (the first one reads and changes the organization): one record per server."""
    def body(flows: list[AuthServer], locked: list[bool]) -> None:
        _AuthJob(flows, settings, flags.thresholds, flags).run(locked)

    return organization_run(servers, task, credentials, settings, options, progress, concurrency, body)


class _Stop(Exception):
    """The job stops here; the step that stopped it is recorded."""


def _guard(flow: AuthServer, action: Any) -> bool:
    """Run ``action`` for ``flow``'s server: its trouble (a lost connection, a cancel, a bug) ends that server's
    part, recorded, never the run. True when it completed."""
    try:
        action()
        return True
    except _Stop:
        pass
    except Cancelled as stop:
        mark_cancelled(flow.run, stop.stage, flow.options.cancel.reason)
    except ConnectionFailed as exc:
        if flow.run.error is None:
            flow.run.error, flow.run.error_kind = str(exc), exc.kind
            flow.step(flow.stage, "failed", str(exc))
    except Exception as exc:  # noqa: BLE001 - one server's bug never ends the others' record
        fail_unexpectedly(flow.run, flow.stage, exc, flow.progress)
    return False


class _AuthJob:
    def __init__(self, flows: list[AuthServer], settings: Settings, thresholds: Thresholds, flags: JobFlags) -> None:
        self.flows = flows
        self.home = flows[0]
        self.settings = settings
        self.thresholds = thresholds
        self.flags = flags
        self.waiting: set[str] = set()  # servers left to their site's replication after this run's import

    # -- the runbook -------------------------------------------------------------------------------------------------
    def run(self, locked: list[bool]) -> None:
        if not locked[0] or self.home.lock.found is None:
            return  # the home server could not be locked or read: its record says why
        busy = [f.server.name for f, ok in zip(self.flows, locked, strict=True) if not ok and f.run.error is None]
        if busy:
            self.home.step("auth", "failed", f"not changed: exbe could not lock {', '.join(busy)} (another exbe run "
                                               "is changing it); run again when that run has ended")
            return
        unreachable = [f.server.name for f, ok in zip(self.flows, locked, strict=True) if not ok]
        read: dict[str, Any] = {}
        if not _guard(self.home, lambda: read.update(self._read(unreachable))):
            return
        decision: Decision = read["decision"]
        if not _guard(self.home, lambda: self._act(read)):
            return
        if decision.changes and not self.settings.dry_run:
            _guard(self.home, lambda: self._verify(unreachable))

    def _read(self, unreachable: list[str]) -> dict[str, Any]:
        """The organization, the presence on every selected server, and the rule's decision."""
        home = self.home
        home.begin("auth")
        try:
            org = auth_exchange.read_org(home.session)
        except ReadFailed as exc:
            home.step("auth", "failed", f"the organization's Auth configuration could not be read: {exc}")
            raise _Stop from None
        now = self.server_now()
        presence = self._presence(org)
        state = self._state(org, presence, unreachable, now)
        decision = decide(state, self.thresholds, ignore_unreachable=self.flags.ignore_unreachable,
                          hybrid_acknowledged=self.flags.hybrid)
        return {"org": org, "presence": presence, "state": state, "decision": decision, "now": now}

    def _presence(self, org: OrgRead) -> dict[str, dict[str, Presence]]:
        wanted = [t for t in (org.auth.current, org.auth.next) if t]
        found: dict[str, dict[str, Presence]] = {}
        for flow in self.flows:
            self.home.begin("auth")
            found[flow.server.name] = auth_exchange.read_presence(self.home.session, flow.server.name, wanted)
            flow.step("presence", "ok", _presence_line(found[flow.server.name], org),
                        data={t: {"state": p.state, "detail": p.detail} for t, p in found[flow.server.name].items()})
        return found

    def _state(self, org: OrgRead, presence: dict[str, dict[str, Presence]], unreachable: list[str],
               now: datetime.datetime) -> OrgAuthState:
        auth = org.auth

        def expiry(thumb: str | None) -> datetime.datetime | None:
            return next((p[thumb].not_after for p in presence.values() if thumb in p and p[thumb].not_after), None)

        def where(thumb: str | None, state: str) -> tuple[str, ...]:
            return tuple(name for name, p in presence.items() if thumb and thumb in p and p[thumb].state == state)

        next_missing = where(auth.next, "missing")
        if next_missing and auth.next_effective is not None and auth.next_effective - now > REPLICATION_GRACE:
            next_missing = ()  # the servicelet has time to copy it (module docstring)
        lost = sorted({*unreachable, *where(auth.current, "unreachable"), *where(auth.next, "unreachable")})
        current_days = days_left(expiry(auth.current), now) if auth.current else -1
        next_days = days_left(expiry(auth.next), now) if auth.next else -1
        return OrgAuthState(current=auth.current, next=auth.next, current_days=current_days, next_days=next_days,
                            current_missing=where(auth.current, "missing"), next_missing=next_missing,
                            unreachable=tuple(lost), hybrid=org.hybrid is not False)

    def server_now(self) -> datetime.datetime:
        """The home server's clock, as its lock answered a moment ago (not this agent's)."""
        return self.home.clock

    # -- acting ------------------------------------------------------------------------------------------------------
    def _act(self, read: dict[str, Any]) -> None:
        decision: Decision = read["decision"]
        state: OrgAuthState = read["state"]
        org: OrgRead = read["org"]
        home = self.home
        data: dict[str, Any] = {"row": decision.row, "action": decision.action, "current": state.current,
                "current_days": state.current_days, "next": state.next, "next_days": state.next_days,
                "hybrid": org.hybrid, "unreachable": list(state.unreachable)}
        warnings = [org.hybrid_detail] if org.hybrid is None else []
        if decision.action == "none":
            home.step("auth", "ok", decision.reason, data=data, warnings=warnings)
            return
        if decision.blocked:
            home.step("auth", "failed", f"{decision.reason}; {decision.blocked}", data=data, warnings=warnings)
            return
        if decision.action == "import":
            self._import(read, data, warnings)
            return
        now = self.server_now()
        if decision.action == "stage":
            lead = lead_time(state.current_days, self.thresholds)
            effective = effective_date(now, lead, self.thresholds)
        else:
            effective = effective_date(now, 0, self.thresholds)
        data["effective"] = iso(effective)
        if self.settings.dry_run:
            home.step("auth", "changed", f"would {_plan_line(decision, effective)} ({decision.reason})",
                        changed=True, data=data, warnings=warnings)
            return
        before = {"current": state.current, "next": state.next}
        new = state.next if decision.action == "publish" else self._create(data, read)
        if decision.action in ("stage", "replace"):
            self._change("stage", f"stage {new} effective {iso(effective)}",
                         lambda: auth_exchange.stage(home.session, str(new), effective), data)
        if decision.action in ("replace", "publish"):
            self._change("publish", f"publish {new}", lambda: auth_exchange.publish(home.session), data)
            self._change("clear previous", "clear the previous Auth certificate",
                         lambda: auth_exchange.clear_previous(home.session), data)
        after = {"current": new, "next": None} if decision.action != "stage" else {"current": state.current,
                                                                                   "next": new}
        if decision.action == "stage" and state.hybrid:
            warnings.append(self._hybrid_steps(str(new), data.get("der"), effective))
        data.pop("der", None)
        home.step("auth", "changed", f"{_done_line(decision, str(new), effective)} ({decision.reason})",
                    changed=True, before=before, after=after, data=data, warnings=warnings)
        if decision.action in ("replace", "publish"):
            self._reload_each()

    def _create(self, data: dict[str, Any], read: dict[str, Any]) -> str:
        """A new Auth certificate on the home server: ``New-ExchangeCertificate -Services None`` on the Exchange
        endpoint, or, when the current one has expired (with serialization signing on, Exchange's certificate cmdlets
        are blinded then) and this server holds it, a clone of it over WinRM (``New-SelfSignedCertificate
        -CloneCert``, legacy CSP: the back-end renewal's own fallback)."""
        home = self.home
        state: OrgAuthState = read["state"]
        here = read["presence"][home.server.name].get(state.current or "")
        if state.current_days < 0 and here is not None and here.state == "present":
            envelope = home.scripts([("clone", {"source_thumbprint": state.current, "provider": clone_step.PROVIDER,
                                                 "key_length": 2048, "hash_algorithm": clone_step.HASH_ALGORITHM,
                                                 "validity_years": clone_step.VALIDITY_YEARS, "dry_run": False})])[0]
            thumb = envelope["data"].get("new_thumbprint") if envelope["ok"] else None
            der, errors, how = None, [str(envelope["error"])] if not envelope["ok"] else [], "clone over WinRM"
        else:
            thumb, der, errors = auth_exchange.new_auth_certificate(home.session, home.server.name)
            how = "New-ExchangeCertificate -Services None"
            home.note("auth", "New-ExchangeCertificate (Auth, -Services None)", state.current, thumb,
                      "; ".join(errors) if thumb is None else None)
        if thumb is None:
            home.step("auth", "failed", f"no Auth certificate was made ({how}): "
                        + ("; ".join(errors) or "no output") + "; nothing else was changed", data=data)
            raise _Stop
        data["new_thumbprint"], data["der"], data["method"] = thumb, der, how
        return str(thumb)

    # -- import where missing (rows 4 and 5) ---------------------------------------------------------------------------
    def _import(self, read: dict[str, Any], data: dict[str, Any], warnings: list[str]) -> None:
        """Each certificate a server lacks: exported as PFX over WinRM from a reachable server that holds it, imported
        with ``Import-ExchangeCertificate -Server`` on one lacking server per AD site (the home server's Exchange
        endpoint); the others of that site get it from their servicelet (:mod:`exbe.auth_import`)."""
        home = self.home
        decision: Decision = read["decision"]
        sites, unread = auth_exchange.read_sites(home.session)
        if unread:
            warnings.append(f"Get-ExchangeServer failed ({unread}): the AD sites are unknown, so exbe imports on "
                            "every server that lacks the certificate")
        plans = auth_import.plan(decision, read["state"], read["presence"], self.flows, sites)
        data["import"] = [p.as_data() for p in plans]
        stuck = [p for p in plans if p.source is None]
        if stuck:
            home.step("auth", "failed", f"{decision.reason}; but " + "; ".join(p.no_source() for p in stuck)
                      + ": nothing was changed", data=data, warnings=warnings)
            return
        if self.settings.dry_run:
            home.step("auth", "changed", "would " + "; ".join(p.line() for p in plans) + f" ({decision.reason}); "
                      + auth_import.REPLICATION_NOTE, changed=True, data=data, warnings=warnings)
            return
        done, failed = auth_import.carry_out(plans, home, self.flows)
        data["imported"] = done
        if failed:
            home.step("auth", "failed", "; ".join(failed) + (f"; imported {auth_import.listing(done)}" if done else "")
                      + "; the Auth configuration was not changed; run `exbe auth` again", changed=bool(done),
                      data=data, warnings=warnings)
            raise _Stop
        self.waiting = {name for p in plans for name in p.waiting}
        home.step("auth", "changed", f"imported {auth_import.listing(done)} ({decision.reason}); "
                  + auth_import.REPLICATION_NOTE, changed=True, data=data, warnings=warnings)

    def _change(self, what: str, intent: str, call: Any, data: dict[str, Any]) -> None:
        errors: list[str] = call()
        self.home.note("auth", intent, None, None if errors else what, "; ".join(errors) or None)
        if errors:
            self.home.step("auth", "failed", f"Set-AuthConfig ({what}) failed: {'; '.join(errors)}; the "
                             "organization is as the journal of this server's lock says; run `exbe auth` again",
                             data={k: v for k, v in data.items() if k != "der"})
            raise _Stop

    def _hybrid_steps(self, thumb: str, der: bytes | None, effective: datetime.datetime) -> str:
        cer = Path(self.flags.cer or f"auth-next-{thumb}.cer")
        if der is not None:
            cer.write_bytes(der)
            where = f"({cer})"
        else:
            where = "(exbe could not read it: export it from the server's LocalMachine\\My)"
        return "hybrid: " + HYBRID_STEPS.format(date=iso(effective), cer=where)

    def _reload_each(self) -> None:
        """On each reachable server, one at a time: MSExchangeServiceHost restarted, the OWA and ECP app pools
        recycled (the ``reload`` step; ../shared/auth-certificate.md §3 "Replace now"). Failures are that server's
        warnings, never the run's failure: the servicelet picks the certificate up later anyway."""
        for flow in self.flows:
            if flow.run.error is None:
                _guard(flow, lambda flow=flow: _reload(flow))

    # -- verify ------------------------------------------------------------------------------------------------------
    def _verify(self, unreachable: list[str]) -> None:
        home = self.home
        home.begin("verify")
        after = self._read_quiet(unreachable)
        decision: Decision = after["decision"]
        left = decision.action != "none"
        lacking = {*decision.import_current_to, *decision.import_next_to}
        if decision.action == "import" and lacking <= self.waiting:
            left = False  # imported in their site this run: their servicelet copies it (replication takes time)
            check = CheckResult("auth_organization", "pass", f"waiting for replication: {', '.join(sorted(lacking))} "
                                f"get it from their AD site's servicelet ({auth_import.REPLICATION_NOTE})")
        else:
            check = CheckResult("auth_organization", "fail" if left else "pass",
                                (f"still to do: {decision.reason}" if left else "the organization's Auth "
                                 f"configuration needs nothing more: {decision.reason}"))
        home.step("verify", "failed" if left else "ok", check.message, checks=[check])

    def _read_quiet(self, unreachable: list[str]) -> dict[str, Any]:
        org = auth_exchange.read_org(self.home.session)
        wanted = [t for t in (org.auth.current, org.auth.next) if t]
        presence = {flow.server.name: auth_exchange.read_presence(self.home.session, flow.server.name, wanted)
                    for flow in self.flows}
        now = self.server_now() + datetime.timedelta(seconds=1)
        state = self._state(org, presence, unreachable, now)
        return {"state": state, "decision": decide(state, self.thresholds, ignore_unreachable=True,
                                                  hybrid_acknowledged=True)}


_RELOAD_LINE = (f"restart {reload_step.SERVICE} and recycle {' and '.join(reload_step.APP_POOLS)} on each server, one "
                "at a time")


def _reload(flow: AuthServer) -> None:
    """The ``reload`` step on one server, recorded; its failure is recorded as skipped with the reason as a warning."""
    started = time.monotonic()
    flow.begin("reload")
    envelope = flow.scripts([(reload_step.NAME, reload_step.plan(dry_run=False))])[0]
    result = StepResult.from_envelope(flow.server.name, envelope, time.monotonic() - started)
    if result.status == "failed":
        result = dataclasses.replace(result, status="skipped", warnings=[*result.warnings, result.message],
                                     message=f"not reloaded ({result.message}); the certificate servicelet picks the "
                                             "new Auth certificate up later (not an error)")
    flow.record(result)


def _presence_line(found: dict[str, Presence], org: OrgRead) -> str:
    names = {org.auth.current: "current", org.auth.next: "next"}
    if not found:
        return "no Auth certificate is configured"
    return "; ".join(f"{names.get(t, t)} {t[:8]} {p.state}" + (f" ({p.detail})" if p.detail else "")
                     for t, p in found.items())


def _plan_line(decision: Decision, effective: datetime.datetime) -> str:
    return {"stage": f"create an Auth certificate and stage it as next, effective {iso(effective)}",
            "replace": "create an Auth certificate, make it current now (stage, publish, clear the previous one) and "
                       f"{_RELOAD_LINE}",
            "publish": f"publish the staged next certificate now, clear the previous one and {_RELOAD_LINE}",
            }.get(decision.action, decision.action)


def _done_line(decision: Decision, thumb: str, effective: datetime.datetime) -> str:
    return {"stage": f"staged {thumb} as the next Auth certificate, effective {iso(effective)}; the servicelet "
                     "copies it to every server meanwhile (replication takes time)",
            "replace": f"{thumb} is the current Auth certificate now (staged, published, previous cleared)",
            "publish": f"published {thumb}: it is the current Auth certificate now (previous cleared)"}.get(
        decision.action, decision.action)

"""verify's organization check: the organization's Auth configuration, judged once per run (``auth_organization``).

``Get-AuthConfig`` is one object per organization (../shared/auth-certificate.md §1), so what MEAC's decision rule
(:mod:`exbe.auth_rule`) says about it is a finding about the organization, not about each server: it is reported
once, as its own record named :data:`ORGANIZATION` (a JUnit suite ``organization`` with the case
``organization: auth_organization``, classname ``exbe.organization``; the JSON record's ``organization``; the
metrics' ``server="organization"``; a line of its own in the console's findings and recap). The per-server checks
(``auth_cert``, ``auth_next``, ``auth_previous``, :mod:`exbe.checks_auth`) still say what each server holds.

**No request of its own.** It is judged after the fleet from what every server's preflight already read: each
server's ``Get-AuthConfig`` and ``Get-HybridConfiguration`` (one statement more in the one Exchange pipeline,
:func:`exbe.exchange.read_statements`: no round trip more) and each server's ``LocalMachine\\My`` over WinRM (where
the certificate must be: presence is read from the store itself, with the server's clock for days left).

**Servers that read different Auth configurations** (an inventory spanning organizations, or Active Directory not yet
replicated after a change) are judged per configuration read, each on the servers that read it; the worst judgement
is the check's, and the details list every one. A server whose preflight did not read Exchange is named as not
judged, and MEAC's rule then changes nothing (``decide``'s "unreachable").

**Hybrid** (``Get-HybridConfiguration`` answered an object; no answer counts as "maybe", the conservative reading):
exbe cannot see Entra ID, so it never says the hybrid application has a key. While a next certificate is staged the
check warns on every run that the upload is *pending* and that exbe cannot see it; once that certificate became
current (the previous one is still configured) it warns that exbe cannot see whether OAuth works and names what
proves it -- ``Test-OAuthConnectivity``, an on-premises Exchange cmdlet (Microsoft's cmdlet reference), which needs a
mailbox exbe is not given, so exbe does not run it -- until the admin clears the previous certificate, the last step
of Microsoft's safe order (stage, upload, effective date, verify, clear previous). A warning, not a skip: the
check did judge the Exchange side, and a JUnit reader counts a skipped case as "not run"; a warning passes with
``WARNING:`` in its output and ``status="warn"``, as every exbe warning does.
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from collections.abc import Callable, Sequence
from typing import Any

from .auth_rule import Decision, OrgAuthState, Thresholds, days_left, decide
from .checks_auth import REPLICATION_GRACE
from .facts import AuthConfig, ExchangeFacts, HostFacts, iso
from .model import CheckResult, CheckStatus, ServerRun, Settings, StepResult
from .organization import ORGANIZATION
from .quoting import exbe_command
from .selection import short
from .status import preflight_step_data

CHECK_ID = "auth_organization"
#: What proves OAuth works after a hybrid rollover, run by the admin with an on-premises mailbox.
OAUTH_PROOF = ("Test-OAuthConnectivity -Service EWS -TargetUri https://outlook.office365.com/ews/exchange.asmx "
               "-Mailbox <an on-premises mailbox> -Verbose")
UPLOAD = ("the Hybrid Configuration Wizard, or ConfigureExchangeHybridApplication.ps1 -UpdateCertificate")
#: The servicelet makes a staged certificate current "usually within 12 hours" of its effective date (Microsoft).
SERVICELET_LATE = datetime.timedelta(hours=12)
_RANK: dict[CheckStatus, int] = {"skip": 0, "pass": 1, "warn": 2, "fail": 3}


@dataclasses.dataclass(frozen=True)
class ServerView:
    """What one server's preflight read: its store and clock (WinRM) and Exchange's view."""

    server: str
    host: HostFacts
    exchange: ExchangeFacts


def views(runs: Sequence[ServerRun]) -> tuple[list[ServerView], list[str]]:
    """Every server whose preflight read both its store and Exchange, and the names of those that did not."""
    read, not_read = [], []
    for run in runs:
        data = preflight_step_data(run)
        if data.get("facts") and data.get("exchange"):
            read.append(ServerView(run.server, HostFacts.parse(data["facts"]),
                                   ExchangeFacts.from_dict(data["exchange"])))
        else:
            not_read.append(run.server)
    return read, not_read


def organization_run(runs: Sequence[ServerRun], settings: Settings, thresholds: Thresholds) -> ServerRun | None:
    """The organization's record of a verify run: one step, ``auth``, carrying :func:`auth_organization`; None when
    no server's Exchange endpoint was read (each server's own record says why: nothing is known of the
    organization, and a record that "passed" would say otherwise)."""
    read, not_read = views(runs)
    if not read:
        return None
    started = time.monotonic()
    run = ServerRun(server=ORGANIZATION, host="", started_at=iso(datetime.datetime.now(datetime.timezone.utc)))
    check = auth_organization(read, not_read, settings, thresholds)
    # its time as the reports write it (milliseconds): a judgement under one shows as one, never as "no time"
    run.duration_s = max(round(time.monotonic() - started, 3), 0.001)
    run.steps.append(StepResult(server=ORGANIZATION, step="auth", status="failed" if check.status == "fail" else "ok",
                                message=f"judged once for the organization: {check.status}", checks=[check],
                                duration_s=run.duration_s))
    return run


def auth_organization(read: list[ServerView], not_read: list[str], settings: Settings,
                      thresholds: Thresholds) -> CheckResult:
    """What MEAC's rule says about the organization's Auth configuration, judged on the servers that read it
    (``read``: at least one)."""
    groups: dict[AuthConfig, list[ServerView]] = {}
    for view in read:
        groups.setdefault(view.exchange.auth, []).append(view)
    judged = [_judge(group, not_read, settings, thresholds) for group in groups.values()]
    if len(judged) == 1:
        return judged[0]
    worst, group = max(zip(judged, groups.values(), strict=True), key=lambda pair: _RANK[pair[0].status])
    names = ", ".join(v.server for v in group)
    return dataclasses.replace(
        worst, message=f"{len(judged)} different Auth configurations were read (different organizations, or "
                       f"Active Directory has not replicated a change yet); the one {names} read: {worst.message}",
        details="\n".join(f"{', '.join(v.server for v in g)}: {r.message}"
                          for r, g in zip(judged, groups.values(), strict=True)))


def _judge(group: list[ServerView], not_read: list[str], settings: Settings, thresholds: Thresholds) -> CheckResult:
    auth, now = group[0].exchange.auth, group[0].host.now
    hybrid = _hybrid(group)
    state = _state(group, auth, now, not_read, hybrid)
    decision = decide(state, thresholds)
    servers = [v.server for v in group]
    value = {"row": decision.row, "action": decision.action, "current": auth.current,
             "current_days": state.current_days, "next": auth.next, "next_days": state.next_days,
             "next_effective": auth.next_effective.isoformat() if auth.next_effective else None,
             "previous": auth.previous, "hybrid": hybrid, "servers": servers, "not_judged": not_read,
             "hybrid_pending": bool(auth.next) and hybrid is not False}
    said = _describe(group, auth, state) + _not_judged(not_read)
    if decision.action != "none":
        status: CheckStatus = "fail" if decision.action != "stage" or state.current_days < settings.fail_days \
            else "warn"
        return CheckResult(CHECK_ID, status, f"{said}; MEAC's rule: {decision.reason}; "
                                             f"{_fix(decision, servers, hybrid)}", value=value)
    current = _expiry(group, auth.current)
    if auth.next and auth.next_effective and current and auth.next_effective >= current:
        return CheckResult(CHECK_ID, "fail", f"{said}; the next certificate becomes current after the current one "
                                             f"expires ({current.date()}); stage it for an earlier date: "
                                             "Set-AuthConfig -NewCertificateThumbprint "
                                             f"{auth.next} -NewCertificateEffectiveDate <a date before "
                                             f"{current.date()}>", value=value)
    if auth.next and auth.next_effective and now - auth.next_effective > SERVICELET_LATE:
        return CheckResult(CHECK_ID, "warn", f"{said}; its effective date passed more than 12 hours ago and it is "
                                             "still not current (the servicelet makes it current, usually within 12 "
                                             "hours); check MSExchangeServiceHost on the servers", value=value)
    if auth.next and hybrid is not False:
        return CheckResult(CHECK_ID, "warn", f"{said}; {_hybrid_said(group, hybrid)}: the next certificate's public "
                                             "key must be in the Exchange hybrid application in Entra ID before it "
                                             "becomes current, or hybrid free/busy and cloud archive fail; PENDING "
                                             "until it is current: exbe cannot see Entra ID, so it cannot tell "
                                             "whether the key is there; if it is not uploaded yet, upload the .cer "
                                             "that exbe auth --hybrid wrote (or one exported from LocalMachine\\My) "
                                             f"with {UPLOAD}", value=value)
    if auth.previous and auth.previous != auth.current and hybrid is not False:
        return CheckResult(CHECK_ID, "warn", f"{said}; {_hybrid_said(group, hybrid)} and {short(auth.current)} "
                                             f"became current after {short(auth.previous)}: exbe cannot see whether "
                                             "Entra ID's hybrid application has its key and does not test OAuth "
                                             "itself (Test-OAuthConnectivity needs an on-premises mailbox, which "
                                             "exbe is not given); prove it in the Exchange Management Shell with "
                                             f"{OAUTH_PROOF}, then clear the previous certificate "
                                             "(Set-AuthConfig -ClearPreviousCertificate), which ends this warning",
                           value=value)
    if auth.previous and auth.previous == auth.current:
        return CheckResult(CHECK_ID, "warn", f"{said}; the previous certificate is the current one; clear it: "
                                             "Set-AuthConfig -ClearPreviousCertificate", value=value)
    return CheckResult(CHECK_ID, "pass", f"{said}; MEAC's rule: {decision.reason}", value=value)


def _state(group: list[ServerView], auth: AuthConfig, now: datetime.datetime, not_read: list[str],
           hybrid: bool | None) -> OrgAuthState:
    """The rule's input: days left from the certificates in the servers' stores, and where each one is missing (a
    next one still inside the replication grace is not missing yet: the servicelet copies it)."""
    def lacking(thumb: str | None) -> tuple[str, ...]:
        return tuple(v.server for v in group if thumb and v.host.certificate(thumb) is None)

    copying = auth.next_effective is not None and auth.next_effective - now > REPLICATION_GRACE
    return OrgAuthState(
        current=auth.current, next=auth.next,
        current_days=days_left(_expiry(group, auth.current), now) if auth.current else -1,
        next_days=days_left(_expiry(group, auth.next), now) if auth.next else -1,
        current_missing=lacking(auth.current), next_missing=() if copying else lacking(auth.next),
        unreachable=tuple(not_read), hybrid=hybrid is not False)


def _expiry(group: list[ServerView], thumb: str | None) -> datetime.datetime | None:
    found = (v.host.certificate(thumb) for v in group)
    return next((cert.not_after for cert in found if cert is not None), None)


def _hybrid(group: list[ServerView]) -> bool | None:
    """True when any server's Get-HybridConfiguration answered an object; None when one did not answer."""
    answers = [v.exchange.hybrid for v in group]
    return True if True in answers else None if None in answers else False


def _hybrid_said(group: list[ServerView], hybrid: bool | None) -> str:
    if hybrid:
        return "this organization is hybrid (Get-HybridConfiguration answered)"
    why = next((v.exchange.unread.get("hybrid") for v in group if v.exchange.unread.get("hybrid")), "no answer")
    return f"exbe cannot tell whether this organization is hybrid ({why}), so it counts it as hybrid"


def _describe(group: list[ServerView], auth: AuthConfig, state: OrgAuthState) -> str:
    """The configuration in one clause: current, next (with its effective date), previous."""
    if not auth.current:
        parts = ["the organization's Auth configuration names no current certificate"]
    else:
        expires = _expiry(group, auth.current)
        left = ("is in no server's LocalMachine\\My" if expires is None else
                f"expired on {expires.date()}" if state.current_days < 0 else
                f"has {state.current_days} days left (until {expires.date()})")
        parts = [f"the organization's Auth certificate {short(auth.current)} {left}"]
    if auth.next:
        when = f"effective {auth.next_effective.date()}" if auth.next_effective else "with no effective date"
        parts.append(f"next {short(auth.next)} staged, {when}")
    if auth.previous and auth.previous != auth.current:
        parts.append(f"previous {short(auth.previous)} still configured")
    return ", ".join(parts) + f", judged on {len(group)} server{'s' if len(group) != 1 else ''}"


def _not_judged(not_read: list[str]) -> str:
    return f" (not judged on {', '.join(not_read)}: Exchange was not read there)" if not_read else ""


def _fix(decision: Decision, servers: list[str], hybrid: bool | None) -> str:
    """The advice: `exbe auth` for the servers that read this configuration, with --hybrid spelled out where the
    rule waits for it (the plan first, then the change)."""
    select = [("--server", name) for name in servers]
    command = exbe_command("auth", *select)
    if decision.action == "import":
        return f"import it with {command} (or it says how, where it cannot)"
    if hybrid is False or decision.action not in ("stage", "replace", "publish") or not command.endswith("`"):
        return f"fix it with {command} (its plan first: add --dry-run)"
    return (f"read the plan with {command[:-1]} --dry-run`, then run {command[:-1]} --hybrid` and upload the .cer "
            f"it writes with {UPLOAD} before the effective date it prints")


def with_organization(runner: Callable[..., list[ServerRun]], thresholds: Thresholds) -> Callable[..., list[ServerRun]]:
    """``runner`` (exbe.jobs' run_job signature: servers, task, credentials, settings, options, progress,
    concurrency) followed by the organization's record, shown on the console like a server's."""
    def run(servers: Any, task: str, credentials: Any, settings: Settings, options: Any, *rest: Any) -> list[ServerRun]:
        runs = runner(servers, task, credentials, settings, options, *rest)
        organization = organization_run(runs, settings, thresholds)
        if organization is None:
            return runs
        if options.finished is not None:
            options.finished(organization)
        return [*runs, organization]
    return run

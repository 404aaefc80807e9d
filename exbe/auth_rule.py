"""What to do about the organization's Auth certificate: MonitorExchangeAuthCertificate.ps1's decision rule, pure.

The rule, its thresholds and its day arithmetic are MEAC's (CSS-Exchange,
``Admin/MonitorExchangeAuthCertificate/DataCollection/Get-ExchangeAuthCertificateStatus.ps1``; the lead time from
``ConfigurationAction/New-ExchangeAuthCertificate.ps1``), restated in ``../shared/auth-certificate.md`` §2:

====  =================================================================  ======================================
row   condition (c, n: days left on current / next; -1 none or expired)   action
====  =================================================================  ======================================
1     c < 0 and n < 0                                                     replace: a new certificate, now
2     0 <= c <= renew_days and n <= next_min_days, nothing missing        stage a next certificate
3     c <= 0 and n >= 0                                                   replace: publish the next one now
4     otherwise, current missing on a server                              import it there
5     otherwise, next missing on a server                                 import it there
====  =================================================================  ======================================

A server whose presence could not be read (unreachable) stops every change unless the admin says to go on; in hybrid
(``Get-HybridConfiguration`` returned an object) stage and replace wait for the admin's acknowledgement, imports go
ahead.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Literal

Action = Literal["none", "stage", "replace", "publish", "import"]


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """MEAC's numbers, as settings (:class:`exbe.settings.AuthCertificateDefaults`)."""

    renew_days: int = 60
    next_min_days: int = 120
    lead_days: int = 30
    skew_minutes: int = 15


@dataclasses.dataclass(frozen=True)
class OrgAuthState:
    """What the organization read found: the configured thumbprints, the days left on each (MEAC's convention:
    -1 for none, unreadable or expired today), and per server what is missing or could not be read."""

    current: str | None
    next: str | None
    current_days: int
    next_days: int
    current_missing: tuple[str, ...] = ()
    next_missing: tuple[str, ...] = ()
    unreachable: tuple[str, ...] = ()
    hybrid: bool = False


@dataclasses.dataclass(frozen=True)
class Decision:
    """The rule's answer: ``action`` and the MEAC table ``row`` that chose it (None: nothing to do), why, where to
    import, and ``blocked``: why exbe must not act now (unreachable servers, hybrid not acknowledged), "" when free."""

    action: Action
    row: int | None
    reason: str
    import_current_to: tuple[str, ...] = ()
    import_next_to: tuple[str, ...] = ()
    blocked: str = ""

    @property
    def changes(self) -> bool:
        """Whether carrying the decision out changes the organization."""
        return self.action != "none" and not self.blocked


def days_left(not_after: datetime.datetime | None, now: datetime.datetime) -> int:
    """Days left as MEAC counts them: .NET's ``TimeSpan.Days`` (truncated towards zero); a certificate whose
    ``NotAfter`` date is today or earlier and that comes out at 0 counts -1 (expired today); none counts -1."""
    if not_after is None:
        return -1
    span = not_after - now
    days = int(span.total_seconds() / 86400)  # truncation towards zero, as TimeSpan.Days
    if not_after.date() <= now.date():  # MEAC's `NotAfter.Date -lt (Get-Date)`: the expiry day has begun
        return -1 if days == 0 else days
    return days


def decide(state: OrgAuthState, thresholds: Thresholds, *, ignore_unreachable: bool = False,
           hybrid_acknowledged: bool = False) -> Decision:
    """MEAC's rule on ``state`` (see the module's table)."""
    c, n = state.current_days, state.next_days
    missing = bool(state.current_missing or state.next_missing)
    if c < 0 and n < 0:
        decision = Decision("replace", 1, "the current Auth certificate "
                            + ("is not configured" if not state.current else "has expired or cannot be read")
                            + " and no usable next certificate is staged: a new one becomes current now")
    elif 0 <= c <= thresholds.renew_days and n <= thresholds.next_min_days and not missing:
        staged = ("no next certificate is staged" if n < 0 else
                  f"the staged next certificate has only {n} days left (threshold {thresholds.next_min_days})")
        decision = Decision("stage", 2, f"the current Auth certificate has {c} days left (threshold "
                                        f"{thresholds.renew_days}) and {staged}: stage a next certificate")
    elif c <= 0 and n >= 0:
        decision = Decision("publish", 3, "the current Auth certificate has expired and the next one is staged but "
                                          "not yet current: publish it now")
    elif missing:
        parts = []
        if state.current_missing:
            parts.append(f"the current Auth certificate is missing on {', '.join(state.current_missing)}")
        if state.next_missing:
            parts.append(f"the next Auth certificate is missing on {', '.join(state.next_missing)}")
        decision = Decision("import", 4 if state.current_missing else 5, "; ".join(parts) + ": import it there",
                            import_current_to=state.current_missing, import_next_to=state.next_missing)
    else:
        decision = Decision("none", None, f"the current Auth certificate has {c} days left"
                            + (f" and the next one {n}" if n >= 0 else "") + "; nothing to do")
    return dataclasses.replace(decision, blocked=_blocked(decision, state, ignore_unreachable, hybrid_acknowledged))


def _blocked(decision: Decision, state: OrgAuthState, ignore_unreachable: bool, hybrid_acknowledged: bool) -> str:
    if decision.action == "none":
        return ""
    if state.unreachable and not ignore_unreachable:
        return (f"{', '.join(state.unreachable)} could not be read, so exbe cannot tell what the Auth certificate's "
                "state is there: nothing was changed; fix the connection, or pass --ignore-unreachable")
    if state.hybrid and decision.action in ("stage", "replace", "publish") and not hybrid_acknowledged:
        return ("this organization is hybrid (Get-HybridConfiguration answered): the next Auth certificate's public "
                "key must reach the Entra application (Hybrid Configuration Wizard, or "
                "ConfigureExchangeHybridApplication.ps1 -UpdateCertificate) before it becomes current; nothing was "
                "changed; pass --hybrid to stage it and get the .cer and the steps")
    return ""


def lead_time(current_days: int, thresholds: Thresholds) -> int:
    """Days from now to the next certificate's effective date: ``lead_days``, or when the current one expires
    before that (fewer than ``lead_days + 2`` days left) 4, 2 or 0 days, the first that still falls before its
    expiry -- MEAC's ConfigureNextAuthCertificate."""
    if current_days >= thresholds.lead_days + 2:
        return thresholds.lead_days
    for days in (4, 2):
        if current_days - days > 0:
            return days
    return 0


def effective_date(server_now: datetime.datetime, days: int, thresholds: Thresholds) -> datetime.datetime:
    """The next certificate's effective date: ``days`` after **the server's** clock, never less than the skew
    margin after it (Set-AuthConfig refuses a date that is not later than its own clock: CSS-Exchange PR #1888)."""
    return server_now + max(datetime.timedelta(days=days), datetime.timedelta(minutes=thresholds.skew_minutes))

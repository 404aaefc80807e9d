"""verify's Auth certificate checks beyond ``auth_cert`` (which judges the current one: present, days left): the
next certificate (present on this server, staged in time) and the previous one. Read from this server's
``Get-AuthConfig`` (the organization's one object) and its ``LocalMachine\\My``; the fix is always `exbe auth`.

MEAC's rule (exbe.auth_rule) stages a next certificate when the current one has ``warn_days`` (60) days or fewer
left; the servicelet copies a staged certificate to every server (KB 2617816: within an hour), so a next certificate
not here yet is a warning while its effective date is more than :data:`exbe.jobs.auth.REPLICATION_GRACE` away and a
failure after that.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING

from .model import CheckResult, CheckStatus
from .selection import short

if TYPE_CHECKING:
    from .checks import _Context

#: As exbe.jobs.auth.REPLICATION_GRACE (the job imports the flow; the checks must not).
REPLICATION_GRACE = datetime.timedelta(hours=48)


def auth_next(ctx: _Context) -> CheckResult:
    skipped = ctx.no_exchange("auth_next", "the next Auth certificate")
    if skipped:
        return skipped
    assert ctx.exchange is not None
    auth, server, now = ctx.exchange.auth, ctx.server, ctx.facts.now
    current = ctx.facts.certificate(auth.current)
    days = ctx.days(current) if current is not None else None
    if not auth.next:
        if days is not None and 0 < days <= ctx.settings.warn_days:
            return CheckResult("auth_next", "warn", f"{server}: the Auth certificate has {days} days left and no "
                                                    "next one is staged; stage one with `exbe auth`", value=days)
        return CheckResult("auth_next", "pass", f"{server}: no next Auth certificate staged (none needed yet)")
    effective = auth.next_effective
    when = f"effective {effective.date()}" if effective else "with no effective date"
    staged = ctx.facts.certificate(auth.next)
    if staged is None:
        if effective is not None and effective - now > REPLICATION_GRACE:
            return CheckResult("auth_next", "warn", f"{server}: the next Auth certificate {short(auth.next)} ({when}) "
                                                    "is not in LocalMachine\\My yet; the servicelet copies it (KB "
                                                    "2617816); if it stays missing, `exbe auth` says how to import it",
                               value=auth.next)
        return CheckResult("auth_next", "fail", f"{server}: the next Auth certificate {short(auth.next)} ({when}) is "
                                                "not in LocalMachine\\My; it becomes current soon and OWA/ECP fail "
                                                "here without it: `exbe auth`", value=auth.next)
    if ctx.days(staged) <= 0:
        return CheckResult("auth_next", "fail", f"{server}: the staged next Auth certificate {short(auth.next)} has "
                                                "expired; stage a new one with `exbe auth`", value=auth.next)
    if current is not None and effective is not None and effective >= current.not_after:
        return CheckResult("auth_next", "fail", f"{server}: the next Auth certificate {short(auth.next)} becomes "
                                                f"current on {effective.date()}, after the current one expires "
                                                f"({current.not_after.date()}); `exbe auth` publishes it now",
                           value=auth.next)
    return CheckResult("auth_next", "pass", f"{server}: the next Auth certificate {short(auth.next)} is here, {when}",
                       value=auth.next)


def auth_previous(ctx: _Context) -> CheckResult:
    skipped = ctx.no_exchange("auth_previous", "the previous Auth certificate")
    if skipped:
        return skipped
    assert ctx.exchange is not None
    auth, server = ctx.exchange.auth, ctx.server
    if not auth.previous:
        return CheckResult("auth_previous", "pass", f"{server}: no previous Auth certificate is configured")
    if auth.previous == auth.current:
        return CheckResult("auth_previous", "warn", f"{server}: the previous Auth certificate is the current one "
                                                    f"({short(auth.previous)}); clear it (Set-AuthConfig "
                                                    "-ClearPreviousCertificate)", value=auth.previous)
    return CheckResult("auth_previous", "pass", f"{server}: the previous Auth certificate {short(auth.previous)} is "
                                                "still configured, as the servicelet leaves it after a rollover",
                       value=auth.previous)


def federation_cert(ctx: _Context) -> CheckResult:
    """The Federation trust's certificate (``Get-FederationTrust``): days left with verify's thresholds, whether a
    next one is staged, and whether it has reached this server (what ``Test-FederationTrustCertificate`` reports
    per server)."""
    skipped = ctx.no_exchange("federation_cert", "the Federation certificate")
    if skipped:
        return skipped
    assert ctx.exchange is not None
    trust, server = ctx.exchange.federation, ctx.server
    if trust is None or not trust.current:
        return CheckResult("federation_cert", "pass", f"{server}: no Federation trust is configured")
    if trust.current_not_after is None:
        return CheckResult("federation_cert", "skip", f"{server}: the Federation certificate {short(trust.current)}'s "
                                                      "expiry could not be read", value=trust.current)
    days = (trust.current_not_after - ctx.facts.now).days
    if days <= 0:
        return CheckResult("federation_cert", "fail", f"{server}: the Federation certificate {short(trust.current)} "
                                                      f"expired on {trust.current_not_after.date()}: the trust must be "
                                                      "created again (`exbe federation` prints Microsoft's procedure)",
                           value=days)
    if trust.next:
        if ctx.facts.certificate(trust.next) is None:
            return CheckResult("federation_cert", "warn", f"{server}: the next Federation certificate "
                                                          f"{short(trust.next)} is staged but not on this server yet; "
                                                          "`exbe federation --publish` waits for it", value=days)
        return CheckResult("federation_cert", "pass", f"{server}: the Federation certificate {short(trust.current)} "
                                                      f"has {days} days left; the next one {short(trust.next)} is "
                                                      "staged and here (publish: `exbe federation --publish`)",
                           value=days)
    if days < ctx.settings.warn_days:
        status: CheckStatus = "fail" if days < ctx.settings.fail_days else "warn"
        return CheckResult("federation_cert", status, f"{server}: the Federation certificate {short(trust.current)} "
                                                      f"expires in {days} days and no next one is staged; "
                                                      "`exbe federation` stages one", value=days)
    return CheckResult("federation_cert", "pass", f"{server}: the Federation certificate {short(trust.current)} "
                                                  f"expires in {days} days", value=days)

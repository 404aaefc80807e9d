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

from .model import CheckResult
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

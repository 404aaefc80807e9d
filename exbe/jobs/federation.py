"""`exbe federation`: the Federation trust's certificate, before it expires (Microsoft's two-phase renewal,
``../shared/auth-certificate.md`` §5). Never the expired case: the trust must then be removed and created again,
which is disruptive and a human's job; exbe refuses with Microsoft's procedure.

1. **lock** every selected server (as `exbe auth`), 2. **read** ``Get-FederationTrust`` and
``Test-FederationTrustCertificate`` on the first selected server's Exchange endpoint, 3. **stage** a next certificate
when the current one has ``renew_days`` or fewer left and none is staged (``New-ExchangeCertificate -Services
Federation`` with a new subject key identifier, ``Set-FederationTrust -Thumbprint``), 4. print the domain proof
(``Get-FederatedDomainProof``: the TXT record the admin publishes in public DNS), 5. with ``--publish``, and only
once every server holds the next certificate, ``Set-FederationTrust -PublishFederationCertificate``.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from .. import auth_exchange
from ..auth_exchange import ReadFailed
from ..auth_rule import days_left
from ..facts import FederationFacts, iso
from ..fleet import Progress, RunOptions
from ..model import CheckResult, CheckStatus, ServerRun, Settings
from .auth import AuthServer, _Stop, organization_run
from .flags import JobFlags

if TYPE_CHECKING:
    from ..config import Credentials
    from ..inventory import Server

EXPIRED_PROCEDURE = ("the Federation certificate {thumb} expired on {date}: it cannot be renewed in place. Microsoft's "
                     "procedure: remove the federation trust (Remove-FederationTrust), create a new self-signed "
                     "Federation certificate, create the trust again (New-FederationTrust), add the federated "
                     "domains back with their DNS TXT proofs (Get-FederatedDomainProof), and run the Hybrid "
                     "Configuration Wizard if the organization is hybrid; exbe does not automate it")


def run_federation(servers: list[Server], task: str, credentials: Credentials, settings: Settings,
                   options: RunOptions, progress: Progress, concurrency: int, *, flags: JobFlags) -> list[ServerRun]:
    """`exbe federation` over ``servers`` (the first one reads and changes the trust): one record per server."""
    def body(flows: list[AuthServer], locked: list[bool]) -> None:
        if all(locked):
            _Federation(flows, settings, flags).guarded()
        elif locked[0]:
            flows[0].step("federation", "failed", "not changed: "
                          + ", ".join(f.server.name for f, ok in zip(flows, locked, strict=True) if not ok)
                          + " could not be locked or reached")

    return organization_run(servers, task, credentials, settings, options, progress, concurrency, body)


class _Federation:
    def __init__(self, flows: list[AuthServer], settings: Settings, flags: JobFlags) -> None:
        self.flows, self.home, self.settings, self.flags = flows, flows[0], settings, flags

    def guarded(self) -> None:
        from .auth import _guard

        _guard(self.home, self.run)

    def run(self) -> None:
        home = self.home
        home.begin("federation")
        now = home.clock
        try:
            trust = auth_exchange.read_federation(home.session)
        except ReadFailed as exc:
            home.step("federation", "failed", f"the Federation trust could not be read: {exc}")
            return
        if trust is None:
            home.step("federation", "ok", "this organization has no Federation trust; nothing to do")
            return
        current_days = days_left(trust.current_not_after, now) if trust.current else -1
        check = self._check(trust, current_days)
        data: dict[str, Any] = {"current": trust.current, "current_days": current_days, "next": trust.next,
                                "previous": trust.previous}
        if trust.current and current_days < 0:
            home.step("federation", "failed", EXPIRED_PROCEDURE.format(
                thumb=trust.current, date=trust.current_not_after.date() if trust.current_not_after else "unknown"),
                data=data, checks=[check])
            return
        proofs = self._proofs()
        if trust.next:
            self._publish_when_ready(trust, data, check, proofs)
            return
        if current_days > self.flags.thresholds.renew_days:
            home.step("federation", "ok", f"the Federation certificate {trust.current} has {current_days} days left "
                        f"(threshold {self.flags.thresholds.renew_days}); nothing to do", data=data, checks=[check],
                        warnings=proofs)
            return
        if self.settings.dry_run:
            home.step("federation", "changed", f"would create a Federation certificate on {home.server.name} and "
                        "stage it as the trust's next certificate (Set-FederationTrust -Thumbprint); then publish the "
                        "new domain proof in DNS and run `exbe federation --publish` once every server has it",
                        changed=True, data=data, checks=[check], warnings=proofs)
            return
        thumb, _, errors = auth_exchange.new_federation_certificate(home.session, home.server.name,
                                                                    uuid.uuid4().hex)
        home.note("federation", "New-ExchangeCertificate (Federation)", trust.current, thumb,
                  "; ".join(errors) if thumb is None else None)
        if thumb is None:
            home.step("federation", "failed", "New-ExchangeCertificate made no Federation certificate: "
                        + ("; ".join(errors) or "no output"), data=data, checks=[check])
            raise _Stop
        errors = auth_exchange.stage_federation(home.session, thumb)
        home.note("federation", f"Set-FederationTrust -Thumbprint {thumb}", trust.next, None if errors else thumb,
                  "; ".join(errors) or None)
        if errors:
            home.step("federation", "failed", f"Set-FederationTrust -Thumbprint {thumb} failed: {'; '.join(errors)}",
                        data=data, checks=[check])
            raise _Stop
        data["next"] = thumb
        home.step("federation", "changed", f"staged {thumb} as the Federation trust's next certificate; publish "
                    "its domain proof in public DNS (below), wait until every server has it, then run `exbe "
                    "federation --publish`", changed=True, data=data, checks=[check], warnings=self._proofs())

    def _check(self, trust: FederationFacts, current_days: int) -> CheckResult:
        """The Federation certificate's expiry, as verify judges a certificate (warn_days / fail_days)."""
        when = f"{current_days} days left" + (f", next {trust.next} staged" if trust.next else "")
        if current_days < self.settings.fail_days:
            return CheckResult("federation_cert", "fail", f"the Federation certificate {trust.current}: {when}",
                               value=current_days)
        status: CheckStatus = "warn" if current_days < self.settings.warn_days and not trust.next else "pass"
        return CheckResult("federation_cert", status, f"the Federation certificate {trust.current}: {when}",
                           value=current_days)

    def _proofs(self) -> list[str]:
        """The TXT records to publish (one per certificate of the trust), when a domain was named."""
        if not self.flags.domain:
            return ["name the federated domain with --domain to see its DNS TXT proof (Get-FederatedDomainProof)"]
        return [f"DNS TXT for {self.flags.domain} (certificate {p['thumbprint']}): {p['dns_record'] or p['proof']}"
                for p in auth_exchange.domain_proofs(self.home.session, self.flags.domain)]

    def _publish_when_ready(self, trust: FederationFacts, data: dict[str, Any], check: CheckResult,
                            proofs: list[str]) -> None:
        home = self.home
        assert trust.next is not None
        states = auth_exchange.federation_propagation(home.session)
        lacking = sorted(server for (server, thumb), state in states.items()
                         if thumb == trust.next and state != "Installed")
        ready = bool(states) and not lacking
        data["propagation"] = {server: state for (server, thumb), state in states.items() if thumb == trust.next}
        if not self.flags.publish or not ready:
            why = ("not on " + ", ".join(lacking) + " yet (Test-FederationTrustCertificate)" if lacking
                   else "on every server" if ready else "propagation unknown (Test-FederationTrustCertificate "
                                                        "answered nothing)")
            todo = "run `exbe federation --publish`" if ready else "wait, then run `exbe federation --publish`"
            home.step("federation", "ok", f"the next Federation certificate {trust.next} is staged and {why}; "
                        f"{todo}", data=data, checks=[check], warnings=proofs)
            return
        if self.settings.dry_run:
            home.step("federation", "changed", f"would publish {trust.next} (Set-FederationTrust "
                        "-PublishFederationCertificate)", changed=True, data=data, checks=[check], warnings=proofs)
            return
        errors = auth_exchange.publish_federation(home.session)
        home.note("federation", f"publish {trust.next}", trust.current, None if errors else trust.next,
                  "; ".join(errors) or None)
        if errors:
            home.step("federation", "failed", f"publishing {trust.next} failed: {'; '.join(errors)}", data=data,
                        checks=[check])
            return
        home.step("federation", "changed", f"published {trust.next}: it signs the trust's tokens now (at "
                    f"{iso(home.clock)})", changed=True, before={"current": trust.current},
                    after={"current": trust.next}, data=data, checks=[check])

"""What to change, decided from typed facts: renew or not, with what, what to bind, what may be removed.

Pure functions over :class:`~exbe.facts.HostFacts` and :class:`~exbe.facts.ExchangeFacts` (None when the Exchange
endpoint could not be used). Nothing here talks to a server.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any, Literal

from .facts import Certificate, ExchangeFacts, HostFacts, normalise_thumbprint
from .model import Settings
from .selection import (
    AUTH_SUBJECT,
    BACKEND_PORT,
    MIN_KEY_SIZE,
    SelectionError,
    backend_binding,
    exchange_blinded,
    ip_specific_444,
    loopback_binding,
    new_exchange_key_size,
    remove_binding_command,
    select_backend,
    self_signed_exchange_certs,
    weak_signature,
)

#: The key storage provider of a clone: Exchange does not support CNG keys for OWA/ECP (KB 3032024); CSS-Exchange
#: forces this legacy CSP for certificates Exchange uses.
CLONE_PROVIDER = "Microsoft RSA SChannel Cryptographic Provider"
CLONE_HASH_ALGORITHM = "SHA256"
VALIDITY_YEARS = 5


def renew_reasons(cert: Certificate, facts: HostFacts, settings: Settings) -> list[str]:
    """Why the certificate must be renewed; an empty list means it need not be."""
    reasons = []
    days = facts.days_left(cert)
    if days < settings.days:
        reasons.append(f"expired {-days} days ago" if days < 0 else f"{days} days left (< {settings.days})")
    if weak_signature(cert):
        reasons.append(f"{cert.signature_algorithm} signature")
    if cert.key_size < MIN_KEY_SIZE:
        reasons.append(f"{cert.key_size}-bit key (< {MIN_KEY_SIZE})")
    if cert.provider_type == "CNG":
        reasons.append(f"CNG key ({cert.provider}; Exchange needs a legacy CSP, KB 3032024)")
    if not cert.has_private_key:
        reasons.append("no private key")
    elif cert.key_accessible is False:
        reasons.append("private key cannot be opened")
    if settings.force:
        reasons.append("forced")
    return reasons


def staged_replacement(facts: HostFacts, selected: Certificate, settings: Settings) -> str | None:
    """An unbound certificate a previous, interrupted run already created for this one, to be reused rather than
    creating another: same subject, later NotAfter, and nothing ``renew_reasons`` would object to."""
    unforced = dataclasses.replace(settings, force=False)
    usable = [
        c for c in self_signed_exchange_certs(facts, settings.friendly_name)
        if c.thumbprint != selected.thumbprint and c.subject == selected.subject
        and c.not_after > selected.not_after and not renew_reasons(c, facts, unforced)
        and facts.days_left(c) > settings.days and c.provider_type == "CSP" and not facts.bindings_of(c.thumbprint)
    ]
    return max(usable, key=lambda c: c.not_after).thumbprint if usable else None


def renew_method(facts: HostFacts, exchange: ExchangeFacts | None) -> Literal["exchange", "clone"]:
    """Exchange's own way (New-ExchangeCertificate -Services None) unless the endpoint is unavailable or blinded by
    serialization signing with an expired Auth certificate; then a clone over WinRM."""
    if exchange is None or exchange_blinded(facts, exchange):
        return "clone"
    return "exchange"


def new_exchange_certificate_params(selected: Certificate | None, facts: HostFacts, exchange: ExchangeFacts | None,
                                    *, friendly_name: str) -> dict[str, Any]:
    """Parameters of a self-signed New-ExchangeCertificate replacing ``selected`` (None: a fresh one, as in
    KB 2779694). ``Services None``: nothing is re-pointed, SMTP is not taken over, and nothing prompts."""
    server = exchange.server.name if exchange and exchange.server and exchange.server.name else facts.computer_name
    subject = selected.subject if selected and selected.subject else f"CN={facts.computer_name}"
    names = list(selected.dns_names) if selected and selected.dns_names else [facts.computer_name, facts.fqdn]
    return {
        "Server": server,
        "SubjectName": subject,
        "DomainName": names,
        "FriendlyName": friendly_name,
        "KeySize": new_exchange_key_size(selected.key_size if selected else 0),
        "PrivateKeyExportable": True,
        "Services": "None",
    }


def clone_input(selected: Certificate, dry_run: bool) -> dict[str, Any]:
    """The ``clone`` step's input: same subject and names, a new key of at least 2048 bits in a legacy CSP."""
    return {"source_thumbprint": selected.thumbprint, "provider": CLONE_PROVIDER,
            "key_length": max(MIN_KEY_SIZE, selected.key_size), "hash_algorithm": CLONE_HASH_ALGORITHM,
            "validity_years": VALIDITY_YEARS, "dry_run": dry_run}


def created_certificate(before: HostFacts, after: HostFacts, settings: Settings) -> list[str]:
    """Self-signed back-end candidates in My after a creation that were not there before: how exbe names the
    certificate New-ExchangeCertificate made when its output carried no usable thumbprint."""
    known = {c.thumbprint for c in before.certificates}
    return [c.thumbprint for c in self_signed_exchange_certs(after, settings.friendly_name)
            if c.thumbprint not in known]


def bind_input(facts: HostFacts, new_thumbprint: str, settings: Settings) -> dict[str, Any]:
    """The ``bind`` step's input: the exact binding texts found by meaning. The loopback binding moves only when it
    carries the old back-end certificate; the Default Web Site's public 443 binding is never part of it."""
    old = _old_backend(facts, settings)
    backend = backend_binding(facts, settings)
    loopback = loopback_binding(facts, settings)
    new = normalise_thumbprint(new_thumbprint)
    moves_loopback = loopback is not None and loopback.certificate_hash is not None \
        and loopback.certificate_hash == old and loopback.certificate_hash != new
    return {
        "thumbprint": new,
        "backend_site": settings.backend_site,
        "frontend_site": settings.frontend_site,
        "backend_binding": backend.information if backend else None,
        "loopback_binding": loopback.information if loopback and moves_loopback else None,
        "loopback_from": loopback.certificate_hash if loopback and moves_loopback else None,
        "dry_run": settings.dry_run,
    }


def unconverged(facts: HostFacts, thumbprint: str, settings: Settings, *, trust: bool, bind: bool) -> list[str]:
    """What is still to do after trust/bind, read from fresh facts: empty when the server converged (the plan after
    apply is empty), else each difference in words."""
    left = []
    wanted = normalise_thumbprint(thumbprint)
    if trust and not facts.in_root(wanted):
        left.append(f"{wanted} is not in LocalMachine\\Root")
    if bind:
        binding = backend_binding(facts, settings)
        carried = binding.certificate_hash if binding else None
        if carried != wanted:
            left.append(f"{settings.backend_site} 444 carries {carried or 'no certificate'}, not {wanted}")
    return left


def bind_blockers(facts: HostFacts) -> list[str]:
    """Reasons to stop before binding anything. An IP-specific 444 binding fails under Extended Protection
    (SEC_E_BAD_BINDINGS); exbe does not remove it by itself, it says how."""
    return [
        f"IP-specific 444 binding {b.information} on {b.site} (HealthChecker flags it; with Extended Protection it "
        f"fails with SEC_E_BAD_BINDINGS); remove it first: {remove_binding_command(b)}"
        for b in ip_specific_444(facts)]


@dataclasses.dataclass(frozen=True)
class CleanupPlan:
    """``refused``: cleanup must not run on this server (a failure); ``waiting``: not yet (min age), not a failure."""

    remove: list[str]  # thumbprints; the cleanup step removes them from My and Root
    kept: list[tuple[str, str]]  # (thumbprint, why it stays)
    refused: str | None = None
    waiting: str | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)


def cleanup_candidates(facts: HostFacts, exchange: ExchangeFacts | None, settings: Settings, *,
                       switched_at: datetime.datetime | None) -> CleanupPlan:
    """Superseded self-signed back-end certificates (and Root copies) that nothing uses any more.

    Kept: anything bound (any https binding of either site), assigned to an Exchange service, the internal
    transport certificate, the current or next Auth certificate, anything whose assignments are unknown (the
    Exchange endpoint unavailable, blinded, or refusing the projection that reads them), and anything not older than
    the bound certificate (a staged replacement). Nothing is removed before ``min_age_days`` have passed since the
    switch (``switched_at``, this run's switch; default the bound certificate's NotBefore).
    """
    binding = backend_binding(facts, settings)
    bound = facts.certificate(binding.certificate_hash if binding else None)
    if bound is None:
        return CleanupPlan([], [], refused=f"{settings.backend_site} carries no certificate of LocalMachine\\My on "
                                            "its 444 binding; bind one before cleaning up")
    if bound.thumbprint not in {c.thumbprint for c in self_signed_exchange_certs(facts, settings.friendly_name)}:
        return CleanupPlan([], [], refused=(
            f"{settings.backend_site} 444 carries {bound.thumbprint}, which is not a self-signed "
            f"'{settings.friendly_name}' certificate, so nothing of that kind is superseded"))
    if switched_at is not None and (facts.now - switched_at) < datetime.timedelta(days=settings.min_age_days):
        return CleanupPlan([], [], waiting=(
            f"this run switched to {bound.thumbprint}; its predecessors are removed by a cleanup run at least "
            f"{settings.min_age_days} days from now (--min-age)"))
    age = (facts.now - (switched_at or bound.not_before)).days
    if age < settings.min_age_days:
        return CleanupPlan([], [], waiting=f"the switch to {bound.thumbprint} was {age} day(s) ago; cleanup waits "
                                           f"{settings.min_age_days} days (--min-age)")

    unknown = _assignments_unknown(facts, exchange)
    protected: dict[str | None, str] = {}
    if exchange is not None:
        protected = {exchange.internal_transport: "internal transport certificate",
                     exchange.auth.current: "current Auth certificate", exchange.auth.next: "next Auth certificate"}
    remove: list[str] = []
    kept: list[tuple[str, str]] = []
    for cert in self_signed_exchange_certs(facts, settings.friendly_name):
        if cert.thumbprint == bound.thumbprint:
            continue
        reason = _keep_reason(facts, cert, bound, exchange, protected, unknown)
        if reason:
            kept.append((cert.thumbprint, reason))
        else:
            remove.append(cert.thumbprint)
    in_my = {c.thumbprint for c in facts.certificates}
    for root in facts.root:  # Root copies left behind by certificates already gone from My: no service uses them
        if (root.thumbprint not in in_my and root.subject == bound.subject and root.thumbprint not in protected
                and not facts.bindings_of(root.thumbprint) and root.not_after < bound.not_after
                and root.subject.upper() != AUTH_SUBJECT.upper()):
            remove.append(root.thumbprint)
    warnings = [f"service assignments unknown ({unknown}): superseded certificates are kept"] \
        if unknown and kept else []
    return CleanupPlan(remove=remove, kept=kept, warnings=warnings)


def _assignments_unknown(facts: HostFacts, exchange: ExchangeFacts | None) -> str:
    if exchange is None:
        return "the Exchange endpoint is not available"
    return exchange_blinded(facts, exchange) or exchange.assignments_unknown


def _keep_reason(facts: HostFacts, cert: Certificate, bound: Certificate, exchange: ExchangeFacts | None,
                 protected: dict[str | None, str], unknown: str) -> str | None:
    where = facts.bindings_of(cert.thumbprint)
    if where:
        return f"bound to {', '.join(b.label for b in where)}"
    if cert.thumbprint in protected:
        return protected[cert.thumbprint]
    if unknown:
        return f"its service assignment is unknown: {unknown}"
    listed = exchange.certificate(cert.thumbprint) if exchange else None
    if listed is None:
        return "Exchange did not report it, so its service assignment is unknown"
    if listed.services is None:
        return "its service assignment is unknown"
    if listed.services:
        return f"assigned to {', '.join(listed.services)}"
    if cert.not_after >= bound.not_after:
        return f"not superseded: expires after the bound certificate {bound.thumbprint}"
    return None


def _old_backend(facts: HostFacts, settings: Settings) -> str | None:
    """The certificate being replaced: the one on the 444 binding (even when My lacks it), else the selected one."""
    binding = backend_binding(facts, settings)
    if binding and binding.certificate_hash:
        return binding.certificate_hash
    try:
        return select_backend(facts, settings).thumbprint
    except SelectionError:
        return None

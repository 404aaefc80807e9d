"""What to change, decided from collected facts: renew or not, with what, what to bind, what may be removed.

Pure functions over the facts document (``exbe.contract``) and the Exchange facts (``exbe.exchange.normalise``;
None when the Exchange endpoint could not be used). Nothing here talks to a server.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any, Literal

from .model import Settings
from .select import (
    BACKEND_BINDING,
    LOOPBACK_BINDING,
    SelectionError,
    bindings_of,
    bound_hash,
    certificate,
    days_left,
    exchange_certificates_unavailable,
    find_binding,
    ip_specific_444,
    normalise,
    parse_time,
    select_backend,
    self_signed_exchange_certs,
    weak_signature,
)

MIN_KEY_SIZE = 2048


def renew_reasons(cert: dict[str, Any], facts_now: str | datetime.datetime, settings: Settings) -> list[str]:
    """Why the certificate must be renewed; an empty list means it need not be."""
    reasons = []
    days = days_left(cert, facts_now)
    if days < settings.days:
        reasons.append(f"expired {-days} days ago" if days < 0 else f"{days} days left (< {settings.days})")
    if weak_signature(cert):
        reasons.append(f"{cert['signature_algorithm']} signature")
    if int(cert.get("key_size") or 0) < MIN_KEY_SIZE:
        reasons.append(f"{cert.get('key_size')}-bit key (< {MIN_KEY_SIZE})")
    if cert.get("provider_type") == "CNG":
        reasons.append(f"CNG key ({cert.get('provider')}; Exchange needs a legacy CSP, KB 3032024)")
    if not cert.get("has_private_key"):
        reasons.append("no private key")
    elif cert.get("key_accessible") is False:
        reasons.append("private key cannot be opened")
    if settings.force:
        reasons.append("forced")
    return reasons


def staged_replacement(facts: dict[str, Any], selected: dict[str, Any], settings: Settings) -> str | None:
    """An unbound certificate a previous, interrupted run already created for this one, to be reused rather than
    creating another: same subject, later NotAfter, and nothing ``renew_reasons`` would object to."""
    usable = [
        c for c in self_signed_exchange_certs(facts, settings.friendly_name)
        if normalise(c["thumbprint"]) != normalise(selected["thumbprint"])
        and c.get("subject") == selected.get("subject")
        and parse_time(c["not_after"]) > parse_time(selected["not_after"])
        and not renew_reasons(c, facts["now"], dataclasses.replace(settings, force=False))
        and days_left(c, facts["now"]) > settings.days
        and c.get("provider_type") == "CSP"
        and not bindings_of(facts, c["thumbprint"])
    ]
    if not usable:
        return None
    return max(usable, key=lambda c: parse_time(c["not_after"]))["thumbprint"]


def renew_method(exchange: dict[str, Any] | None, facts: dict[str, Any]) -> Literal["exchange", "clone"]:
    """Exchange's own way (New-ExchangeCertificate -Services None) unless the endpoint is unavailable or blinded by
    serialization signing with an expired Auth certificate; then a clone over WinRM."""
    if exchange is None or exchange_certificates_unavailable(facts, exchange):
        return "clone"
    return "exchange"


def new_exchange_certificate_params(selected_cert: dict[str, Any] | None, facts: dict[str, Any],
                                    exchange: dict[str, Any] | None, *,
                                    friendly_name: str = "Microsoft Exchange") -> dict[str, Any]:
    """Parameters of a self-signed New-ExchangeCertificate replacing ``selected_cert`` (None: a fresh one, as in
    KB 2779694). ``Services None``: nothing is re-pointed, SMTP is not taken over, and nothing prompts."""
    computer = facts["computer"]
    server = (exchange or {}).get("server") or {}
    subject = (selected_cert or {}).get("subject") or f"CN={computer['name']}"
    names = list((selected_cert or {}).get("dns_names") or []) or [computer["name"], computer["fqdn"]]
    return {
        "Server": server.get("name") or computer["name"],
        "SubjectName": subject,
        "DomainName": names,
        "FriendlyName": friendly_name,
        "KeySize": max(MIN_KEY_SIZE, int((selected_cert or {}).get("key_size") or 0)),
        "PrivateKeyExportable": True,
        "Services": "None",
    }


def bind_input(facts: dict[str, Any], new_thumbprint: str, settings: Settings) -> dict[str, Any]:
    """The ``bind`` step's input. ``127.0.0.1:443`` moves only when it carries the old back-end certificate; the
    Default Web Site's ``*:443:`` is never part of it."""
    old = _old_backend(facts, settings)
    loopback = bound_hash(find_binding(facts, settings.frontend_site, LOOPBACK_BINDING))
    new = normalise(new_thumbprint)
    return {
        "thumbprint": new,
        "backend_site": settings.backend_site,
        "frontend_site": settings.frontend_site,
        "loopback_from": loopback if loopback and loopback == old and loopback != new else None,
        "dry_run": settings.dry_run,
    }


def bind_blockers(facts: dict[str, Any]) -> list[str]:
    """Reasons to stop before binding anything. An IP-specific 444 binding fails under Extended Protection
    (SEC_E_BAD_BINDINGS); exbe does not remove it by itself, it says how."""
    blockers = []
    for info in ip_specific_444(facts):
        site = next(b["site"] for b in facts["bindings"] if b["binding_information"] == info)
        address = info.rsplit(":", 2)[0]
        blockers.append(
            f"IP-specific 444 binding {info} on {site} (HealthChecker flags it; with Extended Protection it fails with "
            f"SEC_E_BAD_BINDINGS); remove it first: Remove-WebBinding -Name \"{site}\" -IPAddress {address} "
            "-Port 444 -Protocol https")
    return blockers


@dataclasses.dataclass(frozen=True)
class CleanupPlan:
    remove: list[str]  # thumbprints; the cleanup step removes them from My and Root
    kept: list[tuple[str, str]]  # (thumbprint, why it stays)
    refused_reason: str | None = None


def cleanup_candidates(facts: dict[str, Any], exchange: dict[str, Any] | None, settings: Settings, *,
                       switched_at: datetime.datetime | None, verify_passed: bool) -> CleanupPlan:
    """Superseded self-signed back-end certificates (and Root copies) that nothing uses any more.

    Kept: anything bound (any https binding of either site), assigned to an Exchange service, the internal
    transport certificate, the current or next Auth certificate, anything Exchange did not report, and anything
    not older than the bound certificate (a staged replacement). The whole cleanup is refused before verify passed,
    before ``min_age_days`` have passed since the switch (default: the bound certificate's NotBefore), and without
    Exchange's assignments.
    """
    if not verify_passed:
        return _refuse("verify has not passed; cleanup removes nothing from a server that is not healthy")
    if exchange is None:
        return _refuse("the Exchange endpoint is not available, so the service assignments are unknown (SMTP, "
                       "IMAP, POP, IIS); cleanup refused")
    if exchange_certificates_unavailable(facts, exchange):
        return _refuse("Get-ExchangeCertificate returned no certificates (serialization signing with an expired Auth "
                       "certificate?), so the service assignments are unknown; renew the Auth certificate first")
    bound = certificate(facts, bound_hash(find_binding(facts, settings.backend_site, BACKEND_BINDING)))
    if bound is None:
        return _refuse(f"{settings.backend_site} {BACKEND_BINDING} carries no certificate of LocalMachine\\My; "
                       "bind one before cleaning up")
    if normalise(bound["thumbprint"]) not in {normalise(c["thumbprint"])
                                              for c in self_signed_exchange_certs(facts, settings.friendly_name)}:
        return _refuse(f"{settings.backend_site} {BACKEND_BINDING} carries {bound['thumbprint']}, which is not a "
                       f"self-signed '{settings.friendly_name}' certificate, so nothing of that kind is superseded")
    switched = switched_at or parse_time(bound["not_before"])
    age = (parse_time(facts["now"]) - switched).days
    if age < settings.min_age_days:
        return _refuse(f"the switch to {bound['thumbprint']} was {age} day(s) ago; cleanup waits "
                       f"{settings.min_age_days} days (--min-age)")

    assigned = {normalise(c["thumbprint"]): c.get("services") or [] for c in exchange.get("certificates") or []}
    auth = exchange.get("auth") or {}
    protected = {
        normalise(exchange.get("internal_transport")): "internal transport certificate",
        normalise(auth.get("current")): "current Auth certificate",
        normalise(auth.get("next")): "next Auth certificate",
    }
    remove: list[str] = []
    kept: list[tuple[str, str]] = []
    for cert in self_signed_exchange_certs(facts, settings.friendly_name):
        thumb = normalise(cert["thumbprint"])
        if thumb == normalise(bound["thumbprint"]):
            continue
        reason = _keep_reason(facts, cert, bound, assigned, protected)
        if reason:
            kept.append((thumb, reason))
        else:
            remove.append(thumb)
    in_my = {normalise(c["thumbprint"]) for c in facts.get("certificates") or []}
    for root in facts.get("root") or []:  # Root copies left behind by certificates already gone from My
        thumb = normalise(root["thumbprint"])
        if (thumb not in in_my and root.get("subject") == bound.get("subject") and thumb not in protected
                and not bindings_of(facts, thumb)
                and parse_time(root["not_after"]) < parse_time(bound["not_after"])):
            remove.append(thumb)
    return CleanupPlan(remove=remove, kept=kept)


def _keep_reason(facts: dict[str, Any], cert: dict[str, Any], bound: dict[str, Any],
                 assigned: dict[str | None, list[str]], protected: dict[str | None, str]) -> str | None:
    thumb = normalise(cert["thumbprint"])
    where = bindings_of(facts, thumb)
    if where:
        return f"bound to {', '.join(where)}"
    if thumb in protected:
        return protected[thumb]
    if thumb not in assigned:
        return "Exchange did not report it, so its service assignment is unknown"
    if assigned[thumb]:
        return f"assigned to {', '.join(assigned[thumb])}"
    if parse_time(cert["not_after"]) >= parse_time(bound["not_after"]):
        return f"not superseded: expires after the bound certificate {bound['thumbprint']}"
    return None


def _old_backend(facts: dict[str, Any], settings: Settings) -> str | None:
    """The certificate being replaced: the one on ``*:444:`` (even when My lacks it), else the selected one."""
    bound = bound_hash(find_binding(facts, settings.backend_site, BACKEND_BINDING))
    if bound:
        return bound
    try:
        return select_backend(facts, settings).thumbprint
    except SelectionError:
        return None


def _refuse(reason: str) -> CleanupPlan:
    return CleanupPlan(remove=[], kept=[], refused_reason=reason)

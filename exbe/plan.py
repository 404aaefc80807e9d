"""The renewal decision, from typed facts: renew or not, reuse a staged certificate, with which method, with which
New-ExchangeCertificate parameters, and how to name what it created. What each WinRM step changes is planned in
its own module (``exbe.steps``).

Pure functions over :class:`~exbe.facts.HostFacts` and :class:`~exbe.facts.ExchangeFacts` (None when the Exchange
endpoint could not be used). Nothing here talks to a server. A dry run's plan of the rest of the chain and what its
verify does not judge (:func:`planned_fixes`) are here too.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from .facts import Certificate, ExchangeFacts, HostFacts
from .model import CheckResult
from .run_settings import Settings
from .selection import (
    BACKEND_LABEL,
    MIN_KEY_SIZE,
    exchange_blinded,
    new_exchange_key_size,
    self_signed_exchange_certs,
    weak_signature,
)
from .steps import bind as bind_step


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


def created_certificate(before: HostFacts, after: HostFacts, settings: Settings) -> list[str]:
    """Self-signed back-end candidates in My after a creation that were not there before: how exbe names the
    certificate New-ExchangeCertificate made when its output carried no usable thumbprint."""
    known = {c.thumbprint for c in before.certificates}
    return [c.thumbprint for c in self_signed_exchange_certs(after, settings.friendly_name)
            if c.thumbprint not in known]




# -- a dry run ---------------------------------------------------------------------------------------------------------
#: In a dry run, the verify findings each planned step fixes: the real run applies it, reads the server again and
#: verifies what it left (bind includes 127.0.0.1:443 where it was; restart brings W3SVC and http.sys back).
FIXED_BY: dict[str, frozenset[str]] = {
    "renew": frozenset({"backend_binding_present", "backend_days_left", "backend_signature", "backend_key_size",
                        "backend_key_provider"}),
    "trust": frozenset({"root_copy"}),
    "bind": frozenset({"backend_binding_present", "loopback_443", "tls_444_serves_bound"}),
    "restart": frozenset({"w3svc_running", "tls_444_serves_bound", "backend_http_401"}),
}


def planned_fixes(results: list[CheckResult], planned: list[str],
                  settings: Settings) -> tuple[list[CheckResult], dict[str, str]]:
    """A dry run's verify: each failed or warning check that a planned step (one the dry run reports as a change)
    fixes becomes ``skip`` -- not judged, as the plan changes what it looks at -- with the step named in its message;
    returns the results and ``{check id: step}``. What no planned step fixes keeps its status: it blocks the plan."""
    fixes = {check: step for step in reversed(planned) for check in FIXED_BY.get(step, ())}
    if "renew" in planned and settings.smtp == "move":
        fixes["internal_transport_cert"] = "renew"  # --smtp move puts SMTP on the new certificate
    fixed: dict[str, str] = {}
    judged = []
    for result in results:
        step = fixes.get(result.id)
        if step and result.status in ("fail", "warn"):
            fixed[result.id] = step
            result = dataclasses.replace(result, status="skip",
                                         message=f"{result.message} (the planned {step} fixes this)")
        judged.append(result)
    return judged, fixed


def rest_of_chain(facts: HostFacts, selected: Certificate | None, settings: Settings, *,
                  restart: bool) -> list[tuple[str, str]]:
    """A dry run with a renewal pending: the later steps cannot run without the new certificate; what each would do
    (``(step, message)``; ``restart``: the chain restarts IIS after the bind)."""
    old = selected.thumbprint if selected else "nothing usable"
    planned = []
    if settings.trust:
        planned.append(("trust", "would add the new certificate's public part to LocalMachine\\Root"))
    bind_input = bind_step.plan(facts, "NEW", settings)
    planned.append(("bind", f"would bind the new certificate on {settings.backend_site} "
                            f"{bind_input['backend_binding'] or BACKEND_LABEL} (now {old})"
                    + (f" and on {settings.frontend_site} {bind_input['loopback_binding']}"
                       if bind_input["loopback_binding"] else "")))
    if restart:
        planned.append(("restart", "would run iisreset and wait for W3SVC (the bind changes a binding)"))
    return planned

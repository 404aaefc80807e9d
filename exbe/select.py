"""Which certificate is the back-end certificate, read from the certificate store and IIS facts.

The store is the source of truth: ``Get-ExchangeCertificate`` returns nothing under serialization signing with an
expired Auth certificate, and a script that trusts it goes on with a null thumbprint. The rule: the certificate bound
to Exchange Back End ``*:444:`` if it is in ``LocalMachine\\My``; else the one self-signed "Microsoft Exchange"
certificate; else stop and list the candidates, because guessing is how several certificates get renewed at once.

Also the small readers of the facts document (``exbe.contract``) that ``plan`` and ``checks`` share.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any, NamedTuple

from .model import Settings

BACKEND_BINDING = "*:444:"
FRONTEND_BINDING = "*:443:"
LOOPBACK_BINDING = "127.0.0.1:443"
AUTH_SUBJECT = "CN=Microsoft Exchange Server Auth Certificate"
WEAK_SIGNATURES = ("sha1", "md5")


class Candidate(NamedTuple):
    thumbprint: str
    not_after: str
    subject: str


@dataclasses.dataclass(frozen=True)
class Selection:
    thumbprint: str
    reason: str  # one line, for the preflight message
    candidates: list[Candidate]  # the self-signed "Microsoft Exchange" certificates in My


class SelectionError(Exception):
    """No certificate can be chosen as the back-end certificate; ``str()`` is one line that says what to do."""

    def __init__(self, message: str, *, candidates: list[Candidate], found: str) -> None:
        super().__init__(message)
        self.candidates = candidates
        self.found = found  # what *:444: carries, in words


def select_backend(facts: dict[str, Any], settings: Settings) -> Selection:
    candidates = [Candidate(c["thumbprint"], c["not_after"], c["subject"])
                  for c in self_signed_exchange_certs(facts, settings.friendly_name)]
    binding = find_binding(facts, settings.backend_site, BACKEND_BINDING)
    bound = bound_hash(binding)
    if bound and certificate(facts, bound):
        return Selection(bound, f"{bound} is bound to {settings.backend_site} {BACKEND_BINDING}", candidates)
    if binding is None:
        found = f"{settings.backend_site} has no https {BACKEND_BINDING} binding"
    elif not bound:
        found = f"{settings.backend_site} {BACKEND_BINDING} has no certificate"
    else:
        found = f"{settings.backend_site} {BACKEND_BINDING} carries {bound}, which is not in LocalMachine\\My"
    if len(candidates) == 1:
        return Selection(candidates[0].thumbprint,
                         f"{found}; {candidates[0].thumbprint} is the only self-signed "
                         f"'{settings.friendly_name}' certificate", candidates)
    if candidates:
        listed = "; ".join(f"{c.thumbprint} (expires {c.not_after[:10]}, {c.subject})" for c in candidates)
        what = (f"{len(candidates)} candidates, self-signed '{settings.friendly_name}' certificates: {listed}; "
                "bind the right one with `exbe bind --thumbprint <thumbprint>`")
    else:
        what = (f"no candidates: LocalMachine\\My holds no self-signed '{settings.friendly_name}' certificate; "
                "create one with New-ExchangeCertificate (KB 2779694) and bind it with "
                "`exbe bind --thumbprint <thumbprint>`")
    raise SelectionError(f"cannot tell which certificate is the back-end certificate: {found}; {what}; "
                         "then run exbe again", candidates=candidates, found=found)


def exchange_certificates_unavailable(facts: dict[str, Any], exchange: dict[str, Any] | None) -> bool:
    """Exchange answered but listed no certificates while My holds some: serialization signing with an expired
    Auth certificate. Exchange's view of the certificates (and their assignments) cannot be used then."""
    return exchange is not None and not exchange.get("certificates") and bool(facts.get("certificates"))


def ip_specific_444(facts: dict[str, Any]) -> list[str]:
    """Binding information of every https binding on port 444 that names an IP address (anything but ``*:444:``)."""
    return [b["binding_information"] for b in facts.get("bindings") or []
            if b.get("protocol", "https") == "https" and _port(b["binding_information"]) == "444"
            and b["binding_information"].split(":", 1)[0] != "*"]


# -- readers of the facts document -----------------------------------------------------------------------------------
def self_signed_exchange_certs(facts: dict[str, Any], friendly_name: str) -> list[dict[str, Any]]:
    """Self-signed certificates of My with exactly this friendly name, the Auth certificate excepted."""
    return [c for c in facts.get("certificates") or []
            if c.get("self_signed") and c.get("friendly_name") == friendly_name
            and (c.get("subject") or "").upper() != AUTH_SUBJECT.upper()]


def certificate(facts: dict[str, Any], thumbprint: str | None) -> dict[str, Any] | None:
    """The CERT of My with this thumbprint, or None."""
    wanted = normalise(thumbprint)
    return next((c for c in facts.get("certificates") or [] if normalise(c["thumbprint"]) == wanted), None) \
        if wanted else None


def find_binding(facts: dict[str, Any], site: str, binding_information: str) -> dict[str, Any] | None:
    return next((b for b in facts.get("bindings") or []
                 if b["site"] == site and b.get("protocol", "https") == "https"
                 and b["binding_information"] == binding_information), None)


def bound_hash(binding: dict[str, Any] | None) -> str | None:
    return normalise(binding.get("certificate_hash")) if binding else None


def bindings_of(facts: dict[str, Any], thumbprint: str) -> list[str]:
    """Every https binding (``"<site> <binding information>"``) that carries this certificate."""
    wanted = normalise(thumbprint)
    return [f"{b['site']} {b['binding_information']}" for b in facts.get("bindings") or []
            if normalise(b.get("certificate_hash")) == wanted]


def normalise(thumbprint: str | None) -> str | None:
    text = (thumbprint or "").replace(" ", "").upper()
    return text or None


def parse_time(value: str | datetime.datetime) -> datetime.datetime:
    if isinstance(value, datetime.datetime):
        moment = value
    else:
        moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)


def days_left(cert: dict[str, Any], now: str | datetime.datetime) -> int:
    """Whole days until NotAfter (negative once expired), counted as HealthChecker does (floor)."""
    return (parse_time(cert["not_after"]) - parse_time(now)).days


def weak_signature(cert: dict[str, Any]) -> bool:
    return (cert.get("signature_algorithm") or "").lower().startswith(WEAK_SIGNATURES)


def short(thumbprint: str | None) -> str:
    """A thumbprint as messages show it: the first 8 hex digits."""
    return f"{thumbprint[:8]}..." if thumbprint else "(none)"


def _port(binding_information: str) -> str:
    rest = binding_information.rsplit("]", 1)[-1]  # [IPv6]:port:host
    parts = rest.split(":")
    return parts[1] if len(parts) > 1 else ""

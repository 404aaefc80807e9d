"""Which certificate is the back-end certificate, and the binding roles exbe reasons about, read from typed facts.

The store is the source of truth: ``Get-ExchangeCertificate`` is unreliable under serialization signing with an
expired Auth certificate, and a script that trusts it goes on with a null thumbprint. The rule: the certificate bound
to Exchange Back End's all-unassigned https 444 binding if it is in ``LocalMachine\\My``; else the one self-signed
"Microsoft Exchange" certificate; else stop and list the candidates, because guessing is how several certificates
get renewed at once.

Bindings are found by meaning (``exbe.facts.Binding``): the back-end binding is https, all unassigned addresses
(``*`` or empty), port 444, no host header; the public front-end binding the same on 443 (``:443:`` on the captured
real servers, ``*:443:`` on others); the loopback binding ``127.0.0.1:443:``.
"""

from __future__ import annotations

import dataclasses

from .facts import Binding, Certificate, ExchangeFacts, HostFacts, normalise_thumbprint
from .run_settings import Settings

BACKEND_PORT = 444
FRONTEND_PORT = 443
LOOPBACK_ADDRESS = "127.0.0.1"
BACKEND_LABEL = "*:444:"  # how messages name the back-end binding (and what exbe creates when there is none)
AUTH_SUBJECT = "CN=Microsoft Exchange Server Auth Certificate"
WEAK_SIGNATURES = ("sha1", "md5")
MIN_KEY_SIZE = 2048
#: KeySize values New-ExchangeCertificate accepts (ValidateSet, Microsoft's cmdlet reference).
NEW_EXCHANGE_KEY_SIZES = (1024, 2048, 4096)


@dataclasses.dataclass(frozen=True)
class Candidate:
    thumbprint: str
    not_after: str  # ISO date for messages
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
        self.found = found  # what the back-end binding carries, in words


# -- binding roles -----------------------------------------------------------------------------------------------------
def backend_binding(facts: HostFacts, settings: Settings) -> Binding | None:
    return facts.https_binding(settings.backend_site, BACKEND_PORT)


def frontend_binding(facts: HostFacts, settings: Settings) -> Binding | None:
    return facts.https_binding(settings.frontend_site, FRONTEND_PORT)


def loopback_binding(facts: HostFacts, settings: Settings) -> Binding | None:
    return facts.https_binding(settings.frontend_site, FRONTEND_PORT, LOOPBACK_ADDRESS)


def ip_specific_444(facts: HostFacts) -> list[Binding]:
    """Every https binding on port 444 that names an IP address (anything but all unassigned)."""
    return [b for b in facts.bindings if b.protocol == "https" and b.port == BACKEND_PORT and b.address != "*"]


# -- the back-end certificate ------------------------------------------------------------------------------------------
def backend_like(cert: Certificate, friendly_name: str) -> bool:
    """Self-signed with exactly this friendly name and not the Auth certificate: what a back-end certificate is."""
    return cert.self_signed and cert.friendly_name == friendly_name and cert.subject.upper() != AUTH_SUBJECT.upper()


def self_signed_exchange_certs(facts: HostFacts, friendly_name: str) -> list[Certificate]:
    """Self-signed certificates of My with exactly this friendly name, the Auth certificate excepted."""
    return [c for c in facts.certificates if backend_like(c, friendly_name)]


def split_loopback(facts: HostFacts, settings: Settings, backend: str | None) -> Binding | None:
    """The loopback ``127.0.0.1:443:`` binding when it carries a back-end-like certificate of My other than
    ``backend`` (a superseded or duplicate one: a split binding). On real servers that binding carries the back-end
    certificate when it carries a self-signed one; a CA-issued certificate there is the admin's choice, never split."""
    loopback = loopback_binding(facts, settings)
    carried = facts.certificate(loopback.certificate_hash) if loopback else None
    if loopback is None or carried is None or not backend or carried.thumbprint == normalise_thumbprint(backend):
        return None
    return loopback if backend_like(carried, settings.friendly_name) else None


def select_backend(facts: HostFacts, settings: Settings, *,
                   replacement: tuple[str, str] | None = None) -> Selection:
    """The back-end certificate: the one 444 carries; else the only candidate; else ``replacement`` -- the
    certificate the last exbe run made to replace it and did not bind (its thumbprint and, in words, who made it:
    :meth:`exbe.steps.lock.LockFacts.replacement`), so that an interrupted renewal converges. Raises SelectionError
    when a human must choose."""
    candidates = [Candidate(c.thumbprint, c.not_after.date().isoformat(), c.subject)
                  for c in self_signed_exchange_certs(facts, settings.friendly_name)]
    binding = backend_binding(facts, settings)
    bound = binding.certificate_hash if binding else None
    where = f"{settings.backend_site} {binding.information if binding else BACKEND_LABEL}"
    if bound and facts.certificate(bound):
        return Selection(bound, f"{bound} is bound to {where}", candidates)
    if binding is None:
        found = f"{settings.backend_site} has no https {BACKEND_LABEL} binding"
    elif not bound:
        found = f"{where} has no certificate"
    else:
        found = f"{where} carries {bound}, which is not in LocalMachine\\My"
    if len(candidates) == 1:
        return Selection(candidates[0].thumbprint,
                         f"{found}; {candidates[0].thumbprint} is the only self-signed "
                         f"'{settings.friendly_name}' certificate", candidates)
    chosen = next((c for c in candidates if replacement and c.thumbprint == replacement[0].upper()), None)
    if chosen is not None and replacement is not None:
        return Selection(chosen.thumbprint, f"{found}; {len(candidates)} self-signed '{settings.friendly_name}' "
                         f"certificates, {chosen.thumbprint} the one {replacement[1]}", candidates)
    if candidates:
        listed = "; ".join(f"{c.thumbprint} (expires {c.not_after}, {c.subject})" for c in candidates)
        what = (f"{len(candidates)} candidates, self-signed '{settings.friendly_name}' certificates: {listed}; "
                "bind the right one with `exbe bind --thumbprint <thumbprint>`")
    else:
        what = (f"no candidates: LocalMachine\\My holds no self-signed '{settings.friendly_name}' certificate; "
                "create one with New-ExchangeCertificate (KB 2779694) and bind it with "
                "`exbe bind --thumbprint <thumbprint>`")
    raise SelectionError(f"cannot tell which certificate is the back-end certificate: {found}; {what}; "
                         "then run exbe again", candidates=candidates, found=found)


# -- how far Exchange's view can be trusted ----------------------------------------------------------------------------
def exchange_blinded(facts: HostFacts, exchange: ExchangeFacts | None) -> str:
    """Why Exchange's certificate cmdlets cannot be relied on, or "" when they can.

    Serialization signing with an expired (or missing) Auth certificate breaks them: real servers then send
    ``Deserialized.`` objects with ``RawData`` only, admins also report an empty list, and New-ExchangeCertificate
    fails. Judged from the Auth configuration and the store, not from the shape of the answer."""
    if exchange is None:
        return ""
    if not exchange.certificates and facts.certificates:
        return ("Get-ExchangeCertificate returned no certificates while LocalMachine\\My holds some "
                "(serialization signing with an expired Auth certificate?)")
    if exchange.serialization_signing:
        auth = facts.certificate(exchange.auth.current)
        if auth is None:
            return (f"serialization signing is on and the Auth certificate {short(exchange.auth.current)} is not in "
                    "LocalMachine\\My, so Exchange's certificate cmdlets cannot sign their answers")
        if auth.not_after <= facts.now:
            return (f"the Auth certificate {short(auth.thumbprint)} expired on {auth.not_after.date()} and "
                    "serialization signing is on, so Exchange's certificate cmdlets cannot sign their answers")
    return ""


def assignments_unknown(facts: HostFacts, exchange: ExchangeFacts | None) -> str:
    """Why Exchange's service assignments cannot be relied on, or "" when they were read: the endpoint unavailable,
    blinded, or not sending them (the projection refused)."""
    if exchange is None:
        return "the Exchange endpoint is not available"
    return exchange_blinded(facts, exchange) or exchange.assignments_unknown


# -- small readers shared by plan and checks -----------------------------------------------------------------------
def weak_signature(cert: Certificate) -> bool:
    return cert.signature_algorithm.lower().startswith(WEAK_SIGNATURES)


def new_exchange_key_size(old_key_size: int) -> int:
    """The smallest KeySize New-ExchangeCertificate accepts that keeps at least the old strength and 2048 bits."""
    wanted = max(MIN_KEY_SIZE, old_key_size)
    return next((size for size in NEW_EXCHANGE_KEY_SIZES if size >= wanted), NEW_EXCHANGE_KEY_SIZES[-1])


def remove_binding_command(binding: Binding) -> str:
    """The WebAdministration command that removes an IP-specific binding (IPv6 addresses in brackets, as IIS
    writes them)."""
    address = f"\"[{binding.address}]\"" if ":" in binding.address else binding.address
    return (f"Remove-WebBinding -Name \"{binding.site}\" -IPAddress {address} -Port {binding.port} "
            "-Protocol https")


def short(thumbprint: str | None) -> str:
    """A thumbprint as messages show it: the first 8 hex digits."""
    return f"{thumbprint[:8]}..." if thumbprint else "(none)"

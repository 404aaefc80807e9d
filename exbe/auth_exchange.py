"""What `exbe auth` and `exbe federation` ask the Exchange endpoint, and how they read the answers.

Every state change of the Auth and Federation certificates is an Exchange cmdlet (``../shared/auth-certificate.md``
§3), so all of this runs as cmdlets on one server's Exchange endpoint, never as a script.

Shapes: ``Get-AuthConfig`` is a property bag whose thumbprints are strings, empty when unset (the CSS-Exchange
capture ``Diagnostics/HealthChecker/Tests/DataCollection/E19/Exchange/GetAuthConfig.xml``, real-server-shapes.md
§2); it is read by :func:`exbe.exchange.normalise`, the same reader verify uses. A certificate object carries
``RawData`` and perhaps nothing else (§2): thumbprint and expiry come from it. ``Get-HybridConfiguration`` matters
only as "an object, or nothing" (MEAC tests ``$null``). ``Get-FederationTrust``'s property names are Microsoft's
documented ones; its certificates are X509 objects (``RawData``), its ``Org*PrivCertificate`` thumbprints strings.

How a statement's failure is read: on a real server the statements of one pipeline run as a batch, and a statement's
error is a record in the error stream while the next statement runs (real-server-shapes.md §4). Each statement
here yields one object or one error record, in order, so a statement without its object owns the next record.
MEAC's test tells a certificate missing on a server (the record's reason is ``InvalidOperationException``) from a
server it cannot reach (any other reason): ``Get-ExchangeAuthCertificateStatus.ps1``.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any, Literal

from .exchange import federation_facts, kind_of, normalise, read_certificate
from .facts import AuthConfig, FederationFacts, normalise_thumbprint
from .redaction import Secret
from .transport import Command, PipelineOutput, Session

AUTH_SUBJECT = "cn=Microsoft Exchange Server Auth Certificate"
AUTH_FRIENDLY_NAME = "Microsoft Exchange Server Auth Certificate"
FEDERATION_TRUST = "Microsoft Federation Gateway"
MISSING_REASON = "InvalidOperationException"

PresenceState = Literal["present", "missing", "unreachable"]


@dataclasses.dataclass(frozen=True)
class Presence:
    """One certificate on one server: present (with its expiry), missing, or unreachable (why)."""

    thumbprint: str
    state: PresenceState
    not_after: datetime.datetime | None = None
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class OrgRead:
    """The organization's Auth configuration and whether it is hybrid (None: the question failed; exbe then treats
    it as hybrid, the conservative answer)."""

    auth: AuthConfig
    hybrid: bool | None
    hybrid_detail: str = ""


class ReadFailed(Exception):
    """The organization could not be read; the message says what answered instead."""


def _records(result: PipelineOutput) -> list[tuple[str, str]]:
    """The pipeline's error records in order as (text, reason); the terminating one last."""
    texts = [*result.errors, *([result.failed] if result.failed else [])]
    reasons = [*result.reasons, *[""] * len(texts)][:len(texts)]
    return list(zip(texts, reasons, strict=True))


def read_org(session: Session) -> OrgRead:
    """``Get-AuthConfig`` and ``Get-HybridConfiguration`` in one round trip."""
    result = session.run_cmdlets([[("Get-AuthConfig", {})], [("Get-HybridConfiguration", {})]])
    if not any(kind_of(obj) == "auth" for obj in result.output):
        records = _records(result)
        raise ReadFailed(f"Get-AuthConfig answered no Auth configuration ({records[0][0] if records else 'nothing'})")
    auth = normalise(PipelineOutput([o for o in result.output if kind_of(o) == "auth"], [], [], None)).auth
    hybrid_objects = [o for o in result.output if _leaf(o) == "HybridConfiguration"]
    records = _records(result)
    if hybrid_objects:
        return OrgRead(auth, True, "Get-HybridConfiguration returned the hybrid configuration")
    if records:
        return OrgRead(auth, None, f"Get-HybridConfiguration failed ({records[0][0]}); treated as hybrid")
    return OrgRead(auth, False, "Get-HybridConfiguration returned nothing")


def read_presence(session: Session, server: str, thumbprints: list[str]) -> dict[str, Presence]:
    """``Get-ExchangeCertificate -Server <server> -Thumbprint <t>`` for each thumbprint, one round trip."""
    if not thumbprints:
        return {}
    statements: list[list[Command]] = [[("Get-ExchangeCertificate", {"Server": server, "Thumbprint": t})]
                                       for t in thumbprints]
    result = session.run_cmdlets(statements)
    found = {cert.thumbprint: cert for cert in map(read_certificate, result.output) if cert is not None}
    records = iter(_records(result))
    presence: dict[str, Presence] = {}
    for thumb in thumbprints:
        cert = found.get(thumb)
        if cert is not None:
            presence[thumb] = Presence(thumb, "present", cert.not_after)
            continue
        text, reason = next(records, ("no answer for this statement", ""))
        state: PresenceState = "missing" if reason == MISSING_REASON else "unreachable"
        presence[thumb] = Presence(thumb, state, None, text)
    return presence


def new_auth_certificate(session: Session, server: str) -> tuple[str | None, bytes | None, list[str]]:
    """New-ExchangeCertificate for the Auth role with ``-Services None`` (why: docs/auth.md): the new thumbprint and
    its DER bytes (None when the output named none) and the error messages."""
    params: dict[str, Any] = {"Server": server, "KeySize": 2048, "PrivateKeyExportable": True,
                              "SubjectName": AUTH_SUBJECT, "FriendlyName": AUTH_FRIENDLY_NAME, "DomainName": [],
                              "Services": "None"}
    return _created(session.run_cmdlets([[("New-ExchangeCertificate", params)]]))


def new_federation_certificate(session: Session, server: str, key_identifier: str) -> tuple[str | None, bytes | None,
                                                                                              list[str]]:
    """New-ExchangeCertificate for the Federation trust, as Microsoft's renewal procedure makes it."""
    params: dict[str, Any] = {"Server": server, "DomainName": "Federation", "FriendlyName": "Exchange Delegation "
                              "Federation", "Services": "Federation", "SubjectKeyIdentifier": key_identifier,
                              "PrivateKeyExportable": True}
    return _created(session.run_cmdlets([[("New-ExchangeCertificate", params)]]))


def _created(result: PipelineOutput) -> tuple[str | None, bytes | None, list[str]]:
    errors = [text for text, _ in _records(result)]
    for obj in result.output:
        cert = read_certificate(obj)
        if cert is not None:
            return cert.thumbprint, _raw_of(obj), errors
    return None, None, errors


def read_sites(session: Session) -> tuple[dict[str, str], str]:
    """``Get-ExchangeServer`` (every server of the organization, one round trip): ``{name and FQDN (lower case):
    AD site}``. ``Site`` is an ADObjectId (the CSS-Exchange capture ``Admin/MonitorExchangeAuthCertificate/
    DataCollection/Tests/Data/GetExchangeServer.xml``): its ``Name``, else the last part of its canonical ToString
    (``contoso.lab/Configuration/Sites/Default-First-Site-Name``); and the error text when the cmdlet failed."""
    result = session.run_cmdlets([[("Get-ExchangeServer", {})]])
    sites: dict[str, str] = {}
    for obj in result.output:
        props = _props(obj)
        site = props.get("Site")
        name = str((_props(site).get("Name") if site is not None else None)
                   or str(getattr(site, "to_string", None) or site or "").rpartition("/")[2])
        for key in ("Name", "Fqdn"):
            if props.get(key):
                sites[str(props[key]).lower()] = name
    records = _records(result)
    return sites, records[0][0] if records and not sites else ""


def import_pfx(session: Session, servers: list[str], pfx: bytes, password: Secret) -> dict[str, tuple[str | None,
                                                                                                    str]]:
    """``Import-ExchangeCertificate -Server <s> -FileData <pfx> -Password <SecureString> -PrivateKeyExportable
    $true`` for each server, one statement each in one round trip (the password travels as a SecureString under
    PSRP's session key: :meth:`exbe.transport.Session.run_cmdlets`): ``{server: (imported thumbprint or None,
    error text)}``."""
    statements: list[list[Command]] = [[("Import-ExchangeCertificate", {
        "Server": server, "FileData": pfx, "Password": password, "PrivateKeyExportable": True})] for server in servers]
    result = session.run_cmdlets(statements)
    events = iter(result.events)  # each statement answers with one object or one error record, in order
    answers: dict[str, tuple[str | None, str]] = {}
    for server in servers:
        kind, item = next(events, ("error", None))
        cert = read_certificate(item) if kind == "output" else None
        if cert is not None:
            answers[server] = (cert.thumbprint, "")
        else:
            answers[server] = (None, getattr(item, "text", "") or "no certificate in the answer")
    return answers


def stage(session: Session, thumbprint: str, effective: datetime.datetime) -> list[str]:
    """``Set-AuthConfig -NewCertificateThumbprint -NewCertificateEffectiveDate -Force``: the error messages. The date
    travels as ISO 8601 text in UTC, which PowerShell's parameter binding converts to a DateTime with the invariant
    culture (pypsrp sends no DateTime)."""
    when = effective.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return _errors(session.run_cmdlets([[("Set-AuthConfig", {"NewCertificateThumbprint": thumbprint,
                                                              "NewCertificateEffectiveDate": when,
                                                              "Force": True})]]))


def publish(session: Session) -> list[str]:
    """``Set-AuthConfig -PublishCertificate -Force``: the next certificate becomes current now, deployed."""
    return _errors(session.run_cmdlets([[("Set-AuthConfig", {"PublishCertificate": True, "Force": True})]]))


def clear_previous(session: Session) -> list[str]:
    """``Set-AuthConfig -ClearPreviousCertificate -Force``."""
    return _errors(session.run_cmdlets([[("Set-AuthConfig", {"ClearPreviousCertificate": True, "Force": True})]]))


def read_federation(session: Session) -> FederationFacts | None:
    """``Get-FederationTrust``: None when the organization has no Federation trust."""
    result = session.run_cmdlets([[("Get-FederationTrust", {})]])
    trusts = [o for o in result.output if kind_of(o) == "federation"]
    if not trusts:
        records = _records(result)
        if records:
            raise ReadFailed(f"Get-FederationTrust failed: {records[0][0]}")
        return None
    return federation_facts(_props(trusts[0]))


def federation_propagation(session: Session) -> dict[tuple[str, str], str]:
    """``Test-FederationTrustCertificate``: ``{(server, thumbprint): state}``."""
    result = session.run_cmdlets([[("Test-FederationTrustCertificate", {})]])
    rows = {}
    for obj in result.output:
        props = _props(obj)
        thumb = normalise_thumbprint(props.get("Thumbprint"))
        if thumb and props.get("Server"):
            rows[(str(props["Server"]), thumb)] = str(props.get("State"))
    return rows


def domain_proofs(session: Session, domain: str) -> list[dict[str, str]]:
    """``Get-FederatedDomainProof -DomainName``: per certificate its thumbprint, proof and DNS TXT record."""
    result = session.run_cmdlets([[("Get-FederatedDomainProof", {"DomainName": domain})]])
    return [{"thumbprint": str(_props(o).get("Thumbprint") or ""), "proof": str(_props(o).get("Proof") or ""),
             "dns_record": str(_props(o).get("DnsRecord") or "")} for o in result.output]


def stage_federation(session: Session, thumbprint: str) -> list[str]:
    return _errors(session.run_cmdlets([[("Set-FederationTrust", {"Identity": FEDERATION_TRUST,
                                                                   "Thumbprint": thumbprint})]]))


def publish_federation(session: Session) -> list[str]:
    return _errors(session.run_cmdlets([[("Set-FederationTrust", {"Identity": FEDERATION_TRUST,
                                                                   "PublishFederationCertificate": True})]]))


# -- reading objects -------------------------------------------------------------------------------------------------
def _errors(result: PipelineOutput) -> list[str]:
    return [text for text, _ in _records(result)]


def _props(obj: Any) -> dict[str, Any]:
    props: dict[str, Any] = {}
    props.update(getattr(obj, "adapted_properties", {}) or {})
    props.update(getattr(obj, "extended_properties", {}) or {})
    return props


def _raw_of(obj: Any) -> bytes | None:
    if obj is None:
        return None
    raw = _props(obj).get("RawData")
    return bytes(raw) if isinstance(raw, (bytes, bytearray)) and raw else None


def _leaf(obj: Any) -> str:
    types = [str(t) for t in getattr(obj, "types", []) or []]
    return types[0].removeprefix("Deserialized.").rpartition(".")[2] if types else ""

"""What exbe asks the Exchange endpoint (cmdlets, never scripts) and how it reads the answers.

All reads go in ONE pipeline of several statements (one round trip; a second one only when the certificate
projection below is refused or incomplete). Objects are told apart by their type names.

What crosses the wire (``../shared/real-server-shapes.md`` §2): ``ExchangeCertificate`` derives from
``X509Certificate2``, which PowerShell serializes as ``RawData`` only, so a client without Exchange's assemblies gets
no ``Thumbprint``, ``Services``, ``FriendlyName`` or ``NotAfter`` — in the healthy state and, ``Deserialized.``
prefixed, in the broken one. exbe reads the thumbprint, subject and dates from ``RawData`` (the thumbprint is the
SHA-1 of the DER bytes) and takes the property bag only where a server sends one. Service assignments are not in
``RawData``: exbe asks for the certificates as ``Get-ExchangeCertificate | Select-Object Thumbprint,Services,RawData``,
evaluated on the server on live objects, so one plain object per certificate carries both and the full objects do
not cross the wire as well (one object per certificate to deserialize instead of two). When the endpoint refuses that
projection (unverified either way) or a projected certificate arrives without readable ``RawData`` or ``Services``,
exbe asks once more for the full objects; assignments that did not arrive are *unknown*, and the decisions take the
conservative path.
"""

from __future__ import annotations

import datetime
import hashlib
import warnings
from typing import Any
from xml.etree import ElementTree

from cryptography import x509

from .facts import (
    AuthConfig,
    ExchangeCertificate,
    ExchangeFacts,
    ExchangeServer,
    FederationFacts,
    normalise_thumbprint,
    parse_time,
)
from .transport import Command, PipelineOutput, Session

_TYPES = {
    "ExchangeServer": "server",
    "ExchangeCertificate": "certificate",
    "AuthConfig": "auth",
    "SettingOverride": "override",
    "TransportService": "transport",
    "TransportServer": "transport",  # the type Get-TransportService emits
    "FederationTrust": "federation",
}
#: Microsoft.Exchange.Data.AllowedServices flags (the values the captured SerializationData carries: 27 =
#: IMAP, POP, IIS, SMTP; 16 = SMTP).
_SERVICE_FLAGS = (("IMAP", 1), ("POP", 2), ("UM", 4), ("IIS", 8), ("SMTP", 16), ("FEDERATION", 32),
                  ("UMCALLROUTER", 64))
#: What exbe reads of each certificate, projected on the server: the assignments (not in ``RawData``) and ``RawData``
#: (everything else exbe reads of a certificate).
PROJECTED_PROPERTIES = ["Thumbprint", "Services", "RawData"]


def read_statements(server_name: str) -> list[list[Command]]:
    """The read-only statements of preflight/verify, for one server. The projection goes last: if the endpoint
    refuses ``Select-Object``, the terminating error comes after every other answer has arrived."""
    return [
        [("Get-ExchangeServer", {"Identity": server_name})],
        [("Get-AuthConfig", {})],
        [("Get-SettingOverride", {})],
        [("Get-TransportService", {"Identity": server_name})],
        [("Get-FederationTrust", {})],
        [("Get-ExchangeCertificate", {"Server": server_name}), ("Select-Object", {"Property": PROJECTED_PROPERTIES})],
    ]


def full_certificates_statement(server_name: str) -> list[list[Command]]:
    """The fallback of :func:`read_statements`: the certificates as full objects (``RawData`` only on the wire)."""
    return [[("Get-ExchangeCertificate", {"Server": server_name})]]


def read_facts(session: Session, server_name: str) -> tuple[ExchangeFacts | None, list[str]]:
    """Exchange facts and the error messages the cmdlets wrote; facts None when the reads failed. One round trip,
    two when the projection was refused or incomplete (then the full objects are read as well)."""
    result = session.run_cmdlets(read_statements(server_name))
    if result.failed and not _projection_refused(result.failed):
        return None, [*result.errors, result.failed]
    output, errors = list(result.output), list(result.errors)
    if result.failed or not all(map(_projected_whole, output)):
        full = session.run_cmdlets(full_certificates_statement(server_name))
        errors += full.errors
        if full.failed:
            return None, [*errors, full.failed]
        output += full.output
    refused = f"the Exchange endpoint refused Select-Object ({result.failed})" if result.failed else ""
    return normalise(PipelineOutput(output, errors, result.warnings, None), unknown_because=refused), errors


def normalise(result: PipelineOutput, *, unknown_because: str = "") -> ExchangeFacts:
    """The objects of :func:`read_statements` as typed facts; ``unknown_because`` says why assignments that did not
    arrive are missing."""
    server: ExchangeServer | None = None
    certificates: dict[str, ExchangeCertificate] = {}
    assignments: dict[str, tuple[str, ...]] = {}
    auth = AuthConfig()
    signing, internal = True, None
    federation: FederationFacts | None = None
    for obj in result.output:
        kind = kind_of(obj)
        props = _props(obj)
        if kind == "server":
            server = ExchangeServer(name=_str(props.get("Name")), fqdn=_str(props.get("Fqdn")),
                                    version=_str(props.get("AdminDisplayVersion")), edition=_str(props.get("Edition")))
        elif kind == "certificate":
            cert = read_certificate(obj)
            if cert is not None:
                certificates[cert.thumbprint] = cert
        elif kind == "projection":
            cert = read_certificate(obj)
            if cert is not None and cert.services is not None:
                assignments[cert.thumbprint] = cert.services
            if cert is not None and _whole(cert):
                certificates.setdefault(cert.thumbprint, cert)
        elif kind == "auth":
            auth = AuthConfig(current=normalise_thumbprint(props.get("CurrentCertificateThumbprint")),
                              next=normalise_thumbprint(props.get("NextCertificateThumbprint")),
                              next_effective=_time(props.get("NextCertificateEffectiveDate")),
                              previous=normalise_thumbprint(props.get("PreviousCertificateThumbprint")))
        elif kind == "override":
            signing = signing and not _disables_signing(props)
        elif kind == "transport":
            internal = normalise_thumbprint(props.get("InternalTransportCertificateThumbprint"))
        elif kind == "federation":
            federation = federation_facts(props)
    listed = []
    for thumb, cert in certificates.items():
        if thumb in assignments:
            cert = ExchangeCertificate(cert.thumbprint, cert.subject, cert.not_after, cert.self_signed,
                                       assignments[thumb])
        listed.append(cert)
    facts = ExchangeFacts(server=server, certificates=tuple(listed), auth=auth, serialization_signing=signing,
                          internal_transport=internal, federation=federation)
    missing = [c.thumbprint for c in listed if c.services is None]
    if missing:
        return facts.with_assignments_unknown(
            unknown_because or f"Exchange sent no service assignments for {len(missing)} of {len(listed)} "
                               "certificate(s)")
    return facts


def read_certificate(obj: Any) -> ExchangeCertificate | None:
    """An ExchangeCertificate object in any shape seen or plausible: the property bag where it was sent, else
    ``RawData`` (the thumbprint is the SHA-1 of the DER bytes); None when it carries neither."""
    props = _props(obj)
    raw = props.get("RawData")
    der = bytes(raw) if isinstance(raw, (bytes, bytearray)) else b""
    parsed = _load_der(der)
    thumb = normalise_thumbprint(props.get("Thumbprint")) or (
        hashlib.sha1(der).hexdigest().upper() if parsed is not None else None)
    if thumb is None:
        return None
    subject = _str(props.get("Subject")) or (windows_name(parsed.subject) if parsed else None)
    not_after = _time(props.get("NotAfter")) or (parsed.not_valid_after_utc if parsed else None)
    self_signed: bool | None = bool(props["IsSelfSigned"]) if "IsSelfSigned" in props else (
        parsed.issuer == parsed.subject if parsed else None)
    return ExchangeCertificate(thumbprint=thumb, subject=subject, not_after=not_after, self_signed=self_signed,
                               services=services(props["Services"]) if "Services" in props else None)


def federation_facts(props: dict[str, Any]) -> FederationFacts:
    """A FederationTrust's certificates: the thumbprints from ``Org*PrivCertificate`` (strings), the expiry from the
    ``Org*Certificate`` X509 objects (``RawData``; Microsoft's documented property names, the wire shape a belief)."""
    def one(certificate: str, thumbprint: str) -> tuple[str | None, datetime.datetime | None]:
        cert = read_certificate(props.get(certificate)) if props.get(certificate) is not None else None
        thumb = normalise_thumbprint(props.get(thumbprint)) or (cert.thumbprint if cert else None)
        return thumb, cert.not_after if cert is not None and cert.thumbprint == thumb else None

    current, current_after = one("OrgCertificate", "OrgPrivCertificate")
    nxt, next_after = one("OrgNextCertificate", "OrgNextPrivCertificate")
    previous, _ = one("OrgPrevCertificate", "OrgPrevPrivCertificate")
    return FederationFacts(current, nxt, previous, current_after, next_after)


def new_certificate(session: Session, params: dict[str, Any]) -> tuple[str | None, list[str]]:
    """New-ExchangeCertificate (self-signed, assigned to no service): the new thumbprint (None when the output
    named none) and any error messages."""
    result = session.run_cmdlets([[("New-ExchangeCertificate", params)]])
    errors = [*result.errors, *([result.failed] if result.failed else [])]
    thumbs = [c.thumbprint for c in map(read_certificate, result.output) if c is not None]
    return (thumbs[0] if len(thumbs) == 1 else None), errors


def enable_smtp(session: Session, server_name: str, thumbprint: str) -> list[str]:
    """Enable-ExchangeCertificate -Services SMTP (grants NETWORK SERVICE key access, publishes for direct trust)."""
    result = session.run_cmdlets([[("Enable-ExchangeCertificate",
                                    {"Server": server_name, "Thumbprint": thumbprint, "Services": "SMTP",
                                     "Force": True})]])
    return [*result.errors, *([result.failed] if result.failed else [])]


# -- reading deserialized objects ------------------------------------------------------------------------------------
def kind_of(obj: Any) -> str | None:
    """What an output object is, from its most specific type name (``Deserialized.`` and ``Selected.`` aware)."""
    types = [str(t) for t in getattr(obj, "types", []) or []]
    if not types:
        return None
    first = types[0].removeprefix("Deserialized.")
    if first.startswith("Selected."):
        return "projection" if first.rpartition(".")[2] == "ExchangeCertificate" else None
    for type_name in types:
        leaf = type_name.rpartition(".")[2]
        if leaf in _TYPES:
            return _TYPES[leaf]
    return None


def services(value: Any) -> tuple[str, ...]:
    """AllowedServices as pypsrp hands it: an enum object (ToString ``IMAP, POP, SMTP`` and I32 flags), the text
    alone, the flags alone, or a list."""
    if value is None:
        return ()
    if isinstance(value, int) and not isinstance(value, bool):
        return tuple(name for name, flag in _SERVICE_FLAGS if value & flag)
    text = getattr(value, "to_string", None)
    if text is None:
        numbers = [v for v in getattr(value, "property_sets", []) or [] if isinstance(v, int)]
        if numbers:
            return services(numbers[0])
    items = value if isinstance(value, list) else str(text if text is not None else value).replace(";", ",").split(",")
    return tuple(s.strip().upper() for s in map(str, items) if s.strip() and s.strip().lower() != "none")


#: How .NET's X500DistinguishedName names attributes where RFC 4514 differs.
_WINDOWS_ATTRIBUTES = {"ST": "S", "emailAddress": "E", "1.2.840.113549.1.9.1": "E"}


def windows_name(name: x509.Name) -> str:
    """A name as Windows writes a certificate's Subject (``CN=a, OU=b, S=c, C=d``), so store and Exchange agree."""
    parts = []
    for rdn in reversed(name.rdns):
        for attribute in rdn:
            key = attribute.rfc4514_string().partition("=")[0]
            parts.append(f"{_WINDOWS_ATTRIBUTES.get(key, key)}={attribute.value!s}")
    return ", ".join(parts)


def _load_der(der: bytes) -> x509.Certificate | None:
    if not der:
        return None
    try:
        with warnings.catch_warnings():  # real certificates carry names cryptography warns about (C=Germany)
            warnings.simplefilter("ignore")
            cert = x509.load_der_x509_certificate(der)
            cert.subject, cert.issuer  # noqa: B018 - parse the names inside the filter
            return cert
    except ValueError:
        return None


def _props(obj: Any) -> dict[str, Any]:
    props: dict[str, Any] = {}
    props.update(getattr(obj, "adapted_properties", {}) or {})
    props.update(getattr(obj, "extended_properties", {}) or {})
    return props


def _whole(cert: ExchangeCertificate) -> bool:
    """The certificate as exbe reads it, assignments aside: what a projection without readable ``RawData`` lacks."""
    return cert.subject is not None and cert.not_after is not None and cert.self_signed is not None


def _projected_whole(obj: Any) -> bool:
    """True unless ``obj`` is a projected certificate that lacks something exbe reads (then the full objects are
    asked for)."""
    if kind_of(obj) != "projection":
        return True
    cert = read_certificate(obj)
    return cert is not None and cert.services is not None and _whole(cert)


def _projection_refused(failure: str) -> bool:
    return "select-object" in failure.lower()


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _time(value: Any) -> datetime.datetime | None:
    if value in (None, ""):
        return None
    try:
        return parse_time(value if isinstance(value, datetime.datetime) else str(value))
    except ValueError:
        return None


def _disables_signing(props: dict[str, Any]) -> bool:
    if str(props.get("SectionName", "")).lower() != "enableserializationdatasigning":
        return False
    return any(p.replace(" ", "").lower() == "enabled=false" for p in _strings(props.get("Parameters")))


def _strings(value: Any) -> list[str]:
    """A multi-valued property as text items. ``Parameters`` is a ``MultiValuedProperty`1[System.String]`` (E19
    GetSettingOverride.xml); pypsrp 0.9.1 does not know that type and hands back an object whose ``property_sets``
    hold the ``<LST>`` element as raw XML text."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [s for item in value for s in _strings(item)]
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("<LST"):
            try:
                return [item.text or "" for item in ElementTree.fromstring(text) if item.tag.endswith("S")]
            except ElementTree.ParseError:
                return [text]
        return [text]
    nested = getattr(value, "property_sets", None)
    if nested:
        return _strings(list(nested))
    return [str(value)]

"""What exbe asks the Exchange endpoint (cmdlets, never scripts) and how it reads the answers.

All reads go in ONE pipeline of several statements (one round trip; a second one only when the certificate
projection below is refused or incomplete). Objects are told apart by their type names; each statement's answer is
read on its own (:mod:`exbe.batch`): on a real server a statement that fails leaves an error record and a missing
output, the next statement runs and the pipeline completes (``../shared/real-server-shapes.md`` §4).

What crosses the wire (``../shared/real-server-shapes.md`` §2): ``ExchangeCertificate`` derives from
``X509Certificate2``, which PowerShell serializes as ``RawData`` only, so a client without Exchange's assemblies gets
no ``Thumbprint``, ``Services``, ``FriendlyName`` or ``NotAfter`` — in the healthy state and, ``Deserialized.``
prefixed, in the broken one. exbe reads the thumbprint, subject and dates from ``RawData`` (the thumbprint is the
SHA-1 of the DER bytes) and takes the property bag only where a server sends one. Service assignments are not in
``RawData``: exbe asks for the certificates as ``Get-ExchangeCertificate | Select-Object Thumbprint,Services,RawData``,
evaluated on the server on live objects, so one plain object per certificate carries both and the full objects do
not cross the wire as well (one object per certificate to deserialize instead of two).

Why the certificate statement may not answer, told apart from its error records:

* **projection refused** (a record names ``Select-Object``: not in the session, or its ``-Property`` refused as a
  RestrictedRemoteServer session's proxy does): exbe reads the full objects (certificates from ``RawData``) and the
  assignments are unknown;
* **cmdlet not permitted** (``Get-ExchangeCertificate`` cannot be resolved: Exchange builds each session from the
  account's RBAC roles, so a cmdlet outside them is not there): certificates and assignments are unknown, and exbe
  says which role grants the cmdlet;
* anything else: the full objects are tried once; the server's text is reported either way.

None of these is "blinded" (serialization signing with an expired Auth certificate, :mod:`exbe.signing` and
:func:`exbe.selection.exchange_blinded`), and the server's own error text is always shown as a warning.
"""

from __future__ import annotations

import datetime
import hashlib
import warnings
from collections.abc import Callable
from typing import Any

from cryptography import x509

from . import batch, signing
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
    "HybridConfiguration": "hybrid",
}
#: Microsoft.Exchange.Data.AllowedServices flags (the values the captured SerializationData carries: 27 =
#: IMAP, POP, IIS, SMTP; 16 = SMTP).
_SERVICE_FLAGS = (("IMAP", 1), ("POP", 2), ("UM", 4), ("IIS", 8), ("SMTP", 16), ("FEDERATION", 32),
                  ("UMCALLROUTER", 64))
#: What exbe reads of each certificate, projected on the server: the assignments (not in ``RawData``) and ``RawData``
#: (everything else exbe reads of a certificate).
PROJECTED_PROPERTIES = ["Thumbprint", "Services", "RawData"]
#: The management role that grants each cmdlet exbe runs on the Exchange endpoint, where Microsoft's documentation
#: names it; for the others exbe says how to find it (``Get-ManagementRole -Cmdlet``, Microsoft's documented way).
GRANTING_ROLE = {name: "Exchange Server Certificates" for name in (
    "Get-ExchangeCertificate", "New-ExchangeCertificate", "Enable-ExchangeCertificate")}


def read_statements(server_name: str) -> list[list[Command]]:
    """The read-only statements of preflight/verify, for one server, in :data:`READS`' order."""
    return [
        [("Get-ExchangeServer", {"Identity": server_name})],
        [("Get-AuthConfig", {})],
        [("Get-SettingOverride", {})],
        [("Get-TransportService", {"Identity": server_name})],
        [("Get-FederationTrust", {})],
        [("Get-HybridConfiguration", {})],
        [("Get-ExchangeCertificate", {"Server": server_name}), ("Select-Object", {"Property": PROJECTED_PROPERTIES})],
    ]


def _of_kind(kind: str) -> Callable[[Any], bool]:
    return lambda obj: kind_of(obj) == kind


#: How :func:`exbe.batch.read` knows each statement of :func:`read_statements`: what it writes and runs. Overrides
#: and certificates may be none at all (and a blinded Exchange has been reported to list none).
READS = (
    batch.Statement("Get-ExchangeServer", _of_kind("server"), ("Get-ExchangeServer",)),
    batch.Statement("Get-AuthConfig", _of_kind("auth"), ("Get-AuthConfig",)),
    batch.Statement("Get-SettingOverride", _of_kind("override"), ("Get-SettingOverride",), writes_output=False),
    batch.Statement("Get-TransportService", _of_kind("transport"), ("Get-TransportService",)),
    # an organization without a Federation trust answers nothing
    batch.Statement("Get-FederationTrust", _of_kind("federation"), ("Get-FederationTrust",), writes_output=False),
    # a hybrid organization answers its hybrid configuration, any other nothing (MEAC tests $null)
    batch.Statement("Get-HybridConfiguration", _of_kind("hybrid"), ("Get-HybridConfiguration",),
                    writes_output=False),
    batch.Statement("Get-ExchangeCertificate | Select-Object", _of_kind("projection"),
                    ("Get-ExchangeCertificate", "Select-Object"), writes_output=False),
)
_FULL = batch.Statement("Get-ExchangeCertificate", _of_kind("certificate"), ("Get-ExchangeCertificate",),
                        writes_output=False)


def full_certificates_statement(server_name: str) -> list[list[Command]]:
    """The fallback of :func:`read_statements`: the certificates as full objects (``RawData`` only on the wire)."""
    return [[("Get-ExchangeCertificate", {"Server": server_name})]]


def read_facts(session: Session, server_name: str) -> tuple[ExchangeFacts | None, list[str]]:
    """Exchange facts and the warnings to show (each failed statement with the server's own text); facts None when
    nothing answered. One round trip, two when the certificates must be read as full objects."""
    answers = batch.read(READS, session.run_cmdlets(read_statements(server_name)).events)
    notes = [note for answer in answers for note in _notes(answer)]
    if not any(answer.output for answer in answers):  # nothing answered (a lost runspace, an unusable endpoint)
        return None, notes
    server, auth, overrides, transport, federation, hybrid, projected = answers
    unread: dict[str, str] = {}
    certificates_unknown = ""
    objects = [*server.output, *auth.output, *overrides.output, *transport.output, *federation.output,
               *hybrid.output, *projected.output]
    refusal = _certificates_refusal(projected)
    # each projected certificate read once: its RawData parsed here is what normalise lists
    read = {id(obj): read_certificate(obj) for obj in projected.output if kind_of(obj) == "projection"}
    if refusal is not None and refusal[0] == "denied":
        certificates_unknown = refusal[1]
    elif refusal is not None or not all(_projected_whole(cert) for cert in read.values()):
        (full,) = batch.read([_FULL], session.run_cmdlets(full_certificates_statement(server_name)).events)
        notes += _notes(full)
        objects += full.output
        if full.failed:  # records beside objects (one certificate it could not read) are notes, not a failure
            certificates_unknown = f"Get-ExchangeCertificate failed: {full.why()}"
    for key, answer in (("server", server), ("auth", auth), ("overrides", overrides), ("transport", transport),
                        ("federation", federation), ("hybrid", hybrid)):
        if not answer.clean and not answer.output:
            unread[key] = f"{answer.statement.name}: {answer.why()}"
    if certificates_unknown:
        unread["certificates"] = certificates_unknown
    because = refusal[1] if refusal is not None else ""
    facts = normalise(PipelineOutput(objects, [], [], None), unknown_because=because, server_name=server_name,
                      unread=unread, projected=read)
    return facts, notes


def _notes(answer: batch.Answer) -> list[str]:
    """The warnings one statement's answer gives: its failure, or the records it wrote while answering."""
    name = answer.statement.name
    denied = next(((command, e) for e in answer.errors if e.command_not_found
                   for command in answer.statement.commands if command != "Select-Object" and e.names(command)),
                  None)  # Select-Object is PowerShell's, not a role's: refused, it is the projection refused
    if answer.failed and denied is not None:
        return [f"Exchange: {name} did not answer: {not_permitted(denied[0], denied[1].text)}"]
    if answer.failed:
        return [f"Exchange: {name} did not answer: {answer.why()}"]
    return [f"Exchange: {name}: {error.text}" for error in [*answer.errors, *answer.unplaced]]


def _certificates_refusal(answer: batch.Answer) -> tuple[str, str] | None:
    """Why the certificate statement gave no usable answer, from its records: ("denied", why) when the account may
    not run Get-ExchangeCertificate, ("refused", why) when the endpoint refused the projection, ("failed", why) for
    anything else; None when it answered."""
    records = [*answer.errors, *answer.unplaced]
    if answer.output or not records:
        return None  # it answered (its records are reported), or the list is empty
    denied = next((e for e in records if e.command_not_found and e.names("Get-ExchangeCertificate")), None)
    if denied is not None:
        return "denied", not_permitted("Get-ExchangeCertificate", denied.text)
    refused = next((e for e in records if e.names("Select-Object")), None)
    if refused is not None:
        return "refused", f"the Exchange endpoint refused Select-Object ({refused.text})"
    return "failed", f"the certificate projection did not answer ({answer.why()})"


def not_permitted(cmdlet: str, server_text: str) -> str:
    """A cmdlet the account's RBAC roles do not grant: which one, the role that grants it, and the server's text."""
    role = GRANTING_ROLE.get(cmdlet)
    grant = (f"it is in the '{role}' management role" if role
             else f"`Get-ManagementRole -Cmdlet {cmdlet}` lists the roles that grant it")
    return (f"{cmdlet} is not permitted for this account on the Exchange endpoint ({server_text}); {grant}: assign "
            "that role to the account (directly or through a role group)")


def normalise(result: PipelineOutput, *, unknown_because: str = "", server_name: str | None = None,
              unread: dict[str, str] | None = None,
              projected: dict[int, ExchangeCertificate | None] | None = None) -> ExchangeFacts:
    """The objects of :func:`read_statements` as typed facts; ``unknown_because`` says why assignments that did not
    arrive are missing; ``unread`` what could not be read and why (server, auth, overrides, transport,
    certificates); ``projected`` the projected certificates already read, by ``id`` of their object."""
    projected = projected or {}
    unread = dict(unread or {})
    server: ExchangeServer | None = None
    certificates: dict[str, ExchangeCertificate] = {}
    assignments: dict[str, tuple[str, ...]] = {}
    auth = AuthConfig()
    overrides: list[dict[str, Any]] = []
    internal = None
    federation: FederationFacts | None = None
    hybrid: bool | None = None if "hybrid" in unread else False
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
            cert = projected[id(obj)] if id(obj) in projected else read_certificate(obj)
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
            overrides.append({key: _plain(value) for key, value in props.items()})
        elif kind == "transport":
            internal = normalise_thumbprint(props.get("InternalTransportCertificateThumbprint"))
        elif kind == "federation":
            federation = federation_facts(props)
        elif kind == "hybrid":
            hybrid = True
    state = signing.judge(server.version if server else None, None if "overrides" in unread else overrides,
                          (server.name if server else None) or server_name)
    if state.on is None:
        unread["signing"] = state.why
    listed = []
    for thumb, cert in certificates.items():
        if thumb in assignments:
            cert = ExchangeCertificate(cert.thumbprint, cert.subject, cert.not_after, cert.self_signed,
                                       assignments[thumb])
        listed.append(cert)
    facts = ExchangeFacts(server=server, certificates=tuple(listed), auth=auth, serialization_signing=state.on,
                          internal_transport=internal, signing_why=state.why, unread=unread, federation=federation,
                          hybrid=hybrid)
    missing = [c.thumbprint for c in listed if c.services is None]
    if "certificates" in unread:
        return facts.with_assignments_unknown(unknown_because or unread["certificates"])
    if missing:
        return facts.with_assignments_unknown(
            unknown_because or f"Exchange sent no service assignments for {len(missing)} of {len(listed)} "
                               "certificate(s)")
    return facts


def read_certificate(obj: Any) -> ExchangeCertificate | None:
    """An ExchangeCertificate object in any shape seen or plausible: the property bag where it was sent, else
    ``RawData`` (the thumbprint is the SHA-1 of the DER bytes); None when it carries neither. ``RawData`` is parsed
    only for what the property bag lacks (the full shape carries everything)."""
    props = _props(obj)
    thumb = normalise_thumbprint(props.get("Thumbprint"))
    subject = _str(props.get("Subject"))
    not_after = _time(props.get("NotAfter"))
    self_signed: bool | None = bool(props["IsSelfSigned"]) if "IsSelfSigned" in props else None
    der, parsed = b"", None
    if not (thumb and subject and not_after and self_signed is not None):
        raw = props.get("RawData")
        der = bytes(raw) if isinstance(raw, (bytes, bytearray)) else b""
        parsed = _load_der(der)
    thumb = thumb or (hashlib.sha1(der).hexdigest().upper() if parsed is not None else None)
    subject = subject or (windows_name(parsed.subject) if parsed else None)
    not_after = not_after or (parsed.not_valid_after_utc if parsed else None)
    if self_signed is None and parsed is not None:
        self_signed = parsed.issuer == parsed.subject
    if thumb is None:
        return None
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
    (answer,) = batch.read([_CHANGE["New-ExchangeCertificate"]],
                           session.run_cmdlets([[("New-ExchangeCertificate", params)]]).events)
    thumbs = [c.thumbprint for c in map(read_certificate, answer.output) if c is not None]
    return (thumbs[0] if len(thumbs) == 1 else None), _errors(answer)


def enable_smtp(session: Session, server_name: str, thumbprint: str) -> list[str]:
    """Enable-ExchangeCertificate -Services SMTP (grants NETWORK SERVICE key access, publishes for direct trust)."""
    (answer,) = batch.read([_CHANGE["Enable-ExchangeCertificate"]], session.run_cmdlets(
        [[("Enable-ExchangeCertificate", {"Server": server_name, "Thumbprint": thumbprint, "Services": "SMTP",
                                          "Force": True})]]).events)
    return _errors(answer)


#: The changing cmdlets, one statement each: New-ExchangeCertificate writes the new certificate; Enable writes
#: nothing, so only its records tell.
_CHANGE = {
    "New-ExchangeCertificate": batch.Statement("New-ExchangeCertificate", lambda obj: True,
                                               ("New-ExchangeCertificate",), writes_output=False),
    "Enable-ExchangeCertificate": batch.Statement("Enable-ExchangeCertificate", lambda obj: True,
                                                  ("Enable-ExchangeCertificate",), writes_output=False),
}


def _errors(answer: batch.Answer) -> list[str]:
    """A changing cmdlet's error texts; one it could not run says which role grants it."""
    return [not_permitted(answer.statement.name, e.text) if e.command_not_found and e.names(answer.statement.name)
            else e.text for e in [*answer.errors, *answer.unplaced]]


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


def _projected_whole(cert: ExchangeCertificate | None) -> bool:
    """False for a projected certificate that lacks something exbe reads (then the full objects are asked for)."""
    return cert is not None and cert.services is not None and _whole(cert)


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _time(value: Any) -> datetime.datetime | None:
    if value in (None, ""):
        return None
    try:
        return parse_time(value if isinstance(value, datetime.datetime) else str(value))
    except ValueError:
        return None


def _plain(value: Any) -> Any:
    """A property value as the signing judgement reads it: text for enums and objects (their ToString), lists and
    multi-valued properties kept for :func:`exbe.signing.strings`."""
    if value is None or isinstance(value, (str, int, list, tuple)):
        return value
    if getattr(value, "property_sets", None):
        return value
    text = getattr(value, "to_string", None)
    return str(text) if text is not None else str(value)

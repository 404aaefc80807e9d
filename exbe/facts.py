"""Typed facts, parsed once at the boundary where a step's envelope or Exchange's objects arrive.

The decision modules (``selection``, ``plan``, ``checks``) see only these types: thumbprints are normalised here (upper
case, no spaces, ``None`` when empty), times are aware UTC datetimes, and bindings carry their meaning (address, port,
host header) beside the text IIS reported. Real IIS writes ``IP:port:hostheader`` and spells "all unassigned" both
``:443:`` and ``*:443:`` (``../shared/real-server-shapes.md`` §1), so nothing here compares binding text.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any

ALL_UNASSIGNED = "*"


def normalise_thumbprint(value: Any) -> str | None:
    """``"ab cd"`` -> ``"ABCD"``; empty or None -> None."""
    text = "" if value is None else str(value).replace(" ", "").strip().upper()
    return text or None


def parse_time(value: str | datetime.datetime) -> datetime.datetime:
    """ISO 8601 (``Z`` or an offset, .NET's seven fractional digits allowed) -> aware UTC datetime."""
    if isinstance(value, datetime.datetime):
        moment = value
    else:
        text = value.strip().replace("Z", "+00:00")
        head, dot, tail = text.partition(".")
        if dot:  # Python reads at most six fractional digits
            digits = len(tail) - len(tail.lstrip("0123456789"))
            tail = tail[:min(digits, 6)] + tail[digits:]
            text = f"{head}.{tail}"
        moment = datetime.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.astimezone(datetime.timezone.utc)


def iso(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_binding_information(text: str) -> tuple[str, int | None, str]:
    """``"IP:port:host"`` -> ``(address, port, host)``; an empty address and ``*`` are both :data:`ALL_UNASSIGNED`.

    IPv6 addresses come bracketed (``[::1]:443:``). A text without a host part (``127.0.0.1:443``, which no captured
    server wrote) still parses, so an unexpected spelling is judged by meaning too.
    """
    if text.startswith("["):
        address, _, after = text[1:].partition("]")
        parts = after.lstrip(":").split(":", 1)
    else:
        address, _, after = text.partition(":")
        parts = after.split(":", 1)
    port_text, host = parts[0], parts[1] if len(parts) > 1 else ""
    address = address.strip() or ALL_UNASSIGNED
    port = int(port_text) if port_text.strip().isdigit() else None
    return address, port, host.strip().lower()


@dataclasses.dataclass(frozen=True)
class Binding:
    """One IIS binding as the facts step reported it."""

    site: str
    protocol: str
    information: str  # bindingInformation verbatim, e.g. ":443:", "127.0.0.1:443:", "*:444:"
    address: str
    port: int | None
    host: str
    certificate_hash: str | None
    certificate_store: str

    @classmethod
    def parse(cls, item: Mapping[str, Any]) -> Binding:
        info = str(item["binding_information"])
        address, port, host = parse_binding_information(info)
        return cls(site=str(item["site"]), protocol=str(item.get("protocol") or "https").lower(), information=info,
                   address=address, port=port, host=host,
                   certificate_hash=normalise_thumbprint(item.get("certificate_hash")),
                   certificate_store=str(item.get("certificate_store") or ""))

    def is_https(self, site: str, port: int, address: str = ALL_UNASSIGNED) -> bool:
        """This is ``site``'s https binding on ``address:port`` with no host header."""
        return (self.site == site and self.protocol == "https" and self.port == port and self.host == ""
                and self.address == address)

    @property
    def label(self) -> str:
        return f"{self.site} {self.information}"


@dataclasses.dataclass(frozen=True)
class Certificate:
    """A certificate of ``LocalMachine\\My`` (the contract's CERT)."""

    thumbprint: str
    subject: str
    issuer: str
    friendly_name: str
    not_before: datetime.datetime
    not_after: datetime.datetime
    signature_algorithm: str
    key_algorithm: str
    key_size: int
    has_private_key: bool
    provider: str | None
    provider_type: str | None  # "CSP" | "CNG" | None
    key_accessible: bool | None
    dns_names: tuple[str, ...]
    self_signed: bool

    @classmethod
    def parse(cls, item: Mapping[str, Any]) -> Certificate:
        thumbprint = normalise_thumbprint(item.get("thumbprint"))
        if thumbprint is None:
            raise ValueError("a certificate without a thumbprint")
        return cls(
            thumbprint=thumbprint, subject=str(item.get("subject") or ""), issuer=str(item.get("issuer") or ""),
            friendly_name=str(item.get("friendly_name") or ""), not_before=parse_time(item["not_before"]),
            not_after=parse_time(item["not_after"]), signature_algorithm=str(item.get("signature_algorithm") or ""),
            key_algorithm=str(item.get("key_algorithm") or ""), key_size=int(item.get("key_size") or 0),
            has_private_key=bool(item.get("has_private_key")), provider=item.get("provider"),
            provider_type=item.get("provider_type"), key_accessible=item.get("key_accessible"),
            dns_names=tuple(str(n) for n in item.get("dns_names") or ()), self_signed=bool(item.get("self_signed")))


@dataclasses.dataclass(frozen=True)
class RootCopy:
    thumbprint: str
    subject: str
    not_after: datetime.datetime

    @classmethod
    def parse(cls, item: Mapping[str, Any]) -> RootCopy:
        return cls(thumbprint=normalise_thumbprint(item["thumbprint"]) or "", subject=str(item.get("subject") or ""),
                   not_after=parse_time(item["not_after"]))


@dataclasses.dataclass(frozen=True)
class SiteFacts:
    exists: bool
    hsts_enabled: bool  # the site's hsts element (IIS 10.0 1709+)
    hsts_header: bool  # a custom Strict-Transport-Security response header
    extended_protection: str | None

    @classmethod
    def parse(cls, item: Mapping[str, Any]) -> SiteFacts:
        return cls(exists=bool(item.get("exists")), hsts_enabled=bool(item.get("hsts_enabled")),
                   hsts_header=bool(item.get("hsts_header")), extended_protection=item.get("extended_protection"))


@dataclasses.dataclass(frozen=True)
class HostFacts:
    """The facts step's document: certificate stores, IIS bindings and sites, service states."""

    now: datetime.datetime
    computer_name: str
    fqdn: str
    powershell_version: str
    certificates: tuple[Certificate, ...]
    root: tuple[RootCopy, ...]
    bindings: tuple[Binding, ...]
    sites: Mapping[str, SiteFacts]
    services: Mapping[str, str]
    allow_internal_untrusted_certs: int | None
    document: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> HostFacts:
        computer = data.get("computer") or {}
        return cls(
            now=parse_time(data["now"]), computer_name=str(computer.get("name") or ""),
            fqdn=str(computer.get("fqdn") or ""), powershell_version=str(data.get("powershell_version") or ""),
            certificates=tuple(Certificate.parse(c) for c in data.get("certificates") or ()),
            root=tuple(RootCopy.parse(r) for r in data.get("root") or ()),
            bindings=tuple(Binding.parse(b) for b in data.get("bindings") or ()),
            sites={name: SiteFacts.parse(site) for name, site in (data.get("sites") or {}).items()},
            services={str(k): str(v) for k, v in (data.get("services") or {}).items()},
            allow_internal_untrusted_certs=data.get("allow_internal_untrusted_certs"),
            document=dict(data))

    def certificate(self, thumbprint: str | None) -> Certificate | None:
        wanted = normalise_thumbprint(thumbprint)
        return next((c for c in self.certificates if c.thumbprint == wanted), None) if wanted else None

    def https_binding(self, site: str, port: int, address: str = ALL_UNASSIGNED) -> Binding | None:
        """``site``'s https binding on ``address:port`` without host header, however IIS spelled it."""
        return next((b for b in self.bindings if b.is_https(site, port, address)), None)

    def bindings_of(self, thumbprint: str | None) -> list[Binding]:
        """Every binding that carries this certificate."""
        wanted = normalise_thumbprint(thumbprint)
        return [b for b in self.bindings if wanted and b.certificate_hash == wanted]

    def in_root(self, thumbprint: str | None) -> bool:
        wanted = normalise_thumbprint(thumbprint)
        return any(r.thumbprint == wanted for r in self.root)

    def days_left(self, cert: Certificate) -> int:
        """Whole days until NotAfter (negative once expired), counted as HealthChecker does (floor)."""
        return (cert.not_after - self.now).days


# -- Exchange's view ---------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ExchangeServer:
    name: str | None
    fqdn: str | None
    version: str | None
    edition: str | None


@dataclasses.dataclass(frozen=True)
class ExchangeCertificate:
    """A certificate as ``Get-ExchangeCertificate`` listed it. Real servers send ``RawData`` only, so everything but
    the thumbprint may be missing; ``services`` is None when the assignments could not be read (unknown, not none)."""

    thumbprint: str
    subject: str | None = None
    not_after: datetime.datetime | None = None
    self_signed: bool | None = None
    services: tuple[str, ...] | None = None


@dataclasses.dataclass(frozen=True)
class AuthConfig:
    current: str | None = None
    next: str | None = None
    next_effective: datetime.datetime | None = None
    previous: str | None = None


@dataclasses.dataclass(frozen=True)
class FederationFacts:
    """The Federation trust's certificates (``Get-FederationTrust``): thumbprints and expiry, None where unset."""

    current: str | None = None
    next: str | None = None
    previous: str | None = None
    current_not_after: datetime.datetime | None = None
    next_not_after: datetime.datetime | None = None


@dataclasses.dataclass(frozen=True)
class ExchangeFacts:
    """What the Exchange endpoint reported. ``assignments_unknown`` says why service assignments are unknown (empty
    when they were read); then every certificate's ``services`` is None and exbe takes the conservative path."""

    server: ExchangeServer | None
    certificates: tuple[ExchangeCertificate, ...]
    auth: AuthConfig
    serialization_signing: bool | None  # None: unknown (exbe.signing; ``signing_why`` says why)
    internal_transport: str | None
    assignments_unknown: str = ""
    signing_why: str = ""
    #: what the Exchange endpoint did not answer, and why (keys: server, auth, overrides, transport, certificates,
    #: signing): unknown, never taken for empty
    unread: Mapping[str, str] = dataclasses.field(default_factory=dict)
    federation: FederationFacts | None = None  # None: no Federation trust (or it was not read)
    #: Get-HybridConfiguration answered an object (True) or nothing (False); None: it did not answer (unknown)
    hybrid: bool | None = None

    def certificate(self, thumbprint: str | None) -> ExchangeCertificate | None:
        wanted = normalise_thumbprint(thumbprint)
        return next((c for c in self.certificates if c.thumbprint == wanted), None) if wanted else None

    def with_assignments_unknown(self, reason: str) -> ExchangeFacts:
        return dataclasses.replace(
            self, assignments_unknown=reason,
            certificates=tuple(dataclasses.replace(c, services=None) for c in self.certificates))

    def to_dict(self) -> dict[str, Any]:
        """The run record's form (times as ISO 8601)."""
        def plain(value: Any) -> Any:  # dataclasses.asdict's result, without its deep copy of every value
            if isinstance(value, datetime.datetime):
                return iso(value)
            if isinstance(value, (tuple, list)):
                return [plain(v) for v in value]
            if isinstance(value, Mapping):
                return {k: plain(v) for k, v in value.items()}
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                return {field.name: plain(getattr(value, field.name)) for field in dataclasses.fields(value)}
            return value
        return {field.name: plain(getattr(self, field.name)) for field in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExchangeFacts:
        """The inverse of :meth:`to_dict` (run records, test fixtures)."""
        server = data.get("server")
        auth = data.get("auth") or {}
        def when(value: Any) -> datetime.datetime | None:
            return parse_time(value) if value else None
        return cls(
            server=ExchangeServer(**{k: server.get(k) for k in ("name", "fqdn", "version", "edition")})
            if server else None,
            certificates=tuple(ExchangeCertificate(
                thumbprint=normalise_thumbprint(c["thumbprint"]) or "", subject=c.get("subject"),
                not_after=when(c.get("not_after")), self_signed=c.get("self_signed"),
                services=None if c.get("services") is None else tuple(str(s).upper() for s in c["services"]))
                for c in data.get("certificates") or ()),
            auth=AuthConfig(current=normalise_thumbprint(auth.get("current")),
                            next=normalise_thumbprint(auth.get("next")),
                            next_effective=when(auth.get("next_effective")),
                            previous=normalise_thumbprint(auth.get("previous"))),
            serialization_signing=None if data.get("serialization_signing", True) is None
            else bool(data.get("serialization_signing", True)),
            internal_transport=normalise_thumbprint(data.get("internal_transport")),
            assignments_unknown=str(data.get("assignments_unknown") or ""),
            signing_why=str(data.get("signing_why") or ""),
            unread={str(k): str(v) for k, v in (data.get("unread") or {}).items()},
            hybrid=None if data.get("hybrid") is None else bool(data["hybrid"]))

"""Recorded reality: two real Exchange servers (2016, 2019) and a "broken" certificate listing, as test fixtures.

The facts come from public captures of real servers kept as Pester data in microsoft/CSS-Exchange (the paths are in
``tests/data/real/servers.json`` and ``shapes.json``, one ``source`` per record). No capture file is copied: the
certificates are our own, generated from the captured facts (subject, SAN DNS names, serial number, validity, key size,
signature hash, extension profile) with the fixed keys in ``tests/data/real/keys/``; the same inputs give the same
DER, so thumbprints are stable. Where a capture names a certificate by hash (IIS bindings), the hash is replaced by our
certificate's thumbprint.

The CLIXML writers produce ``<Obj>`` elements as PowerShell's serializer writes them (the member layout of the
captures, ``shapes.json``); :func:`deserialize` turns them into exactly the objects exbe's readers get from pypsrp.
What the captures cannot tell (the raw PSRP wire of a live server, the projection's behaviour) is listed in
``tests/data/real/README.md``.
"""

from __future__ import annotations

import base64
import datetime
import functools
import hashlib
import json
import re
import uuid
import warnings
import zoneinfo
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from xml.etree import ElementTree as ET

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pypsrp.serializer import Serializer

DATA = Path(__file__).parent / "data" / "real"
SHAPES: dict[str, dict[str, Any]] = json.loads((DATA / "shapes.json").read_text(encoding="utf-8"))
_DOC: dict[str, Any] = json.loads((DATA / "servers.json").read_text(encoding="utf-8"))

#: Microsoft.Exchange.Management.SystemConfigurationTasks.AllowedServices (a [Flags] enum), in value order.
ALLOWED_SERVICES: dict[str, int] = {"IMAP": 1, "POP": 2, "UM": 4, "IIS": 8, "SMTP": 16, "Federation": 32,
                                    "UMCallRouter": 64}
#: The CLR type of ExchangeCertificate.Services, as the captures' SerializationData names it.
SERVICES_TYPE = "Microsoft.Exchange.Management.SystemConfigurationTasks.AllowedServices"
PROJECTION_TYPES = ["Selected.Microsoft.Exchange.Management.SystemConfigurationTasks.ExchangeCertificate",
                    "System.Management.Automation.PSCustomObject", "System.Object"]
#: What our own SerializationData bytes say: an opaque placeholder, not a .NET BinaryFormatter stream.
SERIALIZATION_DATA_PREFIX = b"exbe fixture: opaque SerializationData (Exchange rebuilds objects from it)\n"

Shape = Literal["ems", "broken", "full"]


def services_text(flags: int) -> str:
    """An AllowedServices value as .NET prints a flags enum: ``IMAP, POP, IIS, SMTP`` or ``None``."""
    names = [name for name, bit in ALLOWED_SERVICES.items() if flags & bit]
    return ", ".join(names) if names else "None"


def iso(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


# -- certificates ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Origin:
    """Where a capture's objects came from: what PowerShell stamps on each object, and the server's time zone."""

    ps_computer_name: str
    runspace_id: str
    time_zone: str


@dataclass(frozen=True)
class RealCert:
    """One of our certificates, mirroring a captured one; ``friendly_name``/``services`` None where not captured."""

    id: str
    der: bytes
    friendly_name: str | None
    services: int | None
    origin: Origin
    source: str

    @functools.cached_property
    def x509(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.der)

    @property
    def thumbprint(self) -> str:
        return hashlib.sha1(self.der).hexdigest().upper()

    @property
    def subject(self) -> str:
        """As Windows prints it (``X500DistinguishedName.Name``): most specific RDN first."""
        return _windows_name(self.x509, "subject")

    @property
    def issuer(self) -> str:
        return _windows_name(self.x509, "issuer")

    @property
    def serial(self) -> str:
        return f"{self.x509.serial_number:032X}"

    @property
    def not_before(self) -> datetime.datetime:
        return self.x509.not_valid_before_utc

    @property
    def not_after(self) -> datetime.datetime:
        return self.x509.not_valid_after_utc

    @property
    def signature_algorithm(self) -> str:
        """``SignatureAlgorithm.FriendlyName``: ``sha1RSA``, ``sha256RSA``."""
        hash_algorithm = self.x509.signature_hash_algorithm
        return f"{hash_algorithm.name if hash_algorithm else 'unknown'}RSA"

    @property
    def key_size(self) -> int:
        public_key = self.x509.public_key()
        assert isinstance(public_key, rsa.RSAPublicKey)
        return public_key.key_size

    @property
    def san_dns_names(self) -> list[str]:
        try:
            san = self.x509.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return []
        return san.get_values_for_type(x509.DNSName)

    @property
    def dns_names(self) -> list[str]:
        """PowerShell's ``DnsNameList``: the subject's CN when the subject is a lone CN, then the SAN DNS names."""
        names = [self.subject[3:]] if self.subject.upper().startswith("CN=") and "," not in self.subject else []
        return names + [n for n in self.san_dns_names if n not in names]

    @property
    def self_signed(self) -> bool:
        return self.subject == self.issuer

    def x509_text(self) -> str:
        """``X509Certificate.ToString()``: dates in the server's local time, as the captures show them."""
        zone = zoneinfo.ZoneInfo(self.origin.time_zone)

        def local(moment: datetime.datetime) -> str:
            return moment.astimezone(zone).strftime("%m/%d/%Y %H:%M:%S")

        sections = [("Subject", self.subject), ("Issuer", self.issuer), ("Serial Number", self.serial),
                    ("Not Before", local(self.not_before)), ("Not After", local(self.not_after)),
                    ("Thumbprint", self.thumbprint)]
        return "\r\n".join(f"[{title}]\r\n  {value}\r\n" for title, value in sections)

    def cert_facts(self) -> dict[str, Any]:
        """The facts step's CERT for this certificate (``exbe.contract``), private key in a legacy SChannel CSP.

        The captures' key provider info names provider type 12 (PROV_RSA_SCHANNEL), machine key set."""
        return {
            "thumbprint": self.thumbprint, "subject": self.subject, "issuer": self.issuer,
            "friendly_name": self.friendly_name or "",
            "not_before": iso(self.not_before), "not_after": iso(self.not_after),
            "signature_algorithm": self.signature_algorithm, "key_algorithm": "RSA", "key_size": self.key_size,
            "has_private_key": True, "provider": "Microsoft RSA SChannel Cryptographic Provider",
            "provider_type": "CSP", "key_accessible": True, "dns_names": self.dns_names,
            "self_signed": self.self_signed,
        }


_NAME_OIDS = {"CN": NameOID.COMMON_NAME, "OU": NameOID.ORGANIZATIONAL_UNIT_NAME, "O": NameOID.ORGANIZATION_NAME,
              "L": NameOID.LOCALITY_NAME, "S": NameOID.STATE_OR_PROVINCE_NAME, "C": NameOID.COUNTRY_NAME,
              "DC": NameOID.DOMAIN_COMPONENT}
_NAME_LABELS = {oid: label for label, oid in _NAME_OIDS.items()}
#: sha256/sha1WithRSAEncryption AlgorithmIdentifiers (same length: a certificate can be re-signed in place).
_ALG_ID = {name: bytes.fromhex("300d06092a864886f70d0101") + bytes([last]) + b"\x05\x00"
           for name, last in (("sha256", 0x0B), ("sha1", 0x05))}


def _windows_name(cert: x509.Certificate, which: Literal["subject", "issuer"]) -> str:
    with warnings.catch_warnings():  # a captured subject carries C=Germany, which cryptography warns about
        warnings.simplefilter("ignore", UserWarning)
        name = cert.subject if which == "subject" else cert.issuer
    return ", ".join(f"{_NAME_LABELS[a.oid]}={a.value!s}" for a in reversed(list(name)))


def _name(windows_text: str) -> x509.Name:
    """``CN=domain.com, OU=IT, ..., C=Germany`` (most specific first) as a Name encoded as the captures' are:
    PrintableString values (DC an IA5String); ``_validate=False`` lets the captured seven-letter country through."""
    parts = [part.strip().partition("=") for part in windows_text.split(",")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return x509.Name([x509.NameAttribute(_NAME_OIDS[key], value, None if key == "DC" else _ASN1Type.PrintableString,
                                             _validate=False) for key, _, value in reversed(parts)])


def _extensions(builder: x509.CertificateBuilder, profile: str, dns_names: list[str]) -> x509.CertificateBuilder:
    """The extension sets of the captures: Exchange's self-signed certificates, and IIS's WMSvc certificate."""
    if profile == "exchange":
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=True, data_encipherment=False,
            key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False),
            critical=True)
        if dns_names:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]),
                                            critical=False)
        return (builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
    if profile == "wmsvc":
        return (builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .add_extension(x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=True, data_encipherment=True,
                    key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False,
                    decipher_only=False), critical=False))
    assert profile == "none", profile
    return builder


def _sign(builder: x509.CertificateBuilder, key: rsa.RSAPrivateKey, hash_name: str) -> bytes:
    """DER signed with ``hash_name``; cryptography's builder refuses SHA-1, so SHA-1 re-signs the SHA-256 TBS."""
    cert = builder.sign(key, hashes.SHA256())
    der = cert.public_bytes(serialization.Encoding.DER)
    if hash_name == "sha256":
        return der
    assert hash_name == "sha1", hash_name
    tbs = cert.tbs_certificate_bytes
    new_tbs = tbs.replace(_ALG_ID["sha256"], _ALG_ID["sha1"], 1)
    head, rest = der[:der.index(tbs)], der[der.index(tbs) + len(tbs):]
    assert rest.startswith(_ALG_ID["sha256"]) and rest.endswith(cert.signature)
    signature = key.sign(new_tbs, padding.PKCS1v15(), hashes.SHA1())
    bit_string_header = rest[len(_ALG_ID["sha256"]):-len(cert.signature)]
    return head + new_tbs + _ALG_ID["sha1"] + bit_string_header + signature


def _make_cert(spec: dict[str, Any], origin: Origin) -> RealCert:
    key = serialization.load_pem_private_key((DATA / spec["key"]).read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == spec["key_size"]
    name = _name(spec["subject"])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(int(spec["serial"], 16))
               .not_valid_before(_parse_iso(spec["not_before"])).not_valid_after(_parse_iso(spec["not_after"])))
    der = _sign(_extensions(builder, spec["extensions"], spec["dns_names"]), key, spec["signature_hash"])
    return RealCert(spec["id"], der, spec["friendly_name"], spec["services"], origin, spec["source"])


def _origin(record: dict[str, Any]) -> Origin:
    return Origin(record["ps_computer_name"], record["runspace_id"], record["time_zone"])


# -- servers ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RealServer:
    """A captured server: its certificates (ours), IIS bindings, Auth config, sites and services."""

    name: str
    computer_name: str
    fqdn: str
    powershell_version: str
    origin: Origin
    certificates: tuple[RealCert, ...]
    #: Get-WebBinding members as captured (``certificateHash`` is our back-end certificate's thumbprint), plus site.
    web_bindings: tuple[dict[str, Any], ...]
    #: Get-AuthConfig: ``CurrentCertificateThumbprint`` ... as strings ("" when unset), ServiceName, Name.
    auth_config: dict[str, Any]
    sites: dict[str, dict[str, Any]]
    services: dict[str, str]
    #: What the capture's bindings carried; that certificate is not in the capture's Get-ExchangeCertificate.
    captured_binding_hash: str

    backend_site = "Exchange Back End"
    frontend_site = "Default Web Site"
    backend_binding = "*:444:"
    loopback_binding = "127.0.0.1:443:"
    frontend_binding = ":443:"

    def cert(self, cert_id: str) -> RealCert:
        return next(c for c in self.certificates if c.id == cert_id)

    @property
    def backend_thumbprint(self) -> str:
        """The self-signed "Microsoft Exchange" certificate: on ``*:444:``, ``:443:`` and ``127.0.0.1:443:``."""
        return self.cert("exchange").thumbprint

    @property
    def auth_thumbprint(self) -> str:
        return self.cert("auth").thumbprint

    def facts_data(self, now: datetime.datetime) -> dict[str, Any]:
        """The facts step's ``data`` as exbe's facts script would report this server at ``now``.

        Bindings: https ones of the back-end site, then the front-end site, in Get-WebBinding order. Root holds the
        back-end certificate, as Exchange setup puts it there (not captured)."""
        bindings = [{"site": b["site"], "protocol": "https", "binding_information": b["bindingInformation"],
                     "certificate_hash": b["certificateHash"], "certificate_store": b["certificateStoreName"]}
                    for site in (self.backend_site, self.frontend_site)
                    for b in self.web_bindings if b["site"] == site and b["protocol"] == "https"]
        backend = self.cert("exchange")
        return {
            "now": iso(now),
            "computer": {"name": self.computer_name, "fqdn": self.fqdn},
            "powershell_version": self.powershell_version,
            "certificates": [c.cert_facts() for c in self.certificates],
            "root": [{"thumbprint": backend.thumbprint, "subject": backend.subject,
                      "not_after": iso(backend.not_after)}],
            "bindings": bindings,
            "sites": {name: dict(site) for name, site in self.sites.items()},
            "services": dict(self.services),
            "allow_internal_untrusted_certs": None,
        }


def _strip_source(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "source"}


def _server(name: str, record: dict[str, Any]) -> RealServer:
    origin = _origin(record)
    certs = tuple(_make_cert(spec, origin) for spec in record["certificates"])
    by_id = {c.id: c for c in certs}
    bindings = []
    for row in record["web_bindings"]:
        binding = {k: v for k, v in _strip_source(row).items() if k != "certificate"}
        binding["certificateHash"] = by_id[row["certificate"]].thumbprint if row["certificate"] else ""
        bindings.append(binding)
    auth = record["auth_config"]
    auth_config = {
        "CurrentCertificateThumbprint": by_id[auth["current"]].thumbprint if auth["current"] else "",
        "PreviousCertificateThumbprint": by_id[auth["previous"]].thumbprint if auth["previous"] else "",
        "NextCertificateThumbprint": by_id[auth["next"]].thumbprint if auth["next"] else "",
        "NextCertificateEffectiveDate": auth["next_effective"],
        "ServiceName": auth["ServiceName"],
        "Name": auth["Name"],
    }
    return RealServer(
        name=name, computer_name=record["computer"]["name"], fqdn=record["computer"]["fqdn"],
        powershell_version=record["powershell_version"], origin=origin, certificates=certs,
        web_bindings=tuple(bindings), auth_config=auth_config,
        sites={site: _strip_source(facts) for site, facts in record["sites"].items()},
        services=_strip_source(record["services"]), captured_binding_hash=record["captured_binding_hash"])


SERVERS: dict[str, RealServer] = {name: _server(name, record) for name, record in _DOC["servers"].items()}
E16, E19 = SERVERS["e16"], SERVERS["e19"]
#: The certificates of GetExchangeCertificateBroken.xml (serialization signing on, Auth certificate expired).
BROKEN_CERTS: tuple[RealCert, ...] = tuple(_make_cert(spec, _origin(_DOC["broken"]))
                                           for spec in _DOC["broken"]["certificates"])


# -- CLIXML ----------------------------------------------------------------------------------------------------------
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]|_(?=x[0-9A-Fa-f]{4}_)")


def _encode(text: str) -> str:
    """PowerShell's string escaping: control characters (and a ``_`` that would read as one) become ``_xHHHH_``."""
    return _CONTROL.sub(lambda m: f"_x{ord(m.group()):04X}_", text)


class _Stream:
    """One serialization stream (one PIPELINE_OUTPUT message): RefIds count from 0, repeated type lists are TNRefs."""

    def __init__(self) -> None:
        self._objects = 0
        self._types: dict[tuple[str, ...], str] = {}

    def obj(self, parent: ET.Element | None, name: str | None, types: list[str],
            to_string: str | None) -> ET.Element:
        attrs = {"N": name} if name is not None else {}
        element = ET.Element("Obj", attrs) if parent is None else ET.SubElement(parent, "Obj", attrs)
        element.set("RefId", str(self._objects))
        self._objects += 1
        known = self._types.get(tuple(types))
        if known is None:
            known = self._types[tuple(types)] = str(len(self._types))
            tn = ET.SubElement(element, "TN", RefId=known)
            for type_name in types:
                ET.SubElement(tn, "T").text = type_name
        else:
            ET.SubElement(element, "TNRef", RefId=known)
        if to_string is not None:
            ET.SubElement(element, "ToString").text = _encode(to_string)
        return element

    def enum(self, parent: ET.Element, name: str, type_name: str, text: str, value: int) -> ET.Element:
        element = self.obj(parent, name, [type_name, "System.Enum", "System.ValueType", "System.Object"], text)
        ET.SubElement(element, "I32").text = str(value)
        return element


def _value(parent: ET.Element, tag: str, name: str | None, value: Any) -> ET.Element:
    element = ET.SubElement(parent, tag, {"N": name} if name is not None else {})
    if tag == "BA":
        element.text = base64.b64encode(value).decode("ascii")
    elif tag == "B":
        element.text = "true" if value else "false"
    elif tag == "S":
        element.text = _encode(value)
    elif tag != "Nil":
        element.text = str(value)
    return element


def _serialization_data(kind: str, key: str) -> bytes:
    return SERIALIZATION_DATA_PREFIX + f"{kind} {key}".encode("utf-16-le")


def _members(root: ET.Element, origin: Origin | None, serialization_data: bytes | None) -> None:
    """The ``<MS>`` the captures carry: PowerShell remoting's stamp (PSComputerName, RunspaceId,
    PSShowComputerName; left out when ``origin`` is None) and Exchange's SerializationData (when given)."""
    ms = root.find("MS")
    if ms is None:
        if origin is None and serialization_data is None:
            return
        ms = ET.SubElement(root, "MS")
    if origin is not None:
        _value(ms, "S", "PSComputerName", origin.ps_computer_name)
        _value(ms, "G", "RunspaceId", origin.runspace_id)
        _value(ms, "B", "PSShowComputerName", False)
    if serialization_data is not None:
        _value(ms, "BA", "SerializationData", serialization_data)


def _text(element: ET.Element) -> str:
    return ET.tostring(element, encoding="unicode")


def _local_dt(moment: datetime.datetime, origin: Origin) -> str:
    """A local DateTime as PowerShell serializes it (``2019-12-03T14:47:32-08:00``)."""
    return moment.astimezone(zoneinfo.ZoneInfo(origin.time_zone)).isoformat()


def exchange_certificate_clixml(cert: RealCert, *, shape: Shape = "ems", services: int | None = None,
                                decorated: bool = True) -> str:
    """One ``Get-ExchangeCertificate`` / ``New-ExchangeCertificate`` object as an ``<Obj>`` element.

    ``ems``: as captured inside EMS (GetExchangeCertificate.xml): RawData only, SerializationData member.
    ``broken``: as GetExchangeCertificateBroken.xml: ``Deserialized.`` type names, RawData only, no
    SerializationData. ``full`` (not captured; the sandbox's opt-in): ``ems`` plus a property bag with
    Thumbprint, FriendlyName, Services (``services``, default the certificate's own) and the X509 facts.
    ``decorated`` False leaves out the remoting stamp (PSComputerName, RunspaceId, PSShowComputerName)."""
    kind = "ExchangeCertificate.broken" if shape == "broken" else "ExchangeCertificate"
    stream = _Stream()
    root = stream.obj(None, None, SHAPES[kind]["type_names"], cert.x509_text())
    props = ET.SubElement(root, "Props")
    _value(props, "BA", "RawData", cert.der)
    if shape == "full":
        flags = cert.services if services is None else services
        for tag, name, value in (("S", "FriendlyName", cert.friendly_name or ""), ("S", "Thumbprint", cert.thumbprint),
                                 ("S", "Subject", cert.subject), ("S", "Issuer", cert.issuer),
                                 ("S", "SerialNumber", cert.serial),
                                 ("DT", "NotBefore", _local_dt(cert.not_before, cert.origin)),
                                 ("DT", "NotAfter", _local_dt(cert.not_after, cert.origin)),
                                 ("B", "HasPrivateKey", True), ("B", "IsSelfSigned", cert.self_signed),
                                 ("I32", "PublicKeySize", cert.key_size)):
            _value(props, tag, name, value)
        stream.enum(props, "Services", SERVICES_TYPE, services_text(flags or 0), flags or 0)
    serialization_data = None if shape == "broken" else _serialization_data("ExchangeCertificate", cert.thumbprint)
    _members(root, cert.origin if decorated else None, serialization_data)
    return _text(root)


def auth_config_clixml(server: RealServer, *, current: str | None = None, previous: str | None = None,
                       next_thumbprint: str | None = None,
                       next_effective: datetime.datetime | None = None) -> str:
    """``Get-AuthConfig`` as captured (GetAuthConfig.xml): a plain property bag; thumbprints "" when unset.

    The keyword arguments replace the server's Auth configuration (thumbprints as strings)."""
    auth = server.auth_config
    domain = server.fqdn.split(".", 1)[1]
    dn = "CN=Auth Configuration,CN=First Organization,CN=Microsoft Exchange,CN=Services,CN=Configuration," + ",".join(
        f"DC={part}" for part in domain.split("."))
    stream = _Stream()
    root = stream.obj(None, None, SHAPES["AuthConfig"]["type_names"], auth["Name"])
    props = ET.SubElement(root, "Props")
    _value(props, "S", "CurrentCertificateThumbprint",
           auth["CurrentCertificateThumbprint"] if current is None else current)
    _value(props, "S", "PreviousCertificateThumbprint",
           auth["PreviousCertificateThumbprint"] if previous is None else previous)
    _value(props, "S", "NextCertificateThumbprint",
           auth["NextCertificateThumbprint"] if next_thumbprint is None else next_thumbprint)
    if next_effective is None:
        _value(props, "Nil", "NextCertificateEffectiveDate", None)
    else:
        _value(props, "DT", "NextCertificateEffectiveDate", _local_dt(next_effective, server.origin))
    for name in ("ServiceName", "Realm", "DeploymentId", "IssuerIdentifier", "Name", "AdminDisplayName"):
        _value(props, "S", name, auth.get(name, ""))
    version = stream.obj(props, "ExchangeVersion", ["Microsoft.Exchange.Data.ExchangeObjectVersion", "System.Object"],
                         "0.20 (15.0.0.0)")
    version_props = ET.SubElement(version, "Props")
    _value(version_props, "By", "Major", 0)
    _value(version_props, "By", "Minor", 20)
    _value(version_props, "S", "ExchangeBuild", "15.0.0.0")
    _value(props, "S", "DistinguishedName", dn)
    object_id = ["Microsoft.Exchange.Data.Directory.ADObjectId", "Microsoft.Exchange.Data.ObjectId", "System.Object"]
    identity = stream.obj(props, "Identity", object_id, auth["Name"])
    identity_props = ET.SubElement(identity, "Props")
    _value(identity_props, "S", "DistinguishedName", dn)
    _value(identity_props, "S", "Name", auth["Name"])
    _value(props, "G", "Guid", uuid.uuid5(uuid.NAMESPACE_URL, f"exbe-fixture/{server.name}/auth-config"))
    category = stream.obj(props, "ObjectCategory", object_id, f"{domain}/Configuration/Schema/ms-Exch-Auth-Auth-Config")
    _value(ET.SubElement(category, "Props"), "S", "Name", "ms-Exch-Auth-Auth-Config")
    classes = stream.obj(props, "ObjectClass", [
        "Microsoft.Exchange.Data.MultiValuedProperty`1[[System.String, mscorlib, Version=4.0.0.0, Culture=neutral, "
        "PublicKeyToken=b77a5c561934e089]]", "Microsoft.Exchange.Data.MultiValuedPropertyBase", "System.Object"], None)
    values = ET.SubElement(classes, "LST")
    for value in ("top", "container", "msExchContainer", "msExchAuthAuthConfig"):
        _value(values, "S", None, value)
    created = _local_dt(server.cert("auth").not_before, server.origin)
    for name in ("WhenChanged", "WhenCreated"):
        _value(props, "DT", name, created)
    for name in ("WhenChangedUTC", "WhenCreatedUTC"):
        _value(props, "DT", name, iso(server.cert("auth").not_before))
    organization = stream.obj(props, "OrganizationId", ["Microsoft.Exchange.Data.Directory.OrganizationId",
                                                        "System.Object"], "")
    organization_props = ET.SubElement(organization, "Props")
    _value(organization_props, "Nil", "OrganizationalUnit", None)
    _value(organization_props, "Nil", "ConfigurationUnit", None)
    _value(organization_props, "B", "IsConsumerOrganization", False)
    _value(organization_props, "S", "IdForEventLog", "")
    ET.SubElement(props, "Ref", N="Id", RefId=identity.get("RefId", ""))
    _value(props, "S", "OriginatingServer", f"DC1.{domain}")
    _value(props, "B", "IsValid", True)
    stream.enum(props, "ObjectState", "Microsoft.Exchange.Data.ObjectState", "Unchanged", 1)
    _members(root, server.origin, _serialization_data("AuthConfig", server.name))
    return _text(root)


def projection_clixml(thumbprint: str, services_flags: int, *, origin: Origin | None = None) -> str:
    """One object of ``Get-ExchangeCertificate | Select-Object -Property Thumbprint,Services`` (design §5; never
    captured): note properties Thumbprint (string) and Services (the AllowedServices enum). ``origin`` adds the
    remoting stamp."""
    text = services_text(services_flags)
    stream = _Stream()
    root = stream.obj(None, None, PROJECTION_TYPES, f"@{{Thumbprint={thumbprint}; Services={text}}}")
    ms = ET.SubElement(root, "MS")
    _value(ms, "S", "Thumbprint", thumbprint)
    stream.enum(ms, "Services", SERVICES_TYPE, text, services_flags)
    _members(root, origin, None)
    return _text(root)


def deserialize(xml_text: str) -> list[Any]:
    """Each ``<Obj>`` of ``xml_text`` (one ``<Obj>``, or an ``<Objs>`` of self-contained ones, with or without the
    CLIXML namespace) as pypsrp 0.9.1 deserializes a PIPELINE_OUTPUT message: a fresh Serializer per object."""
    root = ET.fromstring(xml_text)
    for element in root.iter():
        element.tag = element.tag.rpartition("}")[2]
    elements = [root] if root.tag == "Obj" else [child for child in root if child.tag == "Obj"]
    return [Serializer().deserialize(element) for element in elements]


def EMS_CERTIFICATES(server: RealServer) -> list[Any]:  # noqa: N802 - named like the constants it stands beside
    """The server's certificates as pypsrp objects in the EMS shape (RawData only)."""
    return [deserialize(exchange_certificate_clixml(c))[0] for c in server.certificates]


BROKEN_CERTIFICATES: list[Any] = [deserialize(exchange_certificate_clixml(c, shape="broken"))[0] for c in BROKEN_CERTS]


# -- Get-ExchangeServer and Get-SettingOverride (added for serialization signing by build, issue 20) ------------------
#: The ExchangeServer type names as EMS shows them (.../E19/Exchange/GetExchangeServer.xml names the server; the
#: hierarchy below the first name is the sandbox's and a belief).
EXCHANGE_SERVER_TYPES = ["Microsoft.Exchange.Data.Directory.Management.ExchangeServer",
                         "Microsoft.Exchange.Data.Directory.Management.ADPresentationObject",
                         "Microsoft.Exchange.Data.Directory.ADObject", "Microsoft.Exchange.Data.Directory.ADRawEntry",
                         "Microsoft.Exchange.Data.ConfigurableObject", "System.Object"]
SETTING_OVERRIDE_TYPES = ["Microsoft.Exchange.Data.Directory.SystemConfiguration.ConfigurationSettings.SettingOverride",
                          "Microsoft.Exchange.Data.Directory.SystemConfiguration.ADConfigurationObject",
                          "Microsoft.Exchange.Data.Directory.ADObject", "System.Object"]
_MVP_STRING = ["Microsoft.Exchange.Data.MultiValuedProperty`1[[System.String, mscorlib, Version=4.0.0.0, "
               "Culture=neutral, PublicKeyToken=b77a5c561934e089]]", "Microsoft.Exchange.Data.MultiValuedPropertyBase",
               "System.Object"]


def exchange_build(server: RealServer) -> str:
    """The captured server's Exchange build (servers.json ``exchange_build``: 15.2.922.7 is 2019 CU10, 15.1.2375.7
    2016 CU22; both older than the January 2023 SU that brought serialization signing)."""
    return str(_DOC["servers"][server.name]["exchange_build"])


def exchange_server_clixml(server: RealServer, *, build: str | None = None) -> str:
    """``Get-ExchangeServer`` as EMS serializes it: a property bag whose ``AdminDisplayVersion`` is a ServerVersion
    object with ToString ``Version 15.2 (Build 922.7)`` (Exchange's own format). Only what exbe reads is written."""
    major, minor, number, revision = (int(n) for n in (build or exchange_build(server)).split("."))
    stream = _Stream()
    root = stream.obj(None, None, EXCHANGE_SERVER_TYPES, server.computer_name)
    props = ET.SubElement(root, "Props")
    _value(props, "S", "Name", server.computer_name)
    _value(props, "S", "Fqdn", server.fqdn)
    version = stream.obj(props, "AdminDisplayVersion", ["Microsoft.Exchange.Data.ServerVersion", "System.Object"],
                         f"Version {major}.{minor} (Build {number}.{revision})")
    version_props = ET.SubElement(version, "Props")
    for name, value in (("Major", major), ("Minor", minor), ("Build", number), ("Revision", revision)):
        _value(version_props, "I32", name, value)
    _members(root, server.origin, _serialization_data("ExchangeServer", server.name))
    return _text(root)


def setting_override_clixml(name: str, *, component: str = "Data", section: str = "EnableSerializationDataSigning",
                            parameters: tuple[str, ...] = ("Enabled=True",), servers: tuple[str, ...] = ()) -> str:
    """One ``Get-SettingOverride`` object (.../E19/Exchange/GetSettingOverride.xml layout): ``Parameters`` and
    ``Server`` as ``MultiValuedProperty`1[System.String]`` (``Server`` $null when organization-wide), ``Status``
    the SettingOverrideStatus enum (Accepted)."""
    stream = _Stream()
    root = stream.obj(None, None, SETTING_OVERRIDE_TYPES, name)
    props = ET.SubElement(root, "Props")
    _value(props, "S", "Name", name)
    _value(props, "S", "ComponentName", component)
    _value(props, "S", "SectionName", section)
    for prop, items in (("Parameters", parameters), ("Server", servers)):
        if not items and prop == "Server":
            _value(props, "Nil", prop, None)
            continue
        values = ET.SubElement(stream.obj(props, prop, _MVP_STRING, None), "LST")
        for item in items:
            _value(values, "S", None, item)
    stream.enum(props, "Status", "Microsoft.Exchange.Data.Directory.SystemConfiguration.ConfigurationSettings."
                                 "SettingOverrideStatus", "Accepted", 3)
    return _text(root)

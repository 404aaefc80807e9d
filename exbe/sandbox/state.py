"""The state of one simulated Exchange server, built from a scenario, kept as JSON.

A scenario (``scenarios.json``) is the baseline plus a few overrides. The vocabulary the loader understands:

``domain``                       DNS suffix of the server's FQDN.
``backend`` / ``public`` / ``auth``
                                 the self-signed "Microsoft Exchange" certificate, the CA-issued Default Web Site
                                 certificate, the Exchange Auth certificate: ``days_left``, ``days_total``,
                                 ``key_size``, ``hash`` (sha256|sha1|md5), ``provider`` (a CSP name or "Microsoft
                                 Software Key Storage Provider" = CNG), ``legacy_csp`` (whether the key's provider
                                 information names a CryptoAPI CSP, a vendor's CSP too; by default judged from the
                                 provider's name), ``key_accessible``, ``services`` (Exchange
                                 service assignment), ``root_copy`` (a copy in LocalMachine\\Root), ``in_store``
                                 (false: the certificate existed, bindings still carry its hash, but My lacks it).
``extra_backend_certs``          a list of further self-signed "Microsoft Exchange" certificates (same fields, and
                                 ``key_of``: a role whose private key, and so key container, it shares, as a
                                 certificate renewed with the same key does).
``bindings``                     per site, IIS bindingInformation (``IP:port:hostheader``) -> a certificate role
                                 (``"backend"``, ``"public"``, ``"auth"``: an https binding carrying that
                                 certificate) | ``"empty"`` (https, no hash) | ``"http"`` (an http binding) |
                                 ``null`` (no such binding), or ``{"role": ..., "ssl_flags": n}`` (sslFlags: 1 SNI,
                                 2 Central Certificate Store). Entries are read in order and matched by meaning
                                 (``:443:`` and ``*:443:`` are the same binding): a later entry replaces an earlier
                                 one of the same meaning, so an override may use either spelling.
``sites``                        per site ``hsts_enabled``, ``hsts_header`` (a ``Strict-Transport-Security``
                                 custom response header), ``extended_protection`` (None|Allow|Require).
``services``                     Windows service states (W3SVC, WAS).
``allow_internal_untrusted_certs``  the MSExchange OWA registry value, null when absent (a number is a REG_DWORD,
                                 a string a REG_SZ).
``ssl_bindings``                 further http.sys SSL bindings that no IIS site binding makes (WMSvc's
                                 ``0.0.0.0!8172``): name -> a certificate role.
``winrm_listeners``              WinRM listeners: ``transport``, ``address``, ``port``, ``certificate`` (a role, for
                                 an HTTPS listener).
``exchange``                     ``version``, ``edition``, ``signing`` (false adds the override that disables
                                 serialization signing), ``internal_transport`` (a role), ``events`` (event ids),
                                 ``wire`` (how ExchangeCertificate objects cross the wire: ``"rawdata"``, the
                                 captured default, or ``"full"``, which adds the property bag), ``select_object``
                                 (``"allowed"`` | ``"refused"``: whether the endpoint exposes Select-Object).

Keys starting with ``_`` are comments. Objects map one-to-one onto JSON (but for the runtime counter
``HostState.iis_restarts``); ``HostState.to_dict()`` is what the sandbox saves and what tests compare.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from . import certs
from .private import DIR_MODE, write_private

SCHEMA = 1
SCENARIOS_FILE = Path(__file__).with_name("scenarios.json")

BACKEND_SITE = "Exchange Back End"
FRONTEND_SITE = "Default Web Site"
#: Binding spellings as Get-WebBinding reports them on Exchange 2016/2019 (CSS-Exchange captures
#: Diagnostics/HealthChecker/Tests/DataCollection/E19/Exchange/IIS/GetWebBinding.xml and .../E16/...).
BACKEND_BINDING = "*:444:"
FRONTEND_BINDING = ":443:"
LOOPBACK_BINDING = "127.0.0.1:443:"
#: certificateStoreName as IIS reports it (same captures).
CERTIFICATE_STORE = "MY"
WIRE_SHAPES = ("rawdata", "full")
SELECT_OBJECT_MODES = ("allowed", "refused")
CSP_PROVIDER = "Microsoft RSA SChannel Cryptographic Provider"
CNG_PROVIDER = "Microsoft Software Key Storage Provider"
AUTH_SUBJECT = "Microsoft Exchange Server Auth Certificate"
#: Legacy CryptoAPI providers; any other provider name is a CNG key storage provider.
CSP_PROVIDERS = frozenset({
    CSP_PROVIDER,
    "Microsoft Enhanced RSA and AES Cryptographic Provider",
    "Microsoft Enhanced Cryptographic Provider v1.0",
    "Microsoft Strong Cryptographic Provider",
    "Microsoft Base Cryptographic Provider v1.0",
})

_EVENTS = {
    15021: ("System", "HttpEvent", "Error",
            "An error occurred while using SSL configuration for endpoint 0.0.0.0:444. The error status code is "
            "contained within the returned data."),
    12016: ("Application", "MSExchangeTransport", "Error",
            "There is no valid SMTP Transport Layer Security (TLS) certificate for the FQDN of {fqdn}. The existing "
            "certificate for that FQDN has expired."),
    12017: ("Application", "MSExchangeTransport", "Warning",
            "An internal transport certificate will expire soon. Thumbprint:{thumb}, hours remaining: {hours}"),
    12018: ("Application", "MSExchangeTransport", "Warning",
            "The STARTTLS certificate will expire soon: subject: {subject}, thumbprint: {thumb}, hours remaining: "
            "{hours}. Run the New-ExchangeCertificate cmdlet to create a new certificate."),
    1003: ("Application", "MSExchange Front End HTTP Proxy", "Error",
           "[Owa] An internal server error occurred. The unhandled exception was: System.NullReferenceException: "
           "Object reference not set to an instance of an object. (the Auth certificate {auth} has expired)"),
}


def utcnow() -> datetime.datetime:
    """The simulated servers' clock: real time unless a test moved it (:mod:`exbe.sandbox.clock`)."""
    from . import clock

    return clock.now()


def provider_type(provider: str | None) -> str | None:
    if provider is None:
        return None
    return "CSP" if provider in CSP_PROVIDERS else "CNG"


@dataclasses.dataclass
class StoredCert:
    """A certificate in a LocalMachine store, with its private key as the sandbox models it.

    ``key_accessible``: the private key opens for the machine (what http.sys/schannel need; the contract's
    ``key_accessible``). ``network_service_read``: NETWORK SERVICE may read the key, which Exchange transport needs
    for SMTP; only ``Enable-ExchangeCertificate -Services SMTP`` (or a New-ExchangeCertificate with SMTP) grants it.
    """

    pem: str
    key_pem: str | None = None
    friendly_name: str = ""
    provider: str | None = None
    key_accessible: bool | None = None
    network_service_read: bool = False
    exportable: bool = False
    #: Whether the key's provider information names a CryptoAPI CSP (a non-zero provider type; Microsoft's
    #: CRYPT_KEY_PROV_INFO reference: "If this member is zero, the key container is one of the CNG key storage
    #: providers"), None: judged from the provider's name (:data:`CSP_PROVIDERS`). A vendor's CSP is a CSP whatever
    #: its name.
    legacy_csp: bool | None = None

    @property
    def thumbprint(self) -> str:
        return certs.thumbprint(self.pem)

    @property
    def provider_type(self) -> str | None:
        """CSP or CNG as the key's provider information says (what exbe's templates read), None without a key."""
        if not self.key_pem:
            return None
        if self.legacy_csp is None:
            return provider_type(self.provider)
        return "CSP" if self.legacy_csp else "CNG"

    @property
    def key_container(self) -> str | None:
        """The key's unique container name (its file under MachineKeys or Crypto\\Keys): one key, one container;
        certificates that share a key share it (``key_of``)."""
        if not self.key_pem:
            return None
        return hashlib.sha1(self.key_pem.encode("ascii")).hexdigest()

    @property
    def info(self) -> dict[str, Any]:
        return certs.cert_info(self.pem)

    @property
    def not_after(self) -> datetime.datetime:
        return certs.load_cert(self.pem).not_valid_after_utc

    def public_copy(self) -> StoredCert:
        """What ``X509Store.Add`` of the public part puts into another store."""
        return StoredCert(pem=self.pem, friendly_name=self.friendly_name)

    def to_dict(self) -> dict[str, Any]:
        return {"thumbprint": self.thumbprint, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StoredCert:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


_BINDING_INFORMATION = re.compile(r"^(?P<address>\[[^\]]*\]|[^:]*):(?P<port>\d+)(?::(?P<host>.*))?$")


def parse_binding_information(text: str) -> tuple[str, int, str]:
    """IIS ``bindingInformation`` (``IP:port:hostheader``) -> (address, port, host header), by meaning.

    An empty address and ``*`` both mean "all unassigned" and come back as ``*``; the host header is lower-cased
    (host names compare case-insensitively); a missing trailing colon means no host header. Unparseable text comes
    back as (text, 0, "") so that it only ever matches itself.
    """
    match = _BINDING_INFORMATION.match(text.strip())
    if match is None:
        return text, 0, ""
    return _meaning(match["address"], int(match["port"]), match["host"] or "")


def _meaning(address: str, port: int, host_header: str) -> tuple[str, int, str]:
    return ("*" if address in ("", "*") else address), port, host_header.lower()


def same_binding(first: str, second: str) -> bool:
    """Whether two bindingInformation strings name the same binding (``:443:`` == ``*:443:``)."""
    return parse_binding_information(first) == parse_binding_information(second)


@dataclasses.dataclass
class Binding:
    """One IIS site binding. ``binding_information`` keeps the spelling IIS reports; compare by meaning."""

    protocol: str
    binding_information: str
    certificate_hash: str = ""
    certificate_store: str = ""
    #: IIS sslFlags: bit 1 (1) SNI, bit 2 (2) Central Certificate Store.
    ssl_flags: int = 0

    @property
    def address(self) -> str:
        """The IP address, ``*`` for all unassigned (whether IIS spells it ``*`` or leaves it empty)."""
        return parse_binding_information(self.binding_information)[0]

    @property
    def port(self) -> int:
        return parse_binding_information(self.binding_information)[1]

    @property
    def host_header(self) -> str:
        return parse_binding_information(self.binding_information)[2]

    @property
    def all_unassigned(self) -> bool:
        return self.address == "*"

    def means(self, port: int, address: str = "*", host_header: str = "") -> bool:
        """Whether this binding is ``address:port:host_header`` (``""`` and ``"*"`` both = all unassigned)."""
        return parse_binding_information(self.binding_information) == _meaning(address, port, host_header)


@dataclasses.dataclass
class Site:
    name: str
    bindings: list[Binding] = dataclasses.field(default_factory=list)
    hsts_enabled: bool = False
    hsts_header: bool = False
    extended_protection: str = "None"

    def binding(self, protocol: str, binding_information: str) -> Binding | None:
        """The ``protocol`` binding that means ``binding_information``, whatever its spelling."""
        wanted = parse_binding_information(binding_information)
        return next((b for b in self.bindings if b.protocol == protocol
                     and parse_binding_information(b.binding_information) == wanted), None)

    def https(self, binding_information: str) -> Binding | None:
        return self.binding("https", binding_information)

    def https_binding(self, port: int, address: str = "*", host_header: str = "") -> Binding | None:
        """The https binding ``address:port:host_header`` by meaning, e.g. ``https_binding(443)`` finds the public
        binding whether IIS spells it ``:443:`` or ``*:443:``, ``https_binding(443, "127.0.0.1")`` the loopback one."""
        return next((b for b in self.bindings if b.protocol == "https" and b.means(port, address, host_header)),
                    None)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Site:
        return cls(name=data["name"], bindings=[Binding(**b) for b in data.get("bindings", [])],
                   hsts_enabled=data.get("hsts_enabled", False), hsts_header=data.get("hsts_header", False),
                   extended_protection=data.get("extended_protection", "None"))


@dataclasses.dataclass
class ExchangeConfig:
    """What Exchange keeps in Active Directory and its own configuration for this server."""

    server_name: str
    fqdn: str
    version: str
    edition: str
    services: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # thumbprint -> ["IMAP", "SMTP", ...]
    internal_transport: str | None = None
    auth_current: str | None = None
    auth_next: str | None = None
    auth_next_effective: str | None = None
    auth_previous: str | None = None
    setting_overrides: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    events: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    wire: str = "rawdata"
    select_object: str = "allowed"

    @property
    def signing_enabled(self) -> bool:
        """Serialization payload signing: on by default (Exchange SE, and 2019 since the Nov 2023 SU) unless an
        override sets ``Enabled=false``."""
        for override in self.setting_overrides:
            if str(override.get("SectionName", "")).lower() == "enableserializationdatasigning" and any(
                    p.replace(" ", "").lower() == "enabled=false" for p in override.get("Parameters", [])):
                return False
        return True


@dataclasses.dataclass
class HostState:
    """One simulated Exchange server (see the module docstring)."""

    host: str
    scenario: str
    computer_name: str
    fqdn: str
    my: list[StoredCert]
    root: list[StoredCert]
    sites: dict[str, Site]
    services: dict[str, str]
    allow_internal_untrusted_certs: int | str | None
    exchange: ExchangeConfig
    powershell_version: str = "5.1.17763.1"
    #: The files of ``%ProgramData%\exbe`` (exbe's lock record ``lock.json`` and ``last-run.json``): name ->
    #: ``{"text": content, "written_at": ISO time}``; see exbe.sandbox.steps for the Windows file semantics.
    exbe_files: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    #: The SIDs that the ACL of ``%ProgramData%\exbe`` allows (None: no such directory yet, or, with exbe_files, one
    #: whose ACL is not given). exbe creates it with Administrators and SYSTEM only (lock.ps1.j2); a scenario may give
    #: a looser one, as a directory created by hand.
    exbe_directory_acl: list[str] | None = None
    #: What else Windows would say of ``%ProgramData%\exbe``: ``owner`` (a SID; absent: Administrators, as exbe creates
    #: it) and ``reparse`` (a junction's target; absent: a plain folder). A file of ``exbe_files`` may carry the same
    #: two keys. A local user who created the folder first owns it (real-server-shapes.md, %ProgramData%).
    exbe_directory_place: dict[str, str] = dataclasses.field(default_factory=dict)
    #: IIS stops (iisreset, Restart-Service W3SVC/WAS) since this state was loaded: each one ends the runspace pools
    #: of the Exchange endpoint, an IIS application. Runtime only, not part of the JSON.
    iis_restarts: int = 0
    #: http.sys SSL bindings that no IIS site binding makes (``IIS:\SslBindings`` name -> thumbprint), e.g. WMSvc's.
    ssl_bindings: dict[str, str] = dataclasses.field(default_factory=dict)
    #: WinRM listeners (``WSMan:\localhost\Listener``): ``Transport``, ``Address``, ``Port``,
    #: ``CertificateThumbprint`` as the WSMan provider names them.
    winrm_listeners: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    # -- queries -----------------------------------------------------------------------------------------------------
    def store(self, name: str) -> list[StoredCert]:
        lowered = name.lower()
        if lowered == "my":
            return self.my
        if lowered == "root":
            return self.root
        raise KeyError(f"the sandbox models the stores My and Root, not {name!r}")

    def find(self, store: str, thumb: str | None) -> StoredCert | None:
        wanted = (thumb or "").replace(" ", "").upper()
        return next((c for c in self.store(store) if c.thumbprint == wanted), None) if wanted else None

    def binding(self, site: str, binding_information: str) -> Binding | None:
        """The https binding of ``site`` that means ``binding_information`` (any spelling), or None."""
        found = self.sites.get(site)
        return found.https(binding_information) if found else None

    def https_binding(self, site: str, port: int, address: str = "*", host_header: str = "") -> Binding | None:
        """:meth:`Site.https_binding` of ``site`` (None when the site does not exist)."""
        found = self.sites.get(site)
        return found.https_binding(port, address, host_header) if found else None

    def auth_certificate_expired(self, now: datetime.datetime | None = None) -> bool:
        current = self.find("My", self.exchange.auth_current)
        return current is None or current.not_after <= (now or utcnow())

    def exchange_cmdlets_blinded(self, now: datetime.datetime | None = None) -> bool:
        """Serialization signing with an expired Auth certificate: Exchange cmdlets cannot return certificates."""
        return self.exchange.signing_enabled and self.auth_certificate_expired(now)

    # -- JSON --------------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "host": self.host,
            "scenario": self.scenario,
            "computer": {"name": self.computer_name, "fqdn": self.fqdn},
            "powershell_version": self.powershell_version,
            "certificates": {"my": [c.to_dict() for c in self.my], "root": [c.to_dict() for c in self.root]},
            "sites": {name: dataclasses.asdict(site) for name, site in self.sites.items()},
            "services": dict(self.services),
            "allow_internal_untrusted_certs": self.allow_internal_untrusted_certs,
            "exchange": dataclasses.asdict(self.exchange),
            "exbe_files": copy.deepcopy(self.exbe_files),
            "exbe_directory_acl": copy.copy(self.exbe_directory_acl),
            "ssl_bindings": dict(self.ssl_bindings),
            "winrm_listeners": copy.deepcopy(self.winrm_listeners),
            "exbe_directory_place": dict(self.exbe_directory_place),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HostState:
        if data.get("schema") != SCHEMA:
            raise ValueError(f"sandbox host state schema {data.get('schema')!r} is not {SCHEMA}; start a fresh state")
        return cls(
            host=data["host"],
            scenario=data["scenario"],
            computer_name=data["computer"]["name"],
            fqdn=data["computer"]["fqdn"],
            powershell_version=data.get("powershell_version", "5.1.17763.1"),
            my=[StoredCert.from_dict(c) for c in data["certificates"]["my"]],
            root=[StoredCert.from_dict(c) for c in data["certificates"]["root"]],
            sites={name: Site.from_dict(site) for name, site in data["sites"].items()},
            services=dict(data["services"]),
            allow_internal_untrusted_certs=data.get("allow_internal_untrusted_certs"),
            exchange=ExchangeConfig(**copy.deepcopy(data["exchange"])),
            exbe_files=copy.deepcopy(data.get("exbe_files", {})),
            exbe_directory_acl=copy.copy(data.get("exbe_directory_acl")),
            ssl_bindings=dict(data.get("ssl_bindings", {})),
            winrm_listeners=copy.deepcopy(data.get("winrm_listeners", [])),
            exbe_directory_place=dict(data.get("exbe_directory_place", {})),
        )

    def save(self, path: Path) -> None:
        """Atomic write: a reader never sees half a state. Owner-only from creation: it holds private keys."""
        path = Path(path)
        path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        write_private(path, json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path) -> HostState:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    @classmethod
    def from_scenario(cls, host: str, scenario: str, *, fqdn: str | None = None,
                      now: datetime.datetime | None = None) -> HostState:
        return _Builder(host, scenario, fqdn, now or utcnow()).build()


# -- scenarios -------------------------------------------------------------------------------------------------------
def _scenario_file() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(SCENARIOS_FILE.read_text(encoding="utf-8"))
    return document


def scenario_names() -> list[str]:
    return list(_scenario_file()["scenarios"])


def scenario_overrides() -> dict[str, dict[str, Any]]:
    """Each scenario's overrides of the baseline, as scenarios.json declares them (``exbe sandbox --list``)."""
    scenarios: dict[str, dict[str, Any]] = _scenario_file()["scenarios"]
    return scenarios


def scenario_spec(name: str) -> dict[str, Any]:
    """The baseline with the scenario's overrides merged in (dicts merge, everything else replaces)."""
    document = _scenario_file()
    if name not in document["scenarios"]:
        raise ValueError(f"unknown sandbox scenario {name!r}; known: {', '.join(document['scenarios'])}")
    return _merge(document["baseline"], document["scenarios"][name])


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` over ``base``: where both hold a dict under a key they merge, any other value replaces (copied)."""
    merged = dict(base)
    for key, value in override.items():
        current = base.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            merged[key] = _merge(current, value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


class _Builder:
    """Turns a merged scenario spec into a :class:`HostState`."""

    def __init__(self, host: str, scenario: str, fqdn: str | None, now: datetime.datetime) -> None:
        self.spec = scenario_spec(scenario)
        self.host = host
        self.scenario = scenario
        self.name = host.split(".")[0].upper()
        self.fqdn = (fqdn or f"{host.split('.')[0]}.{self.spec['domain']}").lower()
        self.now = now.astimezone(datetime.timezone.utc).replace(microsecond=0)
        self.my: list[StoredCert] = []
        self.root: list[StoredCert] = []
        self.roles: dict[str, StoredCert] = {}
        self.services: dict[str, list[str]] = {}

    def build(self) -> HostState:
        spec = self.spec
        self._add("backend", spec["backend"], key_index=0)
        self._add("public", spec["public"], key_index=1)
        self._add("auth", spec["auth"], key_index=2)
        key_indexes = {"backend": 0, "public": 1, "auth": 2}
        for n, extra in enumerate(spec["extra_backend_certs"]):
            role = f"extra{n}"
            key_indexes[role] = key_indexes[extra["key_of"]] if "key_of" in extra else 3 + n
            self._add(role, _merge(spec["backend"] | {"in_store": True}, extra), key_index=key_indexes[role])
        issuing_ca = certs.contoso_issuing_ca()
        self.root.append(StoredCert(pem=issuing_ca.ca_pem, friendly_name="Contoso Issuing CA"))
        exchange_spec = spec["exchange"]
        exchange = ExchangeConfig(
            server_name=self.name,
            fqdn=self.fqdn,
            version=exchange_spec["version"],
            edition=exchange_spec["edition"],
            services=self.services,
            internal_transport=self._thumb(exchange_spec.get("internal_transport")),
            auth_current=self.roles["auth"].thumbprint,
        )
        if not exchange_spec.get("signing", True):
            exchange.setting_overrides.append({
                "Name": "DisableSigning", "ComponentName": "Data", "SectionName": "EnableSerializationDataSigning",
                "Parameters": ["Enabled=false"], "Reason": "Disabled by the sandbox scenario", "Server": [self.name],
            })
        exchange.events = [self._event(event_id) for event_id in exchange_spec.get("events", [])]
        for key, allowed in (("wire", WIRE_SHAPES), ("select_object", SELECT_OBJECT_MODES)):
            value = exchange_spec.get(key, allowed[0])
            if value not in allowed:
                raise ValueError(f"scenario {self.scenario!r}: exchange.{key} is {value!r}, not one of {allowed}")
            setattr(exchange, key, value)
        sites = {name: Site(name=name, hsts_enabled=options.get("hsts_enabled", False),
                            hsts_header=options.get("hsts_header", False),
                            extended_protection=options.get("extended_protection", "None"))
                 for name, options in spec["sites"].items()}
        for site_name, bindings in spec["bindings"].items():
            site = sites.setdefault(site_name, Site(name=site_name))
            for info, role in bindings.items():
                self._bind(site, info, role)
        ssl_bindings = {name: self._thumb(role) or "" for name, role in spec.get("ssl_bindings", {}).items()}
        listeners = [{"Transport": listener["transport"], "Address": listener["address"], "Port": listener["port"],
                      "CertificateThumbprint": self._thumb(listener.get("certificate")) or ""}
                     for listener in spec.get("winrm_listeners", [])]
        return HostState(
            host=self.host, scenario=self.scenario, computer_name=self.name, fqdn=self.fqdn,
            my=self.my, root=self.root, sites=sites, services=dict(spec["services"]),
            allow_internal_untrusted_certs=spec["allow_internal_untrusted_certs"], exchange=exchange,
            ssl_bindings=ssl_bindings, winrm_listeners=listeners,
        )

    def _bind(self, site: Site, info: str, entry: str | dict[str, Any] | None) -> None:
        """One ``bindings`` entry: replaces a binding of the same meaning (either protocol) in its place."""
        role = entry.get("role") if isinstance(entry, dict) else entry
        ssl_flags = int(entry.get("ssl_flags", 0)) if isinstance(entry, dict) else 0
        index = next((n for n, b in enumerate(site.bindings) if same_binding(b.binding_information, info)), None)
        if role is None:
            if index is not None:
                del site.bindings[index]
            return
        if role == "http":
            binding = Binding("http", info)
        else:
            thumb = "" if role == "empty" else self._thumb(role) or ""
            binding = Binding("https", info, thumb, CERTIFICATE_STORE if thumb else "", ssl_flags)
        if index is None:
            site.bindings.append(binding)
        else:
            site.bindings[index] = binding

    def _thumb(self, role: str | None) -> str | None:
        if role is None:
            return None
        if role not in self.roles:
            raise ValueError(f"scenario {self.scenario!r} refers to unknown certificate role {role!r}")
        return self.roles[role].thumbprint

    def _add(self, role: str, spec: dict[str, Any], *, key_index: int) -> None:
        not_after = self.now + datetime.timedelta(days=spec["days_left"])
        not_before = not_after - datetime.timedelta(days=spec["days_total"])
        key_size = spec.get("key_size", 2048)
        if role == "public":
            pem, key = certs.make_ca_issued(spec["subject"], spec["dns_names"], not_before, not_after,
                                            key_size=key_size, key_index=key_index)
            friendly = spec["friendly_name"]
        elif role == "auth":
            pem, key = certs.make_self_signed(AUTH_SUBJECT, [], not_before, not_after, key_size, key_index=key_index)
            friendly = AUTH_SUBJECT
        else:
            pem, key = certs.make_self_signed(self.name, [self.name, self.fqdn], not_before, not_after, key_size,
                                              spec.get("hash", "sha256"), key_index=key_index)
            friendly = spec.get("friendly_name", "Microsoft Exchange")
        provider = spec.get("provider", CSP_PROVIDER)
        cert = StoredCert(pem=pem, key_pem=key, friendly_name=friendly, provider=provider,
                          legacy_csp=spec.get("legacy_csp"), key_accessible=spec.get("key_accessible", True),
                          network_service_read="SMTP" in spec.get("services", []) or role == "auth",
                          exportable=role == "auth")
        self.roles[role] = cert
        if not spec.get("in_store", True):
            return
        self.my.append(cert)
        if spec.get("root_copy"):
            self.root.append(cert.public_copy())
        if spec.get("services"):
            self.services[cert.thumbprint] = list(spec["services"])

    def _event(self, event_id: int) -> dict[str, Any]:
        log, source, level, text = _EVENTS[event_id]
        backend = self.roles["backend"]
        hours = max(0, int((backend.not_after - self.now).total_seconds() // 3600))
        message = text.format(fqdn=self.fqdn, thumb=backend.thumbprint, subject=backend.info["subject"],
                              hours=hours, auth=self.roles["auth"].thumbprint)
        return {"id": event_id, "log": log, "source": source, "level": level,
                "time": certs.iso(self.now - datetime.timedelta(hours=2)), "message": message}

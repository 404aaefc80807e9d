"""The Exchange cmdlets of the ``Microsoft.Exchange`` endpoint that exbe uses, modelled on a :class:`HostState`.

Parameters are validated as PowerShell binds them (names case-insensitive, unknown ones refused with
``NamedParameterNotFound``). A cmdlet builds *live* objects (:class:`Live`, what the object is inside the server);
:func:`run_pipeline` serializes them for the wire as real servers do, or projects them with ``Select-Object``.

Wire shapes, each from a CSS-Exchange capture (microsoft/CSS-Exchange, Export-Clixml inside EMS) or marked belief:

* ExchangeCertificate (``Diagnostics/HealthChecker/Tests/DataCollection/E19/Exchange/GetExchangeCertificate.xml``):
  the four X509 type names, adapted property ``RawData`` only (DER), members ``PSComputerName``, ``RunspaceId``,
  ``PSShowComputerName``, ``SerializationData`` (opaque bytes here), ToString the X509 text. ``exchange.wire:
  "full"`` adds the property bag to the adapted properties (belief: no capture of such a wire exists), with
  ``Services`` an ``AllowedServices`` enum, the type the capture's SerializationData names.
* ``<Get-cmdlet> | Select-Object -Property ...``: PSCustomObjects ``Selected.<type>`` with note properties, as
  Select-Object output serializes (no capture of Exchange's; see :func:`_select`).
* serialization signing + an expired Auth certificate (``Diagnostics/HealthChecker/DataCollection/
  ExchangeInformation/Tests/DataCollection/GetExchangeCertificateBroken.xml``): the same objects with
  ``Deserialized.`` type names and no ``SerializationData``; ``New-ExchangeCertificate`` writes a non-terminating
  error and creates nothing.
* AuthConfig (``.../E19/Exchange/GetAuthConfig.xml``), ExchangeServer (``.../E19/Exchange/GetExchangeServer.xml``),
  SettingOverride (``.../E19/Exchange/GetSettingOverride.xml``): property bags in the adapted properties with the
  captured type names and tags, the same four members. AuthConfig carries exactly the captured property names;
  ExchangeServer and SettingOverride the subset exbe could read; nested objects (ADObjectId, ExchangeObjectVersion,
  ...) keep the captured type names and ToString with a subset of their properties. TransportServer has no capture
  (belief).

A caveat the captures cannot settle: they were exported by EMS, itself a remoting client. PowerShell's remoting
client adds ``PSComputerName``/``RunspaceId``/``PSShowComputerName`` and the ``Deserialized.`` prefix when it
deserializes, so what a server puts on the wire to pypsrp may lack them. The sandbox sends what the captures show;
exbe must depend on neither.

Other behaviours that trip up the popular manual fix:

* making a certificate the SMTP certificate while another one is the default asks "Overwrite the existing default
  SMTP certificate?", which a remote, non-interactive session cannot answer (a terminating error) unless ``-Force``;
  nothing is created or changed then;
* ``-Services IIS`` re-points the Default Web Site's public https 443 binding (``:443:`` or ``*:443:``), never 444;
  SMTP grants NETWORK SERVICE key access;
* ``Remove-ExchangeCertificate`` refuses the internal transport certificate and, without ``-Confirm:$false``,
  fails on its confirmation prompt.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from cryptography.hazmat.primitives import serialization

from . import certs, windows
from .faults import Faults
from .records import EnumValue, ErrorInfo, Outcome, SandboxObject, TerminatingError, command_not_found
from .state import (
    CERTIFICATE_STORE,
    CSP_PROVIDER,
    FRONTEND_BINDING,
    FRONTEND_SITE,
    Binding,
    HostState,
    Site,
    StoredCert,
    utcnow,
)

CERTIFICATE_TYPE = "Microsoft.Exchange.Management.SystemConfigurationTasks.ExchangeCertificate"
CERTIFICATE_TYPES = [CERTIFICATE_TYPE, "System.Security.Cryptography.X509Certificates.X509Certificate2",
                     "System.Security.Cryptography.X509Certificates.X509Certificate", "System.Object"]
SERVER_TYPE = "Microsoft.Exchange.Data.Directory.Management.ExchangeServer"
AUTH_CONFIG_TYPE = "Microsoft.Exchange.Data.Directory.SystemConfiguration.AuthConfig"
SETTING_OVERRIDE_TYPE = "Microsoft.Exchange.Data.Directory.SystemConfiguration.ConfigurationSettings.SettingOverride"
TRANSPORT_TYPE = "Microsoft.Exchange.Data.Directory.SystemConfiguration.TransportServer"  # belief: no capture
#: The enum's type name as the capture's SerializationData (a BinaryFormatter stream) names it.
ALLOWED_SERVICES_TYPE = "Microsoft.Exchange.Management.SystemConfigurationTasks.AllowedServices"
PSCUSTOMOBJECT_TYPE = "System.Management.Automation.PSCustomObject"
_AD_TYPES = ["Microsoft.Exchange.Data.Directory.ADObject", "Microsoft.Exchange.Data.Directory.ADRawEntry",
             "Microsoft.Exchange.Data.ConfigurableObject", "System.Object"]
_CONFIG_OBJECT_TYPE = "Microsoft.Exchange.Data.Directory.SystemConfiguration.ADConfigurationObject"
_MVP_STRING_TYPES = ["Microsoft.Exchange.Data.MultiValuedProperty`1[[System.String, mscorlib, Version=4.0.0.0, "
                     "Culture=neutral, PublicKeyToken=b77a5c561934e089]]",
                     "Microsoft.Exchange.Data.MultiValuedPropertyBase", "System.Object"]

#: AllowedServices flags, ascending (= the order Exchange prints them). IMAP, POP, IIS and SMTP are grounded in the
#: capture (27 = IMAP, POP, IIS, SMTP; 16 = SMTP); UM, Federation and UMCallRouter values are a belief.
ALLOWED_SERVICES = (("None", 0), ("IMAP", 1), ("POP", 2), ("UM", 4), ("IIS", 8), ("SMTP", 16), ("Federation", 32),
                    ("UMCallRouter", 64))
#: AllowedServices flags in the order Exchange prints them (upper-case, as the state keeps them).
SERVICE_ORDER = tuple(name.upper() for name, value in ALLOWED_SERVICES if value)
#: CertificateStatus: Valid = 1 is in the capture's SerializationData; the other values are a belief.
_CERTIFICATE_STATUS = (("Unknown", 0), ("Valid", 1), ("Revoked", 2), ("DateInvalid", 3), ("Untrusted", 4),
                       ("Invalid", 5), ("RevocationCheckFailure", 6), ("PendingRequest", 7))
#: ServerEditionType: StandardEvaluation = 2 is captured; the other values are a belief.
_SERVER_EDITIONS = (("Unknown", 0), ("Standard", 1), ("StandardEvaluation", 2), ("Enterprise", 3),
                    ("EnterpriseEvaluation", 4))
#: The first bytes of a .NET BinaryFormatter stream (as the captured SerializationData starts); the rest is a
#: marker: the sandbox's SerializationData is opaque, as it is to any client without Exchange's assemblies.
_SERIALIZATION_DATA = bytes.fromhex("0001000000ffffffff01000000000000000c") + b"exbe-sandbox: opaque to clients"
#: When the sandbox's directory objects were created and last changed (the capture's dates; not modelled).
_DIRECTORY_CREATED = datetime.datetime(2019, 12, 3, 22, 36, 11, tzinfo=datetime.timezone.utc)
_DIRECTORY_CHANGED = datetime.datetime(2019, 12, 3, 22, 47, 32, tzinfo=datetime.timezone.utc)

_COMMON = ("ErrorAction", "WarningAction", "InformationAction", "ErrorVariable", "WarningVariable",
           "InformationVariable", "OutVariable", "OutBuffer", "PipelineVariable", "Verbose", "Debug")
#: cmdlet -> parameters the sandbox models (besides the common ones).
PARAMETERS: dict[str, tuple[str, ...]] = {
    "Get-ExchangeServer": ("Identity", "DomainController"),
    "Get-ExchangeCertificate": ("Identity", "Server", "Thumbprint", "DomainController"),
    "New-ExchangeCertificate": ("Server", "SubjectName", "DomainName", "FriendlyName", "KeySize",
                                "PrivateKeyExportable", "Services", "Force", "Confirm", "DomainController"),
    "Enable-ExchangeCertificate": ("Identity", "Server", "Thumbprint", "Services", "Force", "Confirm",
                                   "DomainController"),
    "Remove-ExchangeCertificate": ("Identity", "Server", "Thumbprint", "Confirm", "DomainController"),
    "Get-AuthConfig": ("DomainController",),
    "Get-SettingOverride": ("Identity", "DomainController"),
    "Get-TransportService": ("Identity", "DomainController"),
}
#: Real parameters of these cmdlets that the sandbox does not model: refused with a sandbox message, not a lie.
UNMODELLED: dict[str, tuple[str, ...]] = {
    "Get-ExchangeServer": ("Domain", "Status"),
    "Get-ExchangeCertificate": ("DomainName", "Instance"),
    "New-ExchangeCertificate": ("GenerateRequest", "RequestFile", "BinaryEncoded", "IncludeAcceptedDomains",
                                "IncludeAutoDiscover", "IncludeServerFQDN", "IncludeServerNetBIOSName", "Instance",
                                "SubjectKeyIdentifier", "WhatIf"),
    "Enable-ExchangeCertificate": ("DoNotRequireSsl", "NetworkServiceAllowed", "Instance", "WhatIf"),
    "Remove-ExchangeCertificate": ("Instance", "WhatIf"),
    "Select-Object": ("InputObject", "ExcludeProperty", "ExpandProperty", "Unique", "Last", "First", "Skip",
                      "SkipLast", "Wait", "Index"),
}
_BINDABLE = {**PARAMETERS, "Select-Object": ("Property",)}
#: The commands a RestrictedRemoteServer session keeps visible besides the endpoint's own (Microsoft documents
#: them for New-PSSessionConfigurationFile -SessionType RestrictedRemoteServer). Whether Exchange's endpoint keeps
#: Select-Object is unverified: ``exchange.select_object`` says per host; the others are visible, not modelled.
RESTRICTED_VISIBLE = ("Exit-PSSession", "Get-Command", "Get-FormatData", "Get-Help", "Measure-Object", "Out-Default",
                      "Select-Object")


@dataclasses.dataclass
class Live:
    """An object as a cmdlet emits it inside the server, before serialization: what ``Select-Object`` sees.

    ``properties`` is the full property bag (values as :class:`SandboxObject` documents); how much of it crosses
    the wire is decided by :func:`_wire`.
    """

    type_names: list[str]
    properties: dict[str, Any]
    to_string: str = ""


def run_pipeline(state: HostState, commands: list[tuple[str, dict[str, Any]]], faults: Faults, *,
                 runspace_id: uuid.UUID | None = None) -> Outcome:
    """Run one statement of the Exchange endpoint: one cmdlet, or ``<Get-cmdlet> | Select-Object -Property ...``.

    Command names are resolved first, as PowerShell prepares a pipeline before running it: one the endpoint does not
    expose is a ``CommandNotFoundException`` (a terminating error). Anything else the sandbox does not model is a
    terminating error saying so.
    """
    resolved = [(_resolve(state, name, faults), params) for name, params in commands]
    names = [name for name, _ in resolved]
    if len(resolved) == 1 and names[0] in PARAMETERS:
        return run_cmdlet(state, names[0], resolved[0][1], faults, runspace_id=runspace_id)
    if len(resolved) == 2 and names[0] in PARAMETERS and names[0].startswith("Get-") and names[1] == "Select-Object":
        properties = _written_by("Select-Object", lambda: _select_properties(resolved[1][1]))
        produced = _invoke(state, names[0], resolved[0][1])
        return dataclasses.replace(produced, output=[_select(obj, properties) for obj in produced.output])
    raise TerminatingError(ErrorInfo(
        f"The exbe sandbox models single Exchange cmdlets and '<Get-cmdlet> | Select-Object -Property <names>', not "
        f"{' | '.join(names)}.", error_id="SandboxPipelineNotModelled", category="NotImplemented"))


def run_cmdlet(state: HostState, name: str, params: dict[str, Any], faults: Faults, *,
               runspace_id: uuid.UUID | None = None) -> Outcome:
    """Run one Exchange cmdlet against ``state``: its output as it crosses the wire. Raises
    :class:`TerminatingError` where Exchange terminates."""
    canonical = next((c for c in PARAMETERS if c.lower() == name.lower()), None)
    if canonical is None:
        raise TerminatingError(command_not_found(name))
    produced = _invoke(state, canonical, params)
    members = _remoting_members(state, runspace_id or uuid.UUID(int=0))
    return dataclasses.replace(produced, output=[_wire(state, obj, members) for obj in produced.output])


def _invoke(state: HostState, cmdlet: str, params: dict[str, Any]) -> Outcome:
    """The cmdlet's own result: :class:`Live` objects and non-terminating errors, each record naming the cmdlet as
    its CategoryInfo.Activity (as PowerShell fills it for a record a command wrote)."""
    produced = _written_by(cmdlet, lambda: _CMDLETS[cmdlet](_Exchange(state), _bind(cmdlet, params)))
    return dataclasses.replace(produced, errors=[dataclasses.replace(e, activity=e.activity or cmdlet)
                                                 for e in produced.errors])


_T = TypeVar("_T")


def _written_by(cmdlet: str, action: Callable[[], _T]) -> _T:
    """Run ``action``; a terminating error it raises names ``cmdlet`` as the command that wrote it."""
    try:
        return action()
    except TerminatingError as exc:
        exc.info.activity = exc.info.activity or cmdlet
        raise


def _resolve(state: HostState, name: str, faults: Faults) -> str:
    """The command's name as the endpoint knows it. Exchange builds each session from the cmdlets of the account's
    RBAC roles: a cmdlet outside them is not in the session at all, so PowerShell cannot resolve it
    (``CommandNotFoundException``, fault ``exchange_denied``)."""
    visible = [*PARAMETERS, *RESTRICTED_VISIBLE]
    if state.exchange.select_object == "refused":
        visible.remove("Select-Object")
    denied = {d.strip().lower() for d in (faults.exchange_denied or "").split("+")}
    visible = [v for v in visible if v.lower() not in denied]
    canonical = next((c for c in visible if c.lower() == name.lower()), None)
    if canonical is None:
        raise TerminatingError(command_not_found(name))
    return canonical


def _bind(cmdlet: str, params: dict[str, Any]) -> dict[str, Any]:
    known = {p.lower(): p for p in (*_BINDABLE[cmdlet], *_COMMON)}
    unmodelled = {p.lower() for p in UNMODELLED.get(cmdlet, ())}
    bound: dict[str, Any] = {}
    for given, value in params.items():
        key = given.lower()
        if key in unmodelled:
            raise _not_modelled(f"the parameter '{given}' of {cmdlet}")
        if key not in known:
            raise TerminatingError(ErrorInfo(
                f"A parameter cannot be found that matches parameter name '{given}'.",
                error_id=f"NamedParameterNotFound,{cmdlet}", category="InvalidArgument",
                exception_type="System.Management.Automation.ParameterBindingException", target=given))
        bound[known[key]] = value
    return bound


def _not_modelled(what: str) -> TerminatingError:
    return TerminatingError(ErrorInfo(f"The exbe sandbox does not model {what}.",
                                      error_id="SandboxParameterNotModelled", category="NotImplemented"))


# -- Select-Object ---------------------------------------------------------------------------------------------------
def _select_properties(params: dict[str, Any]) -> list[str]:
    """``-Property`` as a list of plain names (a single string or a list; no wildcards, no calculated ones)."""
    value = _bind("Select-Object", params).get("Property")
    given = value if isinstance(value, list) else [value]
    names = [n for n in given if isinstance(n, str)]
    if not names or len(names) != len(given):
        raise _not_modelled("Select-Object without -Property names (or with calculated properties)")
    if any(re.search(r"[*?\[]", n) for n in names):
        raise _not_modelled("wildcards in Select-Object -Property")
    return names


def _select(obj: Live, names: list[str]) -> SandboxObject:
    """What ``Select-Object -Property`` makes of a live object: a PSCustomObject with note properties, named as
    the object names them (a missing one is $null under the given name). Shape as Export-Clixml shows Select-Object
    output of other products (``Selected.<type>``, PSCustomObject, System.Object; members only; no ToString); of
    Exchange objects it is a belief. Under the broken serialization state the projection is answered as in the
    healthy one (belief: unverified)."""
    by_lower = {k.lower(): k for k in obj.properties}
    members: dict[str, Any] = {}
    for name in names:
        actual = by_lower.get(name.lower())
        members[actual or name] = obj.properties[actual] if actual else None
    return SandboxObject([f"Selected.{obj.type_names[0]}", PSCUSTOMOBJECT_TYPE, "System.Object"], members=members)


# -- wire shapes -----------------------------------------------------------------------------------------------------
def _remoting_members(state: HostState, runspace_id: uuid.UUID) -> dict[str, Any]:
    """The members the captures show on every object (see the module docstring for their origin)."""
    return {"PSComputerName": state.fqdn.lower(), "RunspaceId": runspace_id, "PSShowComputerName": False}


def _wire(state: HostState, obj: Live, members: dict[str, Any]) -> SandboxObject:
    if obj.type_names[0] != CERTIFICATE_TYPE:
        return SandboxObject(obj.type_names, adapted=dict(obj.properties),
                             members={**members, "SerializationData": _SERIALIZATION_DATA}, to_string=obj.to_string)
    if state.exchange_cmdlets_blinded():
        return SandboxObject([f"Deserialized.{t}" for t in obj.type_names],
                             adapted={"RawData": obj.properties["RawData"]}, members=dict(members),
                             to_string=obj.to_string)
    adapted = dict(obj.properties) if state.exchange.wire == "full" else {"RawData": obj.properties["RawData"]}
    return SandboxObject(obj.type_names, adapted=adapted,
                         members={**members, "SerializationData": _SERIALIZATION_DATA}, to_string=obj.to_string)


def _x509_text(info: dict[str, Any], not_before: datetime.datetime, not_after: datetime.datetime) -> str:
    """``X509Certificate.ToString()`` as the captures show it (dates ``MM/dd/yyyy HH:mm:ss``, server time = UTC)."""
    return (f"[Subject]\r\n  {info['subject']}\r\n\r\n[Issuer]\r\n  {info['issuer']}\r\n\r\n[Serial Number]\r\n  "
            f"{info['serial_number']}\r\n\r\n[Not Before]\r\n  {not_before:%m/%d/%Y %H:%M:%S}\r\n\r\n"
            f"[Not After]\r\n  {not_after:%m/%d/%Y %H:%M:%S}\r\n\r\n[Thumbprint]\r\n  {info['thumbprint']}\r\n")


def allowed_services(services: list[str]) -> EnumValue:
    """Exchange's AllowedServices flags for service names like ``["IMAP", "SMTP"]`` (ToString ``IMAP, SMTP``)."""
    wanted = {s.upper() for s in services}
    return EnumValue(ALLOWED_SERVICES_TYPE, ALLOWED_SERVICES,
                     sum(value for name, value in ALLOWED_SERVICES if name.upper() in wanted), flags=True)


def _mvp(items: list[str]) -> SandboxObject:
    """A ``MultiValuedProperty<string>`` as the captures serialize it (an ``<LST>`` with the MVP type names)."""
    return SandboxObject(list(_MVP_STRING_TYPES), items=list(items))


class _Directory:
    """The Active Directory side of the objects: ADObjectId, ExchangeObjectVersion and the properties every
    ADObject carries (captured names and tags; nested objects with a subset of their properties)."""

    def __init__(self, state: HostState) -> None:
        self.domain = state.fqdn.partition(".")[2] or "contoso.local"
        self.base = ",".join(f"DC={part}" for part in self.domain.split("."))
        self.organization = "First Organization"
        self.dc = f"dc01.{self.domain}"

    def configuration_dn(self, *rdns: str) -> str:
        return ",".join([*rdns, f"CN={self.organization}", "CN=Microsoft Exchange", "CN=Services",
                         "CN=Configuration", self.base])

    def object_id(self, dn: str, name: str) -> SandboxObject:
        rdn, _, parent = dn.partition(",")
        return SandboxObject(
            ["Microsoft.Exchange.Data.Directory.ADObjectId", "Microsoft.Exchange.Data.ObjectId", "System.Object"],
            adapted={"IsDeleted": False, "Rdn": rdn, "Parent": parent.partition(",")[0].partition("=")[2],
                     "Depth": dn.count(","), "DistinguishedName": dn, "IsRelativeDn": False,
                     "DomainId": self.domain, "PartitionFQDN": self.domain,
                     "ObjectGuid": uuid.uuid5(uuid.NAMESPACE_X500, dn.lower()), "Name": name},
            members={"SerializationData": _SERIALIZATION_DATA}, to_string=name)

    def site(self, name: str) -> SandboxObject:
        """An AD site as ``Get-ExchangeServer``'s ``Site`` carries it: an ADObjectId whose ToString is the canonical
        ``<domain>/Configuration/Sites/<name>`` (CSS-Exchange capture
        ``Admin/MonitorExchangeAuthCertificate/DataCollection/Tests/Data/GetExchangeServer.xml``)."""
        found = self.object_id(f"CN={name},CN=Sites,CN=Configuration,{self.base}", name)
        found.adapted["Parent"] = f"{self.domain}/Configuration/Sites"
        found.to_string = f"{self.domain}/Configuration/Sites/{name}"
        return found

    def properties(self, name: str, dn: str, object_class: list[str], schema_class: str,
                   exchange_version: str = "0.20 (15.0.0.0)") -> dict[str, Any]:
        """ExchangeVersion ... ObjectState in the captured order (Name and AdminDisplayName are the caller's)."""
        identity = self.object_id(dn, name)
        category_dn = f"CN={schema_class},CN=Schema,CN=Configuration,{self.base}"
        version = SandboxObject(["Microsoft.Exchange.Data.ExchangeObjectVersion", "System.Object"],
                                adapted={"ExchangeBuild": exchange_version.partition("(")[2].rstrip(")")},
                                members={"SerializationData": _SERIALIZATION_DATA}, to_string=exchange_version)
        organization = SandboxObject(["Microsoft.Exchange.Data.Directory.OrganizationId", "System.Object"],
                                     adapted={"OrganizationalUnit": None, "ConfigurationUnit": None,
                                              "IsConsumerOrganization": False, "IdForEventLog": ""},
                                     members={"SerializationData": _SERIALIZATION_DATA})
        return {
            "ExchangeVersion": version, "DistinguishedName": dn, "Identity": identity,
            "Guid": identity.adapted["ObjectGuid"],
            "ObjectCategory": self.object_id(category_dn, f"{self.domain}/Configuration/Schema/{schema_class}"),
            "ObjectClass": _mvp(object_class),
            "WhenChanged": _DIRECTORY_CHANGED, "WhenCreated": _DIRECTORY_CREATED,
            "WhenChangedUTC": _DIRECTORY_CHANGED, "WhenCreatedUTC": _DIRECTORY_CREATED,
            "OrganizationId": organization, "Id": identity, "OriginatingServer": self.dc, "IsValid": True,
            "ObjectState": EnumValue("Microsoft.Exchange.Data.ObjectState", (("Unchanged", 1),), 1),
        }


def parse_services(value: Any) -> list[str]:
    items = value if isinstance(value, list) else str(value or "").split(",")
    result: list[str] = []
    for item in (str(i).strip() for i in items):
        if not item or item.lower() == "none":
            continue
        upper = item.upper()
        if upper not in SERVICE_ORDER:
            raise TerminatingError(ErrorInfo(
                f"Cannot process argument transformation on parameter 'Services'. Unable to match the identifier "
                f"name {item} to a valid enumerator name. Specify one of the following enumerator names and try "
                f"again: None, IMAP, POP, UM, IIS, SMTP, Federation, UMCallRouter",
                error_id="ParameterArgumentTransformationError", category="InvalidData",
                exception_type="System.Management.Automation.ParameterBindingException"))
        result.append(upper)
    return [s for s in SERVICE_ORDER if s in result]


def _switch(value: Any) -> bool:
    return value is None or bool(value)  # a switch given without a value is $true


class _Exchange:
    """One cmdlet invocation's view of the server."""

    def __init__(self, state: HostState) -> None:
        self.state = state
        self.config = state.exchange
        self.now = utcnow()
        self.directory = _Directory(state)
        self.dc = self.directory.dc

    # -- helpers -----------------------------------------------------------------------------------------------------
    def is_this_server(self, identity: Any) -> bool:
        text = str(identity or "").strip().lower()
        return text in {self.config.server_name.lower(), self.config.fqdn.lower()}

    def not_found(self, identity: Any) -> ErrorInfo:
        return ErrorInfo(f"The operation couldn't be performed because object '{identity}' couldn't be found on "
                         f"'{self.dc}'.", error_id="ManagementObjectNotFoundException",
                         category="ObjectNotFound",
                         exception_type="Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException",
                         target=str(identity))

    def require_server(self, params: dict[str, Any]) -> None:
        if "Server" in params and not self.is_this_server(params["Server"]):
            raise TerminatingError(self.not_found(params["Server"]))

    def thumbprint_param(self, params: dict[str, Any]) -> str | None:
        value = params.get("Thumbprint")
        if value is None and params.get("Identity") is not None:
            value = str(params["Identity"]).rpartition("\\")[2]
        return None if value is None else str(value).replace(" ", "").upper()

    def stored(self, params: dict[str, Any], cmdlet: str) -> StoredCert:
        thumb = self.thumbprint_param(params)
        if not thumb:
            raise TerminatingError(ErrorInfo(
                "Cannot process command because of one or more missing mandatory parameters: Thumbprint.",
                error_id=f"MissingMandatoryParameter,{cmdlet}", category="InvalidArgument",
                exception_type="System.Management.Automation.ParameterBindingException"))
        cert = self.state.find("My", thumb)
        if cert is None:
            raise TerminatingError(self.not_found(thumb))
        return cert

    def certificate(self, cert: StoredCert) -> Live:
        """The live ExchangeCertificate: an X509Certificate2 (RawData ...) with Exchange's properties."""
        info = cert.info
        not_before, not_after = certs.parse_iso(info["not_before"]), certs.parse_iso(info["not_after"])
        status = "Valid" if not_before <= self.now < not_after else "DateInvalid"
        return Live(list(CERTIFICATE_TYPES), {
            "RawData": certs.load_cert(cert.pem).public_bytes(serialization.Encoding.DER),
            "Thumbprint": info["thumbprint"],
            "Subject": info["subject"],
            "Issuer": info["issuer"],
            "FriendlyName": cert.friendly_name,
            "NotBefore": not_before,
            "NotAfter": not_after,
            "Services": allowed_services(self.config.services.get(info["thumbprint"], [])),
            "IsSelfSigned": info["self_signed"],
            "HasPrivateKey": cert.key_pem is not None,
            "PrivateKeyExportable": cert.exportable,
            "CertificateDomains": list(info["dns_names"]),
            "PublicKeySize": info["key_size"],
            "SerialNumber": info["serial_number"],
            "Status": EnumValue("Microsoft.Exchange.Management.SystemConfigurationTasks.CertificateStatus",
                                _CERTIFICATE_STATUS, dict(_CERTIFICATE_STATUS)[status]),
            "Identity": f"{self.config.fqdn}\\{info['thumbprint']}",
        }, _x509_text(info, not_before, not_after))

    def default_smtp(self) -> StoredCert | None:
        return self.state.find("My", self.config.internal_transport)

    def confirm_overwrite_smtp(self, new: StoredCert, force: bool) -> None:
        current = self.default_smtp()
        if force or current is None or current.thumbprint == new.thumbprint:
            return
        raise TerminatingError(_prompt_error(
            f"Overwrite the existing default SMTP certificate, '{current.thumbprint}' (expires "
            f"{current.not_after:%m/%d/%Y %H:%M:%S}), with certificate '{new.thumbprint}' (expires "
            f"{new.not_after:%m/%d/%Y %H:%M:%S})?"))

    def assign(self, cert: StoredCert, services: list[str]) -> None:
        """Additive service assignment with its side effects (SMTP: key access + default SMTP; IIS: the public
        443 binding, whichever way it is spelled; one is created as ``:443:`` when there is none)."""
        thumb = cert.thumbprint
        current = self.config.services.get(thumb, [])
        merged = [s for s in SERVICE_ORDER if s in set(current) | set(services)]
        if merged:
            self.config.services[thumb] = merged
        if "SMTP" in services:
            cert.network_service_read = True
            self.config.internal_transport = thumb
        if "IIS" in services:
            site = self.state.sites.setdefault(FRONTEND_SITE, Site(name=FRONTEND_SITE))
            binding = site.https_binding(443)
            if binding is None:
                binding = Binding("https", FRONTEND_BINDING)
                site.bindings.append(binding)
            binding.certificate_hash, binding.certificate_store = thumb, CERTIFICATE_STORE


def _prompt_error(question: str) -> ErrorInfo:
    return ErrorInfo(
        "A command that prompts the user failed because the host program or the command type does not support user "
        f"interaction. The host was attempting to request confirmation with the following message: {question}",
        error_id="HostException", category="NotImplemented",
        exception_type="System.Management.Automation.Host.HostException")


# -- the cmdlets -----------------------------------------------------------------------------------------------------
def _server_version(text: str) -> SandboxObject:
    """``AdminDisplayVersion``: a ServerVersion object whose ToString is ``Version 15.2 (Build 2562.17)``."""
    numbers = [int(n) for n in re.findall(r"\d+", text)] + [0, 0, 0, 0]
    return SandboxObject(["Microsoft.Exchange.Data.ServerVersion", "System.Object"],
                         adapted={"Major": numbers[0], "Minor": numbers[1], "Build": numbers[2],
                                  "Revision": numbers[3], "FilePatchLevelDescription": None},
                         to_string=text)


def _server_edition(name: str) -> EnumValue:
    """ServerEditionType; an edition the table lacks gets a value of its own (its ToString is what exbe reads)."""
    members = dict(_SERVER_EDITIONS)
    members.setdefault(name, max(members.values()) + 1)
    return EnumValue("Microsoft.Exchange.Data.ServerEditionType", tuple(members.items()), members[name])


#: The AD site of a server (``Get-ExchangeServer``'s ``Site``): the default site's name unless the server's
#: organization (:mod:`exbe.sandbox.authconfig`, which replaces this) places it elsewhere.
DEFAULT_SITE = "Default-First-Site-Name"
site_of: Callable[[HostState], str] = lambda state: DEFAULT_SITE  # noqa: E731 - replaced by the organization


def _get_exchange_server(ex: _Exchange, params: dict[str, Any]) -> Outcome:
    if "Identity" in params and not ex.is_this_server(params["Identity"]):
        return Outcome(errors=[ex.not_found(params["Identity"])])
    cfg = ex.config
    dn = ex.directory.configuration_dn(f"CN={cfg.server_name}", "CN=Servers",
                                       "CN=Exchange Administrative Group (FYDIBOHF23SPDLT)",
                                       "CN=Administrative Groups")
    return Outcome(output=[Live([SERVER_TYPE, "Microsoft.Exchange.Data.Directory.Management.ADPresentationObject",
                                 *_AD_TYPES], {
        "Name": cfg.server_name, "Edition": _server_edition(cfg.edition), "Fqdn": cfg.fqdn,
        "IsMailboxServer": True,
        "AdminDisplayVersion": _server_version(cfg.version),
        "Site": ex.directory.site(site_of(ex.state)),
        "ServerRole": EnumValue("Microsoft.Exchange.Data.Directory.SystemConfiguration.ServerRole",
                                (("None", 0), ("Mailbox", 2)), 2, flags=True),
        **ex.directory.properties(cfg.server_name, dn, ["top", "server", "msExchExchangeServer"],
                                  "ms-Exch-Exchange-Server", "0.1 (14.0.100.0)"),
    }, cfg.server_name)])


def _get_exchange_certificate(ex: _Exchange, params: dict[str, Any]) -> Outcome:
    """Every certificate of LocalMachine\\My (the broken serialization state changes only the wire shape)."""
    ex.require_server(params)
    thumb = ex.thumbprint_param(params)
    if thumb:
        cert = ex.state.find("My", thumb)
        return Outcome(output=[ex.certificate(cert)]) if cert else Outcome(errors=[ex.not_found(thumb)])
    return Outcome(output=[ex.certificate(c) for c in ex.state.my])


def _subject(text: str) -> str:
    parts = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        key, sep, value = part.partition("=")
        parts.append(f"{key.strip().upper()}={value.strip()}" if sep else part)
    return ", ".join(parts)


def _new_exchange_certificate(ex: _Exchange, params: dict[str, Any]) -> Outcome:
    ex.require_server(params)
    state, cfg = ex.state, ex.config
    if state.exchange_cmdlets_blinded(ex.now):
        return Outcome(errors=[ErrorInfo(
            f"The certificate with thumbprint {cfg.auth_current} that signs serialized data has expired; the data "
            "could not be signed. Renew the Exchange Server Auth certificate.",
            error_id="SerializationDataSigningFailed,Microsoft.Exchange.Management.SystemConfigurationTasks."
                     "NewExchangeCertificate", category="InvalidOperation",
            exception_type="System.InvalidOperationException")])
    subject = _subject(str(params.get("SubjectName") or f"CN={cfg.server_name}"))
    common_name = next((p[3:] for p in subject.split(", ") if p.startswith("CN=")), cfg.server_name)
    if "DomainName" in params:
        value = params["DomainName"]
        domains = [str(d) for d in (value if isinstance(value, list) else [value]) if d not in (None, "")]
    elif "SubjectName" in params:
        domains = [common_name]
    else:
        domains = [cfg.server_name, cfg.fqdn]
    key_size = int(params.get("KeySize") or 2048)
    if key_size not in (1024, 2048, 4096):
        raise TerminatingError(ErrorInfo(
            f"Cannot validate argument on parameter 'KeySize'. The {key_size} argument does not belong to the set "
            "\"1024,2048,4096\" specified by the ValidateSet attribute.",
            error_id="ParameterArgumentValidationError", category="InvalidData",
            exception_type="System.Management.Automation.ParameterBindingValidationException"))
    services = parse_services(params.get("Services", "IMAP,POP,SMTP"))
    key = certs.key_pool().key(key_size, index=len(state.my), avoid=windows.keys_in_use(state))
    pem, key_text = certs.make_self_signed(common_name, domains, ex.now - datetime.timedelta(days=1),
                                           certs.add_years(ex.now, 5), key_size, key=key, subject=subject)
    cert = StoredCert(pem=pem, key_pem=key_text, friendly_name=str(params.get("FriendlyName") or "Microsoft Exchange"),
                      provider=CSP_PROVIDER, key_accessible=True, network_service_read=False,
                      exportable=bool(params.get("PrivateKeyExportable", False)))
    if "SMTP" in services:
        ex.confirm_overwrite_smtp(cert, _switch(params["Force"]) if "Force" in params else False)
    state.my.append(cert)
    ex.assign(cert, services)
    return Outcome(output=[ex.certificate(cert)])


def _enable_exchange_certificate(ex: _Exchange, params: dict[str, Any]) -> Outcome:
    ex.require_server(params)
    cert = ex.stored(params, "Enable-ExchangeCertificate")
    if "Services" not in params:
        raise TerminatingError(ErrorInfo(
            "Cannot process command because of one or more missing mandatory parameters: Services.",
            error_id="MissingMandatoryParameter,Microsoft.Exchange.Management.SystemConfigurationTasks."
                     "EnableExchangeCertificate", category="InvalidArgument",
            exception_type="System.Management.Automation.ParameterBindingException"))
    services = parse_services(params["Services"])
    if cert.key_pem is None:
        raise TerminatingError(ErrorInfo(
            f"The certificate with thumbprint {cert.thumbprint} doesn't have a private key, so it can't be enabled "
            "for Exchange services.", error_id="InvalidOperation", category="InvalidOperation",
            exception_type="System.InvalidOperationException", target=cert.thumbprint))
    if cert.not_after <= ex.now:
        raise TerminatingError(ErrorInfo(
            f"The certificate with thumbprint {cert.thumbprint} has expired and can't be enabled for Exchange "
            "services.", error_id="InvalidOperation", category="InvalidOperation",
            exception_type="System.InvalidOperationException", target=cert.thumbprint))
    if "SMTP" in services:
        ex.confirm_overwrite_smtp(cert, _switch(params["Force"]) if "Force" in params else False)
    ex.assign(cert, services)
    return Outcome()


def _remove_exchange_certificate(ex: _Exchange, params: dict[str, Any]) -> Outcome:
    ex.require_server(params)
    cert = ex.stored(params, "Remove-ExchangeCertificate")
    if cert.thumbprint == ex.config.internal_transport:
        raise TerminatingError(ErrorInfo(
            "The internal transport certificate cannot be removed because that would cause the Microsoft Exchange "
            "Transport service to stop. To replace the internal transport certificate, create a new certificate. "
            "The new certificate will automatically become the internal transport certificate. You can then remove "
            "the existing certificate.", error_id="InvalidOperation,Microsoft.Exchange.Management."
            "SystemConfigurationTasks.RemoveExchangeCertificate", category="InvalidOperation",
            exception_type="System.InvalidOperationException", target=cert.thumbprint))
    if params.get("Confirm", True) is not False:
        raise TerminatingError(_prompt_error(
            f"Are you sure you want to perform this action? Remove certificate with thumbprint {cert.thumbprint}?"))
    ex.state.my.remove(cert)
    ex.config.services.pop(cert.thumbprint, None)
    return Outcome()


def _get_auth_config(ex: _Exchange, params: dict[str, Any]) -> Outcome:
    """Exactly the captured property names and tags; unset thumbprints are empty strings, as captured."""
    cfg = ex.config
    name = "Auth Configuration"
    return Outcome(output=[Live([AUTH_CONFIG_TYPE, _CONFIG_OBJECT_TYPE, *_AD_TYPES], {
        "CurrentCertificateThumbprint": cfg.auth_current or "",
        "PreviousCertificateThumbprint": cfg.auth_previous or "",
        "NextCertificateThumbprint": cfg.auth_next or "",
        "NextCertificateEffectiveDate": certs.parse_iso(cfg.auth_next_effective) if cfg.auth_next_effective else None,
        "ServiceName": "00000002-0000-0ff1-ce00-000000000000",
        "Realm": "", "DeploymentId": "", "IssuerIdentifier": "", "Name": name, "AdminDisplayName": "",
        **ex.directory.properties(name, ex.directory.configuration_dn(f"CN={name}"),
                                  ["top", "container", "msExchContainer", "msExchAuthAuthConfig"],
                                  "ms-Exch-Auth-Auth-Config"),
    }, name)])


def _get_setting_override(ex: _Exchange, params: dict[str, Any]) -> Outcome:
    overrides = ex.config.setting_overrides
    if "Identity" in params:
        overrides = [o for o in overrides if o["Name"].lower() == str(params["Identity"]).lower()]
        if not overrides:
            return Outcome(errors=[ex.not_found(params["Identity"])])
    status = EnumValue("Microsoft.Exchange.Data.Directory.SystemConfiguration.ConfigurationSettings."
                       "SettingOverrideStatus", (("Accepted", 3),), 3)
    return Outcome(output=[Live([SETTING_OVERRIDE_TYPE, _CONFIG_OBJECT_TYPE, *_AD_TYPES], {
        "ComponentName": o["ComponentName"], "SectionName": o["SectionName"], "Reason": o.get("Reason", ""),
        "Server": _mvp(o["Server"]) if o.get("Server") else None, "IsFlight": False,
        "Parameters": _mvp(o["Parameters"]), "Status": status, "AdminDisplayName": "", "Name": o["Name"],
        **ex.directory.properties(o["Name"], ex.directory.configuration_dn(
            f"CN={o['Name']}", "CN=Settings", "CN=Global Settings"), ["top", "msExchConfigSettings"],
            "ms-Exch-Config-Settings", "0.1 (8.0.535.0)"),
    }, o["Name"]) for o in overrides])


def _get_transport_service(ex: _Exchange, params: dict[str, Any]) -> Outcome:
    """No capture: the type name and hierarchy are a belief; the property names are Exchange's documented ones."""
    if "Identity" in params and not ex.is_this_server(params["Identity"]):
        return Outcome(errors=[ex.not_found(params["Identity"])])
    cfg = ex.config
    dn = ex.directory.configuration_dn("CN=Transport Service", f"CN={cfg.server_name}", "CN=Servers",
                                       "CN=Exchange Administrative Group (FYDIBOHF23SPDLT)",
                                       "CN=Administrative Groups")
    return Outcome(output=[Live([TRANSPORT_TYPE, _CONFIG_OBJECT_TYPE, *_AD_TYPES], {
        "Name": cfg.server_name,
        "InternalTransportCertificateThumbprint": cfg.internal_transport or "",
        **ex.directory.properties(cfg.server_name, dn, ["top", "msExchExchangeTransportServer"],
                                  "ms-Exch-Exchange-Transport-Server", "0.1 (14.0.100.0)"),
    }, cfg.server_name)])


_CMDLETS: dict[str, Callable[[_Exchange, dict[str, Any]], Outcome]] = {
    "Get-ExchangeServer": _get_exchange_server,
    "Get-ExchangeCertificate": _get_exchange_certificate,
    "New-ExchangeCertificate": _new_exchange_certificate,
    "Enable-ExchangeCertificate": _enable_exchange_certificate,
    "Remove-ExchangeCertificate": _remove_exchange_certificate,
    "Get-AuthConfig": _get_auth_config,
    "Get-SettingOverride": _get_setting_override,
    "Get-TransportService": _get_transport_service,
}

# The organization's Auth configuration, hybrid state and Federation trust (exbe.sandbox.authconfig) add their cmdlets
# and make Get-AuthConfig and Get-ExchangeCertificate -Server organization-wide.
from . import authconfig as _authconfig  # noqa: E402 - it builds on the definitions above

_authconfig.register([PARAMETERS, _BINDABLE], UNMODELLED, _CMDLETS)
site_of = _authconfig.site_of

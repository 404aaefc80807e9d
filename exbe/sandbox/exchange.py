"""The Exchange cmdlets of the ``Microsoft.Exchange`` endpoint that exbe uses, modelled on a :class:`HostState`.

Parameters are validated as PowerShell binds them (names case-insensitive, unknown ones refused with
``NamedParameterNotFound``); objects carry Exchange's real type names. Behaviours that trip up the popular manual
fix are modelled on purpose:

* serialization signing + an expired Auth certificate: ``Get-ExchangeCertificate`` returns nothing (no error) and
  ``New-ExchangeCertificate`` writes a non-terminating error and creates nothing;
* making a certificate the SMTP certificate while another one is the default asks "Overwrite the existing default
  SMTP certificate?", which a remote, non-interactive session cannot answer (a terminating error) unless ``-Force``;
  nothing is created or changed then;
* ``-Services IIS`` re-points Default Web Site ``*:443:`` (never 444); SMTP grants NETWORK SERVICE key access;
* ``Remove-ExchangeCertificate`` refuses the internal transport certificate and, without ``-Confirm:$false``,
  fails on its confirmation prompt.
"""

from __future__ import annotations

import datetime
from typing import Any, Callable

from . import certs, windows
from .faults import Faults
from .records import ErrorInfo, Outcome, SandboxObject, TerminatingError
from .state import (
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
SERVER_TYPE = "Microsoft.Exchange.Data.Directory.Management.ExchangeServer"
AUTH_CONFIG_TYPE = "Microsoft.Exchange.Data.Directory.SystemConfiguration.AuthConfig"
SETTING_OVERRIDE_TYPE = "Microsoft.Exchange.Data.Directory.SystemConfiguration.SettingOverride"
TRANSPORT_TYPE = "Microsoft.Exchange.Data.Directory.SystemConfiguration.TransportServer"

#: AllowedServices flags in the order Exchange prints them.
SERVICE_ORDER = ("IMAP", "POP", "UM", "IIS", "SMTP", "FEDERATION", "UMCALLROUTER")
_SERVICE_NAMES = {"IMAP": "IMAP", "POP": "POP", "UM": "UM", "IIS": "IIS", "SMTP": "SMTP", "FEDERATION": "Federation",
                  "UMCALLROUTER": "UMCallRouter"}

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
}


def run_cmdlet(state: HostState, name: str, params: dict[str, Any], faults: Faults) -> Outcome:
    """Run one Exchange cmdlet against ``state``; raises :class:`TerminatingError` where Exchange terminates."""
    canonical = next((c for c in PARAMETERS if c.lower() == name.lower()), None)
    if canonical is None:
        raise TerminatingError(ErrorInfo(
            f"The term '{name}' is not recognized as the name of a cmdlet, function, script file, or operable "
            "program. Check the spelling of the name, or if a path was included, verify that the path is correct "
            "and try again.", error_id="CommandNotFoundException", category="ObjectNotFound",
            exception_type="System.Management.Automation.CommandNotFoundException", target=name))
    bound = _bind(canonical, params)
    return _CMDLETS[canonical](_Exchange(state), bound)


def _bind(cmdlet: str, params: dict[str, Any]) -> dict[str, Any]:
    known = {p.lower(): p for p in (*PARAMETERS[cmdlet], *_COMMON)}
    unmodelled = {p.lower() for p in UNMODELLED.get(cmdlet, ())}
    bound: dict[str, Any] = {}
    for given, value in params.items():
        key = given.lower()
        if key in unmodelled:
            raise TerminatingError(ErrorInfo(
                f"The exbe sandbox does not model the parameter '{given}' of {cmdlet}.",
                error_id="SandboxParameterNotModelled", category="NotImplemented"))
        if key not in known:
            raise TerminatingError(ErrorInfo(
                f"A parameter cannot be found that matches parameter name '{given}'.",
                error_id=f"NamedParameterNotFound,{cmdlet}", category="InvalidArgument",
                exception_type="System.Management.Automation.ParameterBindingException", target=given))
        bound[known[key]] = value
    return bound


def services_text(services: list[str]) -> str:
    """AllowedServices as Exchange prints it: ``IMAP, POP, SMTP`` or ``None``."""
    ordered = [_SERVICE_NAMES[s] for s in SERVICE_ORDER if s in {x.upper() for x in services}]
    return ", ".join(ordered) if ordered else "None"


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
        domain = state.fqdn.partition(".")[2] or "contoso.local"
        self.dc = f"dc01.{domain}"

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

    def certificate(self, params: dict[str, Any], cmdlet: str) -> StoredCert:
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

    def certificate_object(self, cert: StoredCert) -> SandboxObject:
        info = cert.info
        not_before, not_after = certs.parse_iso(info["not_before"]), certs.parse_iso(info["not_after"])
        props: dict[str, Any] = {
            "Thumbprint": info["thumbprint"],
            "Subject": info["subject"],
            "Issuer": info["issuer"],
            "FriendlyName": cert.friendly_name,
            "NotBefore": not_before,
            "NotAfter": not_after,
            "Services": services_text(self.config.services.get(info["thumbprint"], [])),
            "IsSelfSigned": info["self_signed"],
            "HasPrivateKey": cert.key_pem is not None,
            "PrivateKeyExportable": cert.exportable,
            "CertificateDomains": list(info["dns_names"]),
            "PublicKeySize": info["key_size"],
            "SerialNumber": info["serial_number"],
            "Status": "Valid" if not_before <= self.now < not_after else "DateInvalid",
            "Identity": f"{self.config.server_name}\\{info['thumbprint']}",
        }
        text = (f"[Subject]\r\n  {info['subject']}\r\n\r\n[Issuer]\r\n  {info['issuer']}\r\n\r\n[Serial Number]\r\n  "
                f"{info['serial_number']}\r\n\r\n[Not Before]\r\n  {not_before:%m/%d/%Y %H:%M:%S}\r\n\r\n"
                f"[Not After]\r\n  {not_after:%m/%d/%Y %H:%M:%S}\r\n\r\n[Thumbprint]\r\n  {info['thumbprint']}\r\n")
        return SandboxObject([CERTIFICATE_TYPE, "Microsoft.Exchange.Data.ConfigurableObject"], props, text)

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
        """Additive service assignment with its side effects (SMTP: key access + default SMTP; IIS: *:443:)."""
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
            binding = site.https(FRONTEND_BINDING)
            if binding is None:
                binding = Binding("https", FRONTEND_BINDING)
                site.bindings.append(binding)
            binding.certificate_hash, binding.certificate_store = thumb, "My"


def _prompt_error(question: str) -> ErrorInfo:
    return ErrorInfo(
        "A command that prompts the user failed because the host program or the command type does not support user "
        f"interaction. The host was attempting to request confirmation with the following message: {question}",
        error_id="HostException", category="NotImplemented",
        exception_type="System.Management.Automation.Host.HostException")


# -- the cmdlets -----------------------------------------------------------------------------------------------------
def _get_exchange_server(ex: _Exchange, params: dict[str, Any]) -> Outcome:
    if "Identity" in params and not ex.is_this_server(params["Identity"]):
        return Outcome(errors=[ex.not_found(params["Identity"])])
    cfg = ex.config
    return Outcome(output=[SandboxObject([SERVER_TYPE, "Microsoft.Exchange.Data.Directory.ADObject"], {
        "Name": cfg.server_name, "Fqdn": cfg.fqdn, "AdminDisplayVersion": cfg.version, "Edition": cfg.edition,
        "ServerRole": "Mailbox", "IsMailboxServer": True, "Identity": cfg.server_name,
    }, cfg.server_name)])


def _get_exchange_certificate(ex: _Exchange, params: dict[str, Any]) -> Outcome:
    ex.require_server(params)
    if ex.state.exchange_cmdlets_blinded(ex.now):
        return Outcome()  # the observed behaviour: no objects, no error
    thumb = ex.thumbprint_param(params)
    if thumb:
        cert = ex.state.find("My", thumb)
        return Outcome(output=[ex.certificate_object(cert)]) if cert else Outcome(errors=[ex.not_found(thumb)])
    return Outcome(output=[ex.certificate_object(c) for c in ex.state.my])


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
    return Outcome(output=[ex.certificate_object(cert)])


def _enable_exchange_certificate(ex: _Exchange, params: dict[str, Any]) -> Outcome:
    ex.require_server(params)
    cert = ex.certificate(params, "Enable-ExchangeCertificate")
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
    cert = ex.certificate(params, "Remove-ExchangeCertificate")
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
    cfg = ex.config
    effective = certs.parse_iso(cfg.auth_next_effective) if cfg.auth_next_effective else None
    return Outcome(output=[SandboxObject([AUTH_CONFIG_TYPE, "Microsoft.Exchange.Data.Directory.ADObject"], {
        "Name": "Auth Configuration",
        "CurrentCertificateThumbprint": cfg.auth_current,
        "PreviousCertificateThumbprint": cfg.auth_previous,
        "NextCertificateThumbprint": cfg.auth_next,
        "NextCertificateEffectiveDate": effective,
        "ServiceName": "00000002-0000-0ff1-ce00-000000000000",
    }, "Auth Configuration")])


def _get_setting_override(ex: _Exchange, params: dict[str, Any]) -> Outcome:
    overrides = ex.config.setting_overrides
    if "Identity" in params:
        overrides = [o for o in overrides if o["Name"].lower() == str(params["Identity"]).lower()]
        if not overrides:
            return Outcome(errors=[ex.not_found(params["Identity"])])
    return Outcome(output=[SandboxObject([SETTING_OVERRIDE_TYPE, "Microsoft.Exchange.Data.Directory.ADObject"], {
        "Name": o["Name"], "ComponentName": o["ComponentName"], "SectionName": o["SectionName"],
        "Parameters": list(o["Parameters"]), "Reason": o.get("Reason", ""), "Server": list(o.get("Server", [])),
    }, o["Name"]) for o in overrides])


def _get_transport_service(ex: _Exchange, params: dict[str, Any]) -> Outcome:
    if "Identity" in params and not ex.is_this_server(params["Identity"]):
        return Outcome(errors=[ex.not_found(params["Identity"])])
    cfg = ex.config
    return Outcome(output=[SandboxObject([TRANSPORT_TYPE, "Microsoft.Exchange.Data.Directory.ADObject"], {
        "Name": cfg.server_name, "Identity": cfg.server_name,
        "InternalTransportCertificateThumbprint": cfg.internal_transport,
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

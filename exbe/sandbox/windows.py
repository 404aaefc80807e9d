"""The Windows calls exbe's WinRM step templates make, applied to a :class:`HostState`.

Certificate stores (``X509Store`` My/Root), ``New-SelfSignedCertificate -CloneCert``, IIS bindings
(WebAdministration: ``Get-WebBinding``, ``New-WebBinding``, ``AddSslCertificate``), ``iisreset`` /
``Restart-Service W3SVC,WAS``, starting a stopped service (``ServiceController.Start``) and the registry value
``AllowInternalUntrustedCerts``. A call that fails on Windows raises :class:`WindowsCallError` with the error record
PowerShell would show.

Key access after a clone: ``New-SelfSignedCertificate`` creates the key for the machine, so it opens for SYSTEM
(http.sys/schannel: ``key_accessible`` True) but gives NETWORK SERVICE no read access (``network_service_read``
False), whatever the provider. exbe's clone template then adds the ACL rule itself
(:func:`grant_network_service_read`), as ``Enable-ExchangeCertificate -Services SMTP`` would.
"""

from __future__ import annotations

import datetime
from typing import Any

from . import certs
from .faults import Faults
from .records import ErrorInfo
from .state import CNG_PROVIDER, Binding, HostState, StoredCert, utcnow

LOGON_SESSION_MESSAGE = "A specified logon session does not exist. (Exception from HRESULT: 0x80070520)"
NOT_FOUND_MESSAGE = "Cannot find object or property. (Exception from HRESULT: 0x80092004)"
_SERVICE_NAMES = {"W3SVC": "World Wide Web Publishing Service", "WAS": "Windows Process Activation Service"}


class WindowsCallError(Exception):
    """A PowerShell/.NET call failed; ``info`` is the error record."""

    def __init__(self, info: ErrorInfo) -> None:
        super().__init__(info.message)
        self.info = info


# -- certificate stores ----------------------------------------------------------------------------------------------
def get_certificate(state: HostState, store: str, thumbprint: str) -> StoredCert | None:
    """``Get-Item Cert:\\LocalMachine\\<store>\\<thumbprint>`` (None where PowerShell finds nothing)."""
    return state.find(store, thumbprint)


def add_certificate(state: HostState, store: str, cert: StoredCert) -> bool:
    """``X509Store.Add``: adding a certificate already present is a no-op. Returns True when it was added."""
    if state.find(store, cert.thumbprint):
        return False
    state.store(store).append(cert)
    return True


def remove_certificate(state: HostState, store: str, thumbprint: str, *, delete_key: bool = False) -> bool:
    """``Remove-Item <certificate>``, with ``-DeleteKey`` when ``delete_key``. Returns True when something was removed.

    ``-DeleteKey`` "deletes the associated private key" (Microsoft's Certificate provider reference): the key
    container goes, so every other certificate of My whose key lived there keeps its key provider information but no
    longer opens its key (as a deleted container reads: keyset does not exist)."""
    found = state.find(store, thumbprint)
    if found is None:
        return False
    state.store(store).remove(found)
    if delete_key and found.key_container:
        for other in state.my:
            if other.key_container == found.key_container:
                other.key_accessible = False
    return True


def new_self_signed_clone(state: HostState, source: StoredCert, *, provider: str | None, key_length: int | None,
                          hash_algorithm: str, validity_years: int,
                          now: datetime.datetime | None = None) -> StoredCert:
    """``New-SelfSignedCertificate -CloneCert $source [-Provider p] [-KeyLength n] [-HashAlgorithm h] -NotAfter ...``

    Copies subject, SANs and extensions, creates a new key of the requested (else the source's) length in
    ``provider`` (CNG's Microsoft Software Key Storage Provider when none is given), NotBefore 10 minutes back.
    The new certificate lands in My with the source's friendly name.
    """
    now = now or utcnow()
    size = key_length or source.info["key_size"]
    key = certs.key_pool().key(size, index=len(state.my), avoid=keys_in_use(state))
    pem = certs.clone_cert(source.pem, key, now - datetime.timedelta(minutes=10), certs.add_years(now, validity_years),
                           hash_algorithm.lower())
    clone = StoredCert(pem=pem, key_pem=certs.key_pem(key), friendly_name=source.friendly_name,
                       provider=provider or CNG_PROVIDER, key_accessible=True, network_service_read=False,
                       exportable=False)
    add_certificate(state, "My", clone)
    return clone


def grant_network_service_read(cert: StoredCert) -> bool:
    """Add NETWORK SERVICE read to the key file's ACL (what exbe's clone template does, as Exchange's SMTP
    assignment would). Returns whether the rule was missing."""
    if cert.key_pem is None or cert.network_service_read:
        return False
    cert.network_service_read = True
    return True


def keys_in_use(state: HostState) -> set[str]:
    """Key ids of every certificate in My: a new certificate (a renewal above all) gets none of them."""
    return {certs.spki_id(certs.load_cert(c.pem).public_key()) for c in state.my}


def key_problem(cert: StoredCert) -> str | None:
    """Why http.sys could not use this certificate's private key, or None."""
    if not cert.key_pem:
        return "it has no private key"
    if not cert.key_accessible:
        return "its private key cannot be opened (keyset does not exist or access is denied)"
    return None


def is_cng(cert: StoredCert) -> bool:
    return cert.provider_type == "CNG"


# -- IIS -------------------------------------------------------------------------------------------------------------
def ssl_binding_name(binding: Binding) -> str | None:
    """The name of the http.sys SSL binding an IIS https binding makes (its ``IIS:\\SslBindings`` child): an SNI
    binding (sslFlags bit 1) is keyed by port and host name, ``!443!mail.contoso.com``, any other by address and
    port, ``0.0.0.0!444`` for all unassigned (real-server-shapes.md §4). A Central Certificate Store binding (bit 2)
    takes its certificate from the store's share: None, no certificate of My."""
    if binding.ssl_flags & 2:
        return None
    if binding.ssl_flags & 1:
        return f"!{binding.port}!{binding.host_header}"
    address = "0.0.0.0" if binding.all_unassigned else binding.address.strip("[]")
    return f"{address}!{binding.port}"


def ssl_bindings(state: HostState) -> dict[str, str]:
    """``Get-ChildItem IIS:\\SslBindings``: name -> thumbprint of every http.sys SSL binding, those the https
    bindings of every IIS site make and the others (WMSvc's, ``HostState.ssl_bindings``)."""
    found: dict[str, str] = {}
    for site in state.sites.values():
        for binding in site.bindings:
            name = ssl_binding_name(binding) if binding.protocol == "https" else None
            if name and binding.certificate_hash:
                found.setdefault(name, binding.certificate_hash)
    return {**found, **state.ssl_bindings}


def binding_hash(state: HostState, binding: Binding) -> str:
    """What the templates' Get-ExbeBindingHash reads for a binding: the certificate of the http.sys SSL binding it
    makes ("" for a Central Certificate Store binding)."""
    name = ssl_binding_name(binding)
    if name is None:
        return ""
    return ssl_bindings(state).get(name) or binding.certificate_hash


def winrm_listeners(state: HostState) -> list[dict[str, Any]]:
    """``Get-ChildItem WSMan:\\localhost\\Listener`` and each listener's settings (Transport, Address, Port,
    CertificateThumbprint: empty for an HTTP listener)."""
    return [dict(listener) for listener in state.winrm_listeners]


# Bindings are looked up by meaning (HostState.binding / https_binding): ":443:" and "*:443:" are one binding.
def site_exists(state: HostState, site: str) -> bool:
    return site in state.sites


def https_bindings(state: HostState, site: str) -> list[Binding]:
    """``Get-WebBinding -Name <site> -Protocol https``."""
    found = state.sites.get(site)
    return [b for b in found.bindings if b.protocol == "https"] if found else []


def new_web_binding(state: HostState, site: str, binding_information: str) -> Binding:
    """``New-WebBinding -Name <site> -Protocol https -IPAddress * -Port 444``: a binding without a certificate,
    spelled as given; an existing binding of the same meaning is returned unchanged."""
    if site not in state.sites:
        raise WindowsCallError(ErrorInfo(f"Cannot find path 'IIS:\\Sites\\{site}' because it does not exist.",
                                         error_id="PathNotFound", category="ObjectNotFound",
                                         exception_type="System.Management.Automation.ItemNotFoundException"))
    existing = state.binding(site, binding_information)
    if existing is not None:
        return existing
    binding = Binding("https", binding_information)
    state.sites[site].bindings.append(binding)
    return binding


def remove_web_binding(state: HostState, site: str, binding_information: str) -> None:
    """``Remove-WebBinding``: takes the binding and its http.sys certificate away."""
    found = state.binding(site, binding_information)
    if found is not None:
        state.sites[site].bindings.remove(found)


def add_ssl_certificate(state: HostState, site: str, binding_information: str, thumbprint: str, faults: Faults, *,
                        store: str = "My", restoring: bool = False) -> None:
    """``$binding.AddSslCertificate($thumbprint, $store)``: replaces the binding's certificate in http.sys.

    IIS then reports ``certificateStoreName`` upper-case, ``MY`` (as in the captures; that it upper-cases a store
    given as ``my``, as the seed script passes it, is a belief).

    Fails with COM 0x80070520 when the certificate has no usable private key, or under the fault
    ``bind_com_error`` (which spares the restoring of a previous certificate, as the real error concerns the new
    certificate's key).
    """
    binding = state.binding(site, binding_information)
    if binding is None:
        raise WindowsCallError(ErrorInfo(f"No https binding {binding_information} on site '{site}'.",
                                         error_id="BindingNotFound", category="ObjectNotFound"))
    cert = state.find(store, thumbprint)
    if cert is None:
        raise _com_error(NOT_FOUND_MESSAGE, thumbprint)
    if key_problem(cert) or (faults.bind_com_error and not restoring):
        raise _com_error(LOGON_SESSION_MESSAGE, thumbprint)
    binding.certificate_hash = cert.thumbprint
    binding.certificate_store = store.upper()


def _com_error(message: str, target: str) -> WindowsCallError:
    return WindowsCallError(ErrorInfo(f'Exception calling "AddSslCertificate" with "2" argument(s): "{message}"',
                                      error_id="COMException", category="NotSpecified",
                                      exception_type="System.Runtime.InteropServices.COMException", target=target))


# -- services and registry -------------------------------------------------------------------------------------------
def service_status(state: HostState, name: str) -> str:
    """``(Get-Service <name>).Status``."""
    return state.services.get(name, "Stopped")


def iisreset(state: HostState, faults: Faults, timeout_seconds: int) -> None:
    """``iisreset /noforce /timeout:<n>``: stops and starts IIS; under ``iisreset_timeout`` W3SVC is left Stopped,
    under ``iisreset_stop_pending`` the stop timed out and W3SVC is left StopPending (real-server-shapes.md §4: a
    timed-out ``iisreset /noforce`` may leave it so; the stop completes later). Either way IIS stopped, so every
    runspace pool of the Exchange endpoint ended (``iis_restarts``)."""
    state.iis_restarts += 1
    state.services["WAS"] = "Running"
    if faults.iisreset_timeout or faults.iisreset_stop_pending:
        state.services["W3SVC"] = "StopPending" if faults.iisreset_stop_pending else "Stopped"
        raise WindowsCallError(ErrorInfo(
            f"Attempting stop... Restart attempt failed. The IIS Admin Service or the World Wide Web Publishing "
            f"Service, or a service dependent on them failed to start within {timeout_seconds} seconds.",
            error_id="NativeCommandError", category="NotSpecified"))
    state.services["W3SVC"] = "Running"


def restart_services(state: HostState, faults: Faults) -> None:
    """``Restart-Service WAS,W3SVC -Force``; under ``iisreset_timeout`` W3SVC does not come back (the fault
    ``iisreset_stop_pending`` concerns iisreset only). The Exchange endpoint's runspace pools end either way
    (``iis_restarts``)."""
    state.iis_restarts += 1
    state.services["WAS"] = "Running"
    if faults.iisreset_timeout:
        state.services["W3SVC"] = "Stopped"
        raise WindowsCallError(ErrorInfo(
            f"Service '{_SERVICE_NAMES['W3SVC']} (W3SVC)' cannot be started due to the following error: Cannot "
            f"start service W3SVC on computer '.'.", error_id="StartServiceFailed,Microsoft.PowerShell.Commands."
            "RestartServiceCommand", category="OpenError",
            exception_type="Microsoft.PowerShell.Commands.ServiceCommandException", target="W3SVC"))
    state.services["W3SVC"] = "Running"


#: A pending state and the state it ends in when the pending operation completes.
_PENDING = {"StopPending": "Stopped", "StartPending": "Running"}


def settle(state: HostState, name: str) -> None:
    """Time passing while the script polls: a pending stop or start completes (the sandbox does not model a service
    hung in a pending state)."""
    status = service_status(state, name)
    state.services[name] = _PENDING.get(status, status)


def wait_for_status(state: HostState, name: str, wanted: str, timeout_seconds: int) -> None:
    """``$service.WaitForStatus(<wanted>, <timeout>)``: it only waits, it changes nothing. A pending operation that
    ends in ``wanted`` completes; any other state times out (.NET's ``System.ServiceProcess.TimeoutException``), so
    waiting for Running never starts a StopPending or Stopped service."""
    status = service_status(state, name)
    if _PENDING.get(status) == wanted:
        state.services[name] = wanted
    elif status != wanted:
        raise WindowsCallError(ErrorInfo(
            'Exception calling "WaitForStatus" with "2" argument(s): "Time out has expired and the operation has not '
            'been completed."', error_id="TimeoutException", category="NotSpecified",
            exception_type="System.Management.Automation.MethodInvocationException", target=name))


def start_service(state: HostState, faults: Faults, name: str, timeout_seconds: int) -> None:
    """``$service.Start()`` then ``$service.WaitForStatus('Running', <timeout>)`` on ``Get-Service <name>``: what
    ``Start-Service`` does, with a bounded wait. Starting W3SVC starts WAS first (its dependency).

    ``Start()`` of a service that is not Stopped fails: StartService answers ERROR_SERVICE_ALREADY_RUNNING for a
    service in any other state (Microsoft's StartService reference), which .NET reports as "Cannot start service".
    Under ``iisreset_timeout`` W3SVC does not start: the fault models a W3SVC that cannot start, the cause that made
    the restart time out, so one more attempt fails the same way (the wait times out, W3SVC stays Stopped). WAS
    starts either way."""
    if service_status(state, name) != "Stopped":
        raise WindowsCallError(ErrorInfo(
            f'Exception calling "Start" with "0" argument(s): "Cannot start service {name} on computer \'.\'."',
            error_id="InvalidOperationException", category="NotSpecified",
            exception_type="System.Management.Automation.MethodInvocationException", target=name))
    if name == "W3SVC":
        state.services["WAS"] = "Running"
    if name == "W3SVC" and faults.iisreset_timeout:
        state.services["W3SVC"] = "Stopped"
        raise WindowsCallError(ErrorInfo(
            'Exception calling "WaitForStatus" with "2" argument(s): "Time out has expired and the operation has not '
            'been completed."', error_id="TimeoutException", category="NotSpecified",
            exception_type="System.Management.Automation.MethodInvocationException", target="W3SVC"))
    state.services[name] = "Running"


def allow_internal_untrusted_certs(state: HostState) -> int | str | None:
    """``Get-ItemProperty HKLM:\\SYSTEM\\CurrentControlSet\\Services\\MSExchange OWA`` value
    ``AllowInternalUntrustedCerts`` as PowerShell hands it over: an int for a REG_DWORD, a str for a REG_SZ (None
    when absent)."""
    return state.allow_internal_untrusted_certs

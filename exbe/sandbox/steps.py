"""exbe's WinRM steps (facts, clone, trust, bind, restart, cleanup) applied to a host state, with the semantics of
:mod:`exbe.contract`: what the rendered templates do on a real server, composed from :mod:`windows` calls.

Conventions shared by every mutating step:

* ``dry_run``: nothing changes; ``changed`` and the ``after``-style data describe what a real run would do.
* A re-run with nothing left to do reports ``changed`` false (``clone`` and ``restart`` always act: a clone is a new
  certificate and a restart is a restart; exbe's plan decides whether to call them).
* A step's own failure is an ``ok: false`` envelope with a one-line ``error`` (the templates catch everything);
  the fault ``step_fail=<step>`` is a terminating error instead, as when the script itself breaks.
* ``cleanup`` refuses a still-bound certificate (listed in ``refused``), removes the others and stays ``ok``.
* On a host whose ``powershell_version`` is not Windows PowerShell 5.1 every step is the one failed envelope the
  templates' first statement writes there (:data:`PLATFORM_ERROR`), and nothing changes.
* ``bind`` acts on the exact binding texts it is given; exbe found them by meaning (an empty address and ``*`` both
  mean all unassigned, so ``:443:`` and ``*:443:`` are one binding).

These follow ``ps_templates/`` (the scripts a real server runs); where the two could differ, the template wins.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable
from typing import Any

from .. import contract
from ..facts import parse_time
from ..steps import lock as lock_step
from . import certs, windows
from .faults import Faults
from .records import ErrorInfo, TerminatingError
from .state import (
    BACKEND_BINDING,
    BACKEND_SITE,
    CNG_PROVIDER,
    FRONTEND_SITE,
    Binding,
    HostState,
    parse_binding_information,
    utcnow,
)

#: What every template writes, before anything else, on a host that is not Windows PowerShell 5.1 Desktop.
PLATFORM_ERROR = "exbe needs Windows PowerShell 5.1 (Desktop); this host runs {version} {edition}"

_CERT_FIELDS = ("thumbprint", "subject", "issuer", "friendly_name", "not_before", "not_after", "signature_algorithm",
                "key_algorithm", "key_size", "has_private_key", "provider", "provider_type", "key_accessible",
                "dns_names", "self_signed")


class StepFailed(Exception):
    """Ends a step with ``ok: false`` and this one-line message; ``data`` is what the envelope still reports."""

    def __init__(self, message: str, data: dict[str, Any] | None = None, changed: bool = False) -> None:
        super().__init__(message)
        self.data = data or {}
        self.changed = changed


def run_step(state: HostState, step: str, data: dict[str, Any], faults: Faults) -> dict[str, Any]:
    """Apply one WinRM step to ``state`` and return its result envelope (a dict; see ``contract.make_result``)."""
    refusal = platform_refusal(state.powershell_version)
    if refusal:  # the template's first statement: it has not read its input yet, so dry_run is false
        return contract.make_result(step, ok=False, error=refusal)
    if faults.step_fail == step:
        raise TerminatingError(ErrorInfo(f"The exbe step '{step}' failed: fault injected by the exbe sandbox.",
                                         error_id=f"SandboxFault,{step}"))
    handler = HANDLERS.get(step)
    if handler is None:
        raise TerminatingError(ErrorInfo(f"unknown exbe step {step!r}", error_id="SandboxUnknownStep"))
    dry_run = bool(data.get("dry_run", False))
    warnings: list[str] = []
    journal = Journal(state, data.get(lock_step.CONTEXT_KEY), warnings)
    try:
        changed, result = handler(state, data, faults, dry_run, warnings, journal)
    except StepFailed as failed:
        envelope = contract.make_result(step, ok=False, changed=failed.changed, dry_run=dry_run, data=failed.data,
                                        warnings=warnings, error=_one_line(str(failed)))
    else:
        envelope = contract.make_result(step, ok=True, changed=changed, dry_run=dry_run, data=result,
                                        warnings=warnings)
    journal.complete(envelope)
    return envelope


def platform_refusal(version: str) -> str | None:
    """The templates' platform check: anything but Windows PowerShell 5.1 Desktop gets one failed envelope. Windows
    PowerShell before 5.1 reports no edition (the template says Desktop); PowerShell 6 and later are Core."""
    numbers = [int(part) if part.isdigit() else 0 for part in version.split(".")[:2]] + [0, 0]
    major, minor = numbers[0], numbers[1]
    edition = "Core" if major >= 6 else "Desktop"
    if major == 5 and minor >= 1:
        return None
    return PLATFORM_ERROR.format(version=version, edition=edition)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _thumb(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise StepFailed(f"input lacks '{key}'")
    return value.replace(" ", "").upper()


# -- facts -----------------------------------------------------------------------------------------------------------
def facts(state: HostState, data: dict[str, Any], faults: Faults, dry_run: bool,
          warnings: list[str], journal: Journal) -> tuple[bool, dict[str, Any]]:
    sites = [data.get("backend_site") or BACKEND_SITE, data.get("frontend_site") or FRONTEND_SITE]
    return False, {
        "now": certs.iso(utcnow()),
        "computer": {"name": state.computer_name, "fqdn": state.fqdn},
        "powershell_version": state.powershell_version,
        "certificates": [cert_facts(c) for c in state.my],
        "root": [{k: c.info[k] for k in ("thumbprint", "subject", "not_after")} for c in state.root],
        "bindings": [{"site": site, "protocol": b.protocol, "binding_information": b.binding_information,
                      "certificate_hash": windows.binding_hash(state, b), "certificate_store": b.certificate_store,
                      "ssl_flags": b.ssl_flags}
                     for site in sites for b in windows.https_bindings(state, site)],
        "sites": {site: _site_facts(state, site) for site in sites},
        "services": {name: windows.service_status(state, name) for name in ("W3SVC", "WAS")},
        "allow_internal_untrusted_certs": _registry_integer(
            "HKLM:\\SYSTEM\\CurrentControlSet\\Services\\MSExchange OWA\\AllowInternalUntrustedCerts",
            windows.allow_internal_untrusted_certs(state), warnings),
    }


def _registry_integer(name: str, value: int | str | None, warnings: list[str]) -> int | None:
    """The template's ConvertTo-ExbeRegistryInteger: a REG_DWORD's number, a REG_SZ's text when it is an integer;
    other text is unknown, with a warning (absent: None, no warning)."""
    if value is None:
        return None
    text = str(value).strip()
    if re.fullmatch(r"-?[0-9]{1,18}", text):
        return int(text)
    warnings.append(f"{name} is not a number ({_one_line(str(value))}): read as unknown")
    return None


def _site_facts(state: HostState, name: str) -> dict[str, Any]:
    site = state.sites.get(name)
    if site is None:
        return {"exists": False, "hsts_enabled": False, "hsts_header": False, "extended_protection": "None"}
    return {"exists": True, "hsts_enabled": bool(site.hsts_enabled), "hsts_header": bool(site.hsts_header),
            "extended_protection": site.extended_protection}


def cert_facts(cert: Any) -> dict[str, Any]:
    """The contract's CERT object for one certificate of My."""
    info = cert.info
    has_key = cert.key_pem is not None
    # A key that does not open has no provider name to report, only its kind (Get-ExbeKeyInfo).
    merged = {**info, "friendly_name": cert.friendly_name, "has_private_key": has_key,
              "provider": cert.provider if has_key and cert.key_accessible else None,
              "provider_type": cert.provider_type,
              "key_accessible": bool(cert.key_accessible) if has_key else None}
    return {k: merged[k] for k in _CERT_FIELDS}


# -- clone -----------------------------------------------------------------------------------------------------------
def clone(state: HostState, data: dict[str, Any], faults: Faults, dry_run: bool,
          warnings: list[str], journal: Journal) -> tuple[bool, dict[str, Any]]:
    source_thumb = _thumb(data, "source_thumbprint")
    provider = data.get("provider") or CNG_PROVIDER
    result: dict[str, Any] = {"source_thumbprint": source_thumb, "new_thumbprint": None, "provider": None,
                              "provider_type": None, "key_accessible": None, "not_after": None}
    source = windows.get_certificate(state, "My", source_thumb)
    if source is None:
        raise StepFailed(f"Certificate {source_thumb} was not found in Cert:\\LocalMachine\\My", result)
    if dry_run:
        return True, result
    journal.enter("clone", f"clone {source_thumb} with New-SelfSignedCertificate -CloneCert",
                  {"thumbprint": source_thumb}, "clone", result)
    new = windows.new_self_signed_clone(state, source, provider=provider, key_length=data.get("key_length"),
                                        hash_algorithm=str(data.get("hash_algorithm") or "SHA256"),
                                        validity_years=int(data.get("validity_years") or 5))
    windows.grant_network_service_read(new)
    if new.provider_type != "CSP":
        warnings.append(f"the clone {new.thumbprint} has a {new.provider_type} key ({new.provider}); Exchange needs "
                        "a legacy CSP key (KB 3032024)")
    result.update(new_thumbprint=new.thumbprint, provider=new.provider, provider_type=new.provider_type,
                  key_accessible=new.key_accessible, not_after=new.info["not_after"])
    return True, result


# -- trust -----------------------------------------------------------------------------------------------------------
def trust(state: HostState, data: dict[str, Any], faults: Faults, dry_run: bool,
          warnings: list[str], journal: Journal) -> tuple[bool, dict[str, Any]]:
    thumb = _thumb(data, "thumbprint")
    present = windows.get_certificate(state, "Root", thumb) is not None
    result = {"thumbprint": thumb, "present_before": present, "present_after": present}
    if present:
        return False, result
    source = windows.get_certificate(state, "My", thumb)
    if source is None:
        raise StepFailed(f"Certificate {thumb} was not found in Cert:\\LocalMachine\\My", result)
    if not dry_run:
        journal.enter("trust", f"add {thumb} to LocalMachine\\Root", {"in_root": present}, "trust", result)
        windows.add_certificate(state, "Root", source.public_copy())
    result["present_after"] = True
    return True, result


# -- bind ------------------------------------------------------------------------------------------------------------
def bind(state: HostState, data: dict[str, Any], faults: Faults, dry_run: bool,
         warnings: list[str], journal: Journal) -> tuple[bool, dict[str, Any]]:
    """Acts on the exact bindingInformation texts it is given (exbe found them by meaning): the Back End's
    all-unassigned 444 binding (created as ``*:444:`` only when ``backend_binding`` is null) and, when given and
    carrying ``loopback_from``, the Default Web Site's 127.0.0.1:443 binding. Nothing else is touched."""
    thumb = _thumb(data, "thumbprint")
    backend_site = data.get("backend_site") or BACKEND_SITE
    frontend_site = data.get("frontend_site") or FRONTEND_SITE
    backend_text: str | None = data.get("backend_binding") or None
    loopback_text: str | None = data.get("loopback_binding") or None
    loopback_from = str(data.get("loopback_from") or "").replace(" ", "").upper() or None

    def current() -> dict[str, str | None]:
        backend = _exact_binding(state, backend_site, backend_text)
        loopback = _exact_binding(state, frontend_site, loopback_text)
        return {"backend": (backend.certificate_hash or None) if backend else None,
                "loopback": (loopback.certificate_hash or None) if loopback else None}

    result: dict[str, Any] = {"thumbprint": thumb, "before": {"backend": None, "loopback": None},
                              "after": {"backend": None, "loopback": None}, "created_backend_binding": False,
                              "restored": False, "ip_specific_444": []}
    if not windows.site_exists(state, backend_site):
        raise StepFailed(f"refusing to bind: IIS site {backend_site} does not exist; nothing changed", result)
    ip_specific, catch_all = [], []
    for binding in windows.https_bindings(state, backend_site):
        if binding.port != 444:
            continue
        if not binding.all_unassigned:
            ip_specific.append(binding.binding_information)
            warnings.append(f"{backend_site} has the IP-specific binding https {binding.binding_information}: remove "
                            "it (with Extended Protection it fails with SEC_E_BAD_BINDINGS); only *:444: is needed")
        elif not binding.host_header:
            catch_all.append(binding.binding_information)
    before = current()
    result.update(before=before, after=dict(before), ip_specific_444=ip_specific)
    refusal = _bind_input_refusal(state, backend_site, backend_text, frontend_site, loopback_text, catch_all) \
        or _bind_refusal(state, thumb)
    if not refusal and data.get("after_trust") and not any(c.thumbprint == thumb for c in state.root):
        # a statement of a batch runs after a failed one (PowerShell's batch): the template checks Root itself
        refusal = f"certificate {thumb} is not in LocalMachine\\Root (the trust before this bind did not complete)"
    if refusal:
        raise StepFailed(f"refusing to bind: {refusal}; nothing changed", result)
    loopback = _exact_binding(state, frontend_site, loopback_text)
    if loopback_text and loopback is None:
        warnings.append(f"{frontend_site} has no https binding {loopback_text}: nothing to move there")

    create_backend = backend_text is None
    move_backend = before["backend"] != thumb
    move_loopback = (loopback is not None and loopback_from is not None and before["loopback"] is not None
                     and before["loopback"].upper() == loopback_from and before["loopback"] != thumb)
    changed = move_backend or move_loopback
    result["created_backend_binding"] = create_backend and move_backend
    result["after"] = {"backend": thumb if move_backend else before["backend"],
                       "loopback": thumb if move_loopback else before["loopback"]}
    if dry_run or not changed:
        return changed, result
    journal.enter("bind", f"bind {thumb} on {backend_site} {backend_text or ''}", before, "bind",
                  {**result, "after": dict(before), "created_backend_binding": False})

    done: list[Callable[[], None]] = []  # undo actions, newest last
    try:
        if create_backend:
            windows.new_web_binding(state, backend_site, BACKEND_BINDING)
            backend_text = BACKEND_BINDING
            done.append(lambda: windows.remove_web_binding(state, backend_site, BACKEND_BINDING))
        if move_backend:
            assert backend_text is not None
            windows.add_ssl_certificate(state, backend_site, backend_text, thumb, faults)
            if not create_backend:
                done.append(_restorer(state, backend_site, backend_text, before["backend"], faults, warnings))
        if move_loopback:
            assert loopback_text is not None
            windows.add_ssl_certificate(state, frontend_site, loopback_text, thumb, faults)
    except windows.WindowsCallError as exc:
        for undo in reversed(done):
            undo()
        result["after"] = current()
        result["restored"] = True
        result["created_backend_binding"] = False
        raise StepFailed(f"binding {thumb} failed, previous certificates restored: {exc}", result) from None
    result["after"] = current()
    return True, result


def _exact_binding(state: HostState, site: str, text: str | None) -> Binding | None:
    """The https binding of ``site`` spelled exactly ``text`` (the template compares with ``-ceq``)."""
    if not text:
        return None
    return next((b for b in windows.https_bindings(state, site) if b.binding_information == text), None)


def _bind_input_refusal(state: HostState, backend_site: str, backend_text: str | None, frontend_site: str,
                        loopback_text: str | None, catch_all: list[str]) -> str:
    """Why the given binding texts must not be acted on ("" when they may be): the public 443 binding is never
    touched, an IP-specific 444 binding never bound or created, stale facts never acted on."""
    if backend_text is not None:
        if parse_binding_information(backend_text) != ("*", 444, ""):
            return f"backend_binding {backend_text} is not the all-unassigned https 444 binding (*:444:)"
        if _exact_binding(state, backend_site, backend_text) is None:
            return f"{backend_site} has no https binding {backend_text} (the facts are out of date: read them again)"
    elif catch_all:
        return (f"backend_binding is null but {backend_site} has the https binding {', '.join(catch_all)} (the facts "
                "are out of date: read them again)")
    if loopback_text is not None and parse_binding_information(loopback_text) != ("127.0.0.1", 443, ""):
        return (f"loopback_binding {loopback_text} of {frontend_site} is not the 127.0.0.1:443 binding; exbe never "
                "touches the public binding")
    return ""


def _bind_refusal(state: HostState, thumb: str) -> str:
    """The template's Get-ExbeBindRefusal: why this certificate must not be bound ("" when it may be)."""
    cert = windows.get_certificate(state, "My", thumb)
    if cert is None:
        return f"certificate {thumb} is not in LocalMachine\\My"
    if cert.key_pem is None:
        return f"certificate {thumb} has no private key"
    if windows.is_cng(cert):
        return f"certificate {thumb} has a CNG key ({cert.provider}); Exchange needs a legacy CSP key (KB 3032024)"
    if windows.key_problem(cert):
        return f"the private key of certificate {thumb} cannot be opened (IIS would fail with 0x80070520)"
    return ""


def _restorer(state: HostState, site: str, info: str, previous: str | None, faults: Faults,
              warnings: list[str]) -> Callable[[], None]:
    """AddSslCertificate of the previous hash; an empty one cannot be put back, one gone from My fails (a warning)."""
    def undo() -> None:
        if not previous:
            return
        try:
            windows.add_ssl_certificate(state, site, info, previous, faults, restoring=True)
        except windows.WindowsCallError as exc:
            warnings.append(f"restoring {info} to {previous} failed: {exc}")
    return undo


# -- restart ---------------------------------------------------------------------------------------------------------
def restart(state: HostState, data: dict[str, Any], faults: Faults, dry_run: bool,
            warnings: list[str], journal: Journal) -> tuple[bool, dict[str, Any]]:
    """The restart command, a wait while WAS/W3SVC are pending, then one start attempt for each of them it left not
    running (a StopPending one waited for until Stopped, ``ServiceController.Start``, a bounded ``WaitForStatus``
    Running); ok only when W3SVC runs at the end."""
    method = data.get("method") or "iisreset"
    before = windows.service_status(state, "W3SVC")
    result: dict[str, Any] = {"method": method, "w3svc_before": before, "w3svc_after": before,
                              "was_after": windows.service_status(state, "WAS"), "stopped_after_restart": [],
                              "started": []}
    if method not in ("iisreset", "services"):
        raise StepFailed(f"unknown restart method {method!r}; use iisreset or services", result)
    timeout = int(data.get("timeout_seconds") or 120)
    if dry_run:  # -WhatIf: it would restart; the services' state says nothing about a restart's outcome yet
        return True, result
    journal.enter("restart", f"restart IIS with {method}", {"W3SVC": before}, "restart IIS", result)
    try:
        if method == "iisreset":
            windows.iisreset(state, faults, timeout)
        else:
            windows.restart_services(state, faults)
    except windows.WindowsCallError as exc:
        warnings.append(f"{method}: {_one_line(str(exc))}")
    _start_stopped(state, faults, method, timeout, result, warnings)
    result.update(w3svc_after=windows.service_status(state, "W3SVC"), was_after=windows.service_status(state, "WAS"))
    if result["w3svc_after"] != "Running":
        tried = " and one start attempt" if "W3SVC" in result["stopped_after_restart"] else ""
        raise StepFailed(f"W3SVC is {result['w3svc_after']} after {method}{tried} (waited {timeout} s): OWA, ECP "
                         "and EWS are down until it runs (Start-Service W3SVC)", result, changed=True)
    return True, result


def _start_stopped(state: HostState, faults: Faults, method: str, timeout: int, result: dict[str, Any],
                   warnings: list[str]) -> None:
    """The template's settling wait, then one start attempt for each service the restart left not running, WAS first
    (W3SVC depends on it): a StopPending one is waited for until Stopped, a Stopped one started, then the bounded wait
    for Running."""
    stopped = []
    for name in ("WAS", "W3SVC"):
        windows.settle(state, name)
        if windows.service_status(state, name) != "Running":
            stopped.append(name)
    result["stopped_after_restart"] = stopped
    for name in stopped:
        if windows.service_status(state, name) == "Running":
            continue
        try:
            if windows.service_status(state, name) == "StopPending":
                windows.wait_for_status(state, name, "Stopped", timeout)
            if windows.service_status(state, name) == "Stopped":
                windows.start_service(state, faults, name, timeout)
            else:
                windows.wait_for_status(state, name, "Running", timeout)
        except windows.WindowsCallError as exc:
            warnings.append(f"starting {name} failed: {_one_line(str(exc))}")
        if windows.service_status(state, name) == "Running":
            result["started"].append(name)
    if stopped:
        warnings.append(f"{', '.join(stopped)} not running after {method}; one start attempt started "
                        f"{', '.join(result['started']) or 'none'}")


# -- cleanup ---------------------------------------------------------------------------------------------------------
def cleanup(state: HostState, data: dict[str, Any], faults: Faults, dry_run: bool,
            warnings: list[str], journal: Journal) -> tuple[bool, dict[str, Any]]:
    """The template's Invoke-ExbeCleanup: a certificate in use anywhere (:func:`certificate_uses`) is refused with
    where; a removed one leaves its key when another certificate of My shares the key container (``-DeleteKey``
    deletes the container: real-server-shapes.md §4), said in ``kept_keys``."""
    wanted = [str(t).replace(" ", "").upper() for t in data.get("thumbprints") or []]
    sites = [data.get("backend_site") or BACKEND_SITE, data.get("frontend_site") or FRONTEND_SITE]
    uses = certificate_uses(state, sites)
    result: dict[str, Any] = {"removed_my": [], "removed_root": [], "refused": [], "kept_keys": []}
    if not dry_run:
        journal.enter("cleanup", f"remove superseded certificates {', '.join(wanted)}",
                      {"bound": {t: ", ".join(where) for t, where in uses.items()}}, "clean up", result)
    containers: dict[str, list[str]] = {}
    for cert in state.my:
        if cert.key_container:
            containers.setdefault(cert.key_container, []).append(cert.thumbprint)
    for thumb in dict.fromkeys(wanted):
        if thumb in uses:
            result["refused"].append({"thumbprint": thumb, "reason": f"in use: {', '.join(uses[thumb])}"})
            continue
        mine = windows.get_certificate(state, "My", thumb)
        if mine is not None:
            sharers = [t for t in containers.get(mine.key_container or "", []) if t != thumb]
            if sharers:
                result["kept_keys"].append({"thumbprint": thumb, "reason": f"its key container is shared with "
                                                                           f"{', '.join(sharers)}: the key stays"})
            if not dry_run:
                windows.remove_certificate(state, "My", thumb, delete_key=not sharers)
            for holders in containers.values():
                if thumb in holders:
                    holders.remove(thumb)
            result["removed_my"].append(thumb)
        if windows.get_certificate(state, "Root", thumb) is not None:
            if not dry_run:
                windows.remove_certificate(state, "Root", thumb)
            result["removed_root"].append(thumb)
    return bool(result["removed_my"] or result["removed_root"]), result


def certificate_uses(state: HostState, sites: list[str]) -> dict[str, list[str]]:
    """The template's Get-ExbeCertificateUses: thumbprint -> where it serves TLS. An https binding of either site,
    any other http.sys SSL binding (a third site, WMSvc; one a site binding already named is not repeated) and any
    WinRM listener (``CertificateThumbprint``): real-server-shapes.md §4."""
    uses: dict[str, list[str]] = {}

    def add(thumb: str, where: str) -> None:
        key = thumb.replace(" ", "").upper()
        if key and where not in uses.get(key, []):
            uses.setdefault(key, []).append(where)
    for site in sites:
        for binding in windows.https_bindings(state, site):
            add(windows.binding_hash(state, binding), f"bound to {site} https {binding.binding_information}")
    named = set(uses)
    for name, thumb in windows.ssl_bindings(state).items():
        if thumb.upper() not in named:
            add(thumb, f"the http.sys SSL binding {name}")
    for listener in windows.winrm_listeners(state):
        if listener.get("CertificateThumbprint"):
            add(str(listener["CertificateThumbprint"]),
                f"the WinRM {listener['Transport']} listener {listener['Address']}:{listener['Port']}")
    return uses


# -- lock and journal (ps_templates/_lock.ps1.j2, lock.ps1.j2) -------------------------------------------------------
# %ProgramData%\exbe modelled on what Windows does with its files. [System.IO.File]::Open(path, CreateNew, ...) is
# CreateFile's CREATE_NEW: it creates the file only when it does not exist, in one operation of the file system, and
# fails with ERROR_FILE_EXISTS otherwise. Every other open of a record is FileShare.None, so one script at a time
# reads, checks and writes it (the others get a sharing violation and retry). The sandbox runs each step script under
# its host's lock (SandboxHost._mutate), which makes one script's open-check-write as indivisible as the exclusive
# handle makes it on Windows, and no more: two runs' scripts still interleave between statements, as on a server.
# A file is its text and write time (``HostState.exbe_files``), not a parsed record: an empty or cut file (a writer
# killed between creating and writing it) reads back as Windows would show it, an unreadable record.
LOCK_FILE = "lock.json"
LAST_RUN_FILE = "last-run.json"
LOCK_DIRECTORY = "C:\\ProgramData\\exbe"
#: Who the ACL of %ProgramData%\exbe allows when exbe creates it: Administrators and SYSTEM, protected from
#: inheritance (lock.ps1.j2's Initialize-ExbeLockDirectory; the well-known SIDs are Microsoft's "Well-known SIDs").
LOCK_DIRECTORY_SIDS = ("S-1-5-32-544", "S-1-5-18")


def _lock_directory(state: HostState, warnings: list[str]) -> None:
    """The template's Initialize-ExbeLockDirectory: create the directory with its own ACL, or warn about a looser one
    (``HostState.exbe_directory_acl``: the SIDs its ACL allows)."""
    if state.exbe_directory_acl is None:
        if not state.exbe_files:  # no directory yet (one with files but no ACL given: nothing known to warn about)
            state.exbe_directory_acl = list(LOCK_DIRECTORY_SIDS)
        return
    others = list(dict.fromkeys(sid for sid in state.exbe_directory_acl if sid not in LOCK_DIRECTORY_SIDS))
    if others:
        warnings.append(f"{LOCK_DIRECTORY} also grants access to {', '.join(others)}: a non-admin may be able to "
                        "create or replace exbe's lock there; allow only Administrators (S-1-5-32-544) and SYSTEM "
                        "(S-1-5-18)")


#: The owners the template's Assert-ExbeLockPlace trusts: Administrators, SYSTEM and the account exbe runs as (the
#: sandbox's account: a domain administrator, RID 500).
SANDBOX_ACCOUNT_SID = "S-1-5-21-3623811015-3361044348-30300820-500"
TRUSTED_OWNERS = (*LOCK_DIRECTORY_SIDS, SANDBOX_ACCOUNT_SID)


def _check_place(path: str, place: dict[str, str]) -> None:
    """The template's Assert-ExbeLockPlace for one folder or file: a reparse point, or an owner other than
    Administrators, SYSTEM or exbe's account, fails the step before anything there is read or written."""
    fix = "check what it holds, remove it, and run exbe again (exbe creates its own)"
    if place.get("reparse"):
        raise StepFailed(f"{path} is a junction or a link (a reparse point): exbe would read and write where it "
                         f"points; {fix}", {})
    owner = place.get("owner", LOCK_DIRECTORY_SIDS[0])
    if owner not in TRUSTED_OWNERS:
        raise StepFailed(f"{path} is owned by {owner}, not by Administrators (S-1-5-32-544) or SYSTEM (S-1-5-18): "
                         f"whoever created it can forge the journal exbe acts on; {fix} (or, if you trust it, "
                         "takeown /A /F with its path)", {})


def _check_places(state: HostState, name: str) -> None:
    """The checks of the template's Open-ExbeLockStream, before a record file is opened."""
    _check_place(LOCK_DIRECTORY, state.exbe_directory_place)
    stored = state.exbe_files.get(name)
    if stored is not None:
        _check_place(f"{LOCK_DIRECTORY}\\{name}", stored)


def _read_record(state: HostState, name: str, ttl_minutes: int) -> dict[str, Any] | None:
    """The template's Read-ExbeLockRecord: the record, an unreadable-record stand-in, or None without a file."""
    _check_places(state, name)
    stored = state.exbe_files.get(name)
    if stored is None:
        return None
    try:
        record = json.loads(stored["text"])
    except ValueError:
        record = None
    if not isinstance(record, dict) or "run_id" not in record:
        written = parse_time(stored["written_at"])
        return {"run_id": None,
                "unreadable": f"C:\\ProgramData\\exbe\\{name} holds no exbe lock record, written at "
                              f"{certs.iso(written)}",
                "expires_at": certs.iso(written + datetime.timedelta(minutes=ttl_minutes))}
    return record


def _write_record(state: HostState, name: str, record: dict[str, Any]) -> None:
    _check_places(state, name)
    state.exbe_files[name] = {"text": json.dumps(record, separators=(",", ":")), "written_at": certs.iso(utcnow())}


def _expired(record: dict[str, Any], now: datetime.datetime) -> bool:
    expires = record.get("expires_at")
    return not expires or parse_time(str(expires)) <= now


def _holder(record: dict[str, Any] | None) -> str:
    """The template's Format-ExbeLockHolder."""
    if record is None:
        return "nobody (the lock is gone: removed with exbe unlock?)"
    if record.get("run_id") is None:
        return f"an unreadable lock record ({record.get('unreadable')}); expires at {record.get('expires_at')}"
    return (f"run {record['run_id']} ({record.get('task')}) from agent {record.get('agent')} since "
            f"{record.get('started_at')}; expires at {record.get('expires_at')}")


def _add_entry(state: HostState, run_id: str, ttl_minutes: int, entry: dict[str, Any]) -> str:
    """The template's Add-ExbeLockEntry: "" when appended to this run's record, else why not."""
    record = _read_record(state, LOCK_FILE, ttl_minutes)
    if record is None:
        return f"exbe's lock on this server is not held by run {run_id} any more: it was removed (exbe unlock?)"
    if record.get("run_id") != run_id:
        return f"exbe's lock on this server is held by {_holder(record)}"
    record["journal"] = [*(record.get("journal") or []), entry]
    record["expires_at"] = certs.iso(utcnow() + datetime.timedelta(minutes=ttl_minutes))
    _write_record(state, LOCK_FILE, record)
    return ""


class Journal:
    """A mutating step's Enter-/Complete-ExbeJournal: without a lock context in its input (a hand-run script) it does
    nothing; with one, :meth:`enter` right before the change refuses unless the lock is this run's, and journals the
    intent and the state it replaces; :meth:`complete` journals the envelope's result when ``enter`` did."""

    def __init__(self, state: HostState, context: dict[str, Any] | None, warnings: list[str]) -> None:
        self.state = state
        self.context = context
        self.warnings = warnings
        self.step: str | None = None

    def enter(self, step: str, intent: str, replaces: dict[str, Any], verb: str, data: dict[str, Any]) -> None:
        if self.context is None:
            return
        entry = {"at": certs.iso(utcnow()), "step": step, "phase": "begin", "intent": intent, "replaces": replaces}
        refusal = _add_entry(self.state, str(self.context["run_id"]), int(self.context["ttl_minutes"]), entry)
        if refusal:
            raise StepFailed(f"refusing to {verb}: {refusal}; nothing changed", dict(data))
        self.step = step

    def complete(self, envelope: dict[str, Any]) -> None:
        if self.context is None or self.step is None:
            return
        entry = {"at": certs.iso(utcnow()), "step": self.step, "phase": "end", "ok": envelope["ok"],
                 "changed": envelope["changed"], "error": envelope["error"], "result": envelope["data"]}
        self.step = None
        failure = _add_entry(self.state, str(self.context["run_id"]), int(self.context["ttl_minutes"]), entry)
        if failure:
            envelope["warnings"].append(f"the journal has no result of this step: {failure}")


def lock(state: HostState, data: dict[str, Any], faults: Faults, dry_run: bool,
         warnings: list[str], journal: Journal) -> tuple[bool, dict[str, Any]]:
    """The template's Invoke-ExbeLock (see exbe.steps.lock for the record and its life)."""
    action, run_id, agent = str(data["action"]), str(data["run_id"]), str(data["agent"])
    ttl = int(data["ttl_minutes"])
    now = utcnow()
    result: dict[str, Any] = {"action": action, "now": certs.iso(now), "held": None, "last_run": None,
                              "acquired": False, "took_over": None, "released": False, "removed": None,
                              "refused": None}
    if action == "acquire":
        _check_place(LOCK_DIRECTORY, state.exbe_directory_place)
        _lock_directory(state, warnings)
        mine = {"exbe_lock": 1, "run_id": run_id, "agent": agent, "task": data["task"], "started_at": certs.iso(now),
                "expires_at": certs.iso(now + datetime.timedelta(minutes=ttl)),
                "journal": [{"at": certs.iso(now), "step": "lock", "phase": "begin",
                             "intent": f"take the lock for {data['task']}",
                             "replaces": {"my": [c.thumbprint for c in state.my]}}],
                "took_over": None, "ended": None}
        found = _read_record(state, LOCK_FILE, ttl)
        if found is None:  # CreateNew succeeds
            _write_record(state, LOCK_FILE, mine)
            result["acquired"] = True
        elif run_id and found.get("run_id") == run_id:  # this run's already (a repeated request): taken as it is
            mine = found
            result["acquired"] = True
        elif _expired(found, now):
            found.update(took_over=None, ended={"how": "taken over", "at": certs.iso(now),
                                                "by": f"run {run_id} from agent {agent}"})
            mine["took_over"] = found
            result["took_over"] = found
            _write_record(state, LOCK_FILE, mine)
            result["acquired"] = True
        else:
            result["held"] = found
        if result["acquired"]:
            result["held"] = mine
    elif action in ("release", "remove"):
        found = _read_record(state, LOCK_FILE, ttl)
        if found is None:
            result["refused"] = "no exbe run holds the lock"
        else:
            result["held"] = found
            allowed = bool(run_id) and found.get("run_id") == run_id
            if action == "remove":
                allowed = allowed or bool(data["force"]) or _expired(found, now)
            if not allowed:
                result["refused"] = f"the lock is held by {_holder(found)}"
            else:
                by = f"run {run_id} from agent {agent}" if action == "release" else f"exbe unlock from agent {agent}"
                found["ended"] = {"how": "released" if action == "release" else "removed", "at": certs.iso(now),
                                  "by": by}
                _write_record(state, LAST_RUN_FILE, found)
                del state.exbe_files[LOCK_FILE]
                if action == "remove":
                    result["removed"] = found
                else:
                    result["released"] = True
    elif action == "note":
        result["refused"] = _add_entry(state, run_id, ttl, {**(data["entry"] or {}), "at": certs.iso(now)}) or None
    elif action == "show":
        result["held"] = _read_record(state, LOCK_FILE, ttl)
    else:
        raise StepFailed(f"unknown lock action {action}: use acquire, release, show, remove or note", result)
    if action != "note":
        result["last_run"] = _read_record(state, LAST_RUN_FILE, ttl)
    return False, result


#: The sandbox's implementation of each registered step (``exbe.steps.REGISTRY``; a test holds the two equal).
HANDLERS: dict[str, Callable[..., tuple[bool, dict[str, Any]]]] = {
    "facts": facts, "clone": clone, "trust": trust, "bind": bind, "restart": restart, "cleanup": cleanup,
    "lock": lock,
}
from . import auth_steps as _auth_steps  # noqa: E402 - it imports this module's helpers

HANDLERS.update(export=_auth_steps.export, reload=_auth_steps.reload)

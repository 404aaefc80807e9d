"""The WinRM steps of `exbe auth` on a simulated server: ``export`` and ``reload``.

``export`` (``ps_templates/export.ps1.j2``): a certificate of ``LocalMachine\\My`` with its key as PFX bytes,
protected by the SecureString the script got as its first argument. As the template does on a real server
(``X509Certificate2.Export(Pfx, SecureString)``), a key that is not exportable fails with the CryptographicException
of ``NTE_BAD_KEY_STATE`` (0x8009000B), whose system text is "Key not valid for use in specified state." The PFX here
is PKCS#12 made by ``cryptography`` (AES-256, PBKDF2), not Windows' own encoding (3DES/RC2 on Windows Server
2016/2019 by default): Import-ExchangeCertificate's model reads either.

``reload`` (``ps_templates/reload.ps1.j2``): MSExchangeServiceHost restarted, the OWA and ECP app pools recycled
(:func:`recycled` counts them per server for the tests). Every simulated server is an Exchange Mailbox server, so
MSExchangeServiceHost exists and runs unless the state says otherwise; an app pool recycles only while WAS runs
(the refusal's text is **belief**). Failures are warnings, as in the template.
"""

from __future__ import annotations

import base64
import weakref
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from . import certs, windows
from .faults import Faults
from .psrp import SCRIPT_ARGUMENTS, SecureText
from .state import HostState
from .steps import Journal, StepFailed, _thumb

NOT_EXPORTABLE = "Key not valid for use in specified state."


def export(state: HostState, data: dict[str, Any], faults: Faults, dry_run: bool, warnings: list[str],
           journal: Journal) -> tuple[bool, dict[str, Any]]:
    thumbprint = _thumb(data, "thumbprint")
    result: dict[str, Any] = {"thumbprint": thumbprint, "pfx": "", "has_private_key": False}
    arguments = SCRIPT_ARGUMENTS.get()
    password = arguments[0] if arguments else None
    if not isinstance(password, SecureText):
        raise StepFailed("the PFX password must be the first argument, a SecureString", result)
    cert = state.find("My", thumbprint)
    if cert is None:
        raise StepFailed(f"certificate {thumbprint} is not in LocalMachine\\My", result)
    result["has_private_key"] = cert.key_pem is not None
    if cert.key_pem is None:
        raise StepFailed(f"certificate {thumbprint} has no private key here", result)
    if not cert.exportable:
        raise StepFailed(f"exporting {thumbprint} failed (is its key exportable?): {NOT_EXPORTABLE}", result)
    pfx = pkcs12.serialize_key_and_certificates(
        cert.friendly_name.encode("utf-8") or None, certs.load_key(cert.key_pem), certs.load_cert(cert.pem), None,
        serialization.BestAvailableEncryption(password.value.encode("utf-8")))
    result["pfx"] = base64.b64encode(pfx).decode("ascii")
    return False, result


#: id(HostState) -> (a weak reference to it, the app pools recycled there, in order).
_RECYCLED: dict[int, tuple[weakref.ref[HostState], list[str]]] = {}
WAS_STOPPED = "The WAS service is not running."  # belief: Restart-WebAppPool's refusal then


def recycled(state: HostState) -> list[str]:
    """The app pools ``reload`` recycled on this server, in order."""
    entry = _RECYCLED.get(id(state))
    return list(entry[1]) if entry is not None and entry[0]() is state else []


def reload(state: HostState, data: dict[str, Any], faults: Faults, dry_run: bool, warnings: list[str],
           journal: Journal) -> tuple[bool, dict[str, Any]]:
    service = str(data.get("service") or "")
    before = state.services.get(service, "Running")
    result: dict[str, Any] = {"service": service, "service_before": before, "service_after": before, "recycled": [],
                              "not_done": []}
    if dry_run:
        return True, result
    journal.enter("reload", f"restart {service} and recycle the app pools", {"service": before}, f"restart {service}",
                  result)
    state.services[service] = "Running"
    result["service_after"] = "Running"
    entry = _RECYCLED.get(id(state))
    if entry is None or entry[0]() is not state:
        entry = _RECYCLED[id(state)] = (weakref.ref(state), [])
    for pool in [str(p) for p in data.get("app_pools") or []]:
        if windows.service_status(state, "WAS") != "Running":
            warnings.append(f"recycling {pool} failed: {WAS_STOPPED}")
            result["not_done"].append(pool)
            continue
        entry[1].append(pool)
        result["recycled"].append(pool)
    return True, result

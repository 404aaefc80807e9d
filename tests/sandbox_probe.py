"""An independent look at a sandbox host, as Ansible's tests probe with win_shell: plain pypsrp, not exbe's layers."""

from __future__ import annotations

from typing import Any

from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from exbe import contract
from exbe.render import render_step
from exbe.sandbox.fleet import Fleet

from .conftest import PASSWORD, USERNAME

FACTS_INPUT = {"backend_site": "Exchange Back End", "frontend_site": "Default Web Site",
               "friendly_name": "Microsoft Exchange"}


def _wsman(fleet: Fleet, name: str, path: str) -> WSMan:
    return WSMan("127.0.0.1", port=fleet.ports(name)["http"], ssl=False, path=path, auth="ntlm", username=USERNAME,
                 password=PASSWORD, operation_timeout=10, read_timeout=20)


def facts(fleet: Fleet, name: str = "exch01") -> dict[str, Any]:
    """The host's certificate stores, bindings and services, read with the facts step over plain pypsrp."""
    with RunspacePool(_wsman(fleet, name, "wsman")) as pool:
        ps = PowerShell(pool)
        ps.add_script(render_step("facts", FACTS_INPUT))
        return contract.parse_result("facts", ps.invoke())["data"]


def binding(data: dict[str, Any], site: str, info: str) -> str | None:
    """The hash on ``site``'s https binding ``info``, compared as IIS means it: an empty address is ``*``."""
    def meaning(text: str) -> str:
        return "*" + text if text.startswith(":") else text
    for b in data["bindings"]:
        if b["site"] == site and meaning(b["binding_information"]) == meaning(info):
            return b["certificate_hash"]
    return None


def exchange_services(fleet: Fleet, name: str = "exch01") -> dict[str, str]:
    """Thumbprint -> Services, from ``Get-ExchangeCertificate | Select-Object Thumbprint,Services`` on the Exchange
    endpoint (the certificate objects themselves carry RawData only). While W3SVC is stopped that endpoint answers
    503, so the assignments are read from the host's model instead."""
    if not fleet.host(name).web_sites_running():
        services = fleet.host(name).snapshot()["exchange"]["services"]
        return {thumb: ", ".join(assigned) for thumb, assigned in services.items()}
    with RunspacePool(_wsman(fleet, name, "PowerShell"), configuration_name="Microsoft.Exchange") as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-ExchangeCertificate").add_parameter("Server", name)
        ps.add_cmdlet("Select-Object").add_parameter("Property", ["Thumbprint", "Services"])
        return {str(o.extended_properties["Thumbprint"]): str(o.extended_properties["Services"]) for o in ps.invoke()}


def internal_transport(fleet: Fleet, name: str = "exch01") -> str | None:
    if not fleet.host(name).web_sites_running():  # the endpoint answers 503 (see exchange_services)
        return fleet.host(name).snapshot()["exchange"]["internal_transport"]
    with RunspacePool(_wsman(fleet, name, "PowerShell"), configuration_name="Microsoft.Exchange") as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-TransportService").add_parameter("Identity", name)
        out = ps.invoke()
        props = {**out[0].adapted_properties, **out[0].extended_properties} if out else {}
        return str(props["InternalTransportCertificateThumbprint"]) if out else None

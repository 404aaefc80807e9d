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
    for b in data["bindings"]:
        if b["site"] == site and b["binding_information"] == info:
            return b["certificate_hash"]
    return None


def exchange_services(fleet: Fleet, name: str = "exch01") -> dict[str, str]:
    """Thumbprint -> Services, from Get-ExchangeCertificate on the Exchange endpoint."""
    with RunspacePool(_wsman(fleet, name, "PowerShell"), configuration_name="Microsoft.Exchange") as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-ExchangeCertificate").add_parameter("Server", name)
        return {o.extended_properties["Thumbprint"]: str(o.extended_properties["Services"]) for o in ps.invoke()}


def internal_transport(fleet: Fleet, name: str = "exch01") -> str | None:
    with RunspacePool(_wsman(fleet, name, "PowerShell"), configuration_name="Microsoft.Exchange") as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-TransportService").add_parameter("Identity", name)
        out = ps.invoke()
        return str(out[0].extended_properties["InternalTransportCertificateThumbprint"]) if out else None

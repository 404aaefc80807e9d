"""The obvious alternative, for comparison: every step through its own runspace pool.

WinRM steps go through pypsrp's ``Client.execute_ps`` (a new pool per call, ``Invoke-Expression ... | Out-String
-Stream``); Exchange cmdlets, which ``execute_ps`` cannot send (it sends scripts, refused in no-language mode), each
open a pool of their own. One Client and one WSMan per server are reused, so each endpoint authenticates once, as
pypsrp's table in shared/psrp-facts.md measures ``Client.execute_ps`` x 5. Same servers, same rendered scripts,
same concurrency as exbe.

    python -m bench.naive INVENTORY.yaml verify|renew CONCURRENCY
"""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor

from pypsrp.client import Client
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from exbe import contract, exchange
from exbe.render import render_step

FACTS = {"backend_site": "Exchange Back End", "frontend_site": "Default Web Site",
         "friendly_name": "Microsoft Exchange"}


class _Server:
    """One server as the naive script sees it: one pypsrp Client (WinRM) and one WSMan (Exchange endpoint), reused
    across steps as pypsrp intends, so authentication happens once per endpoint; every step still opens and closes
    a runspace pool of its own."""

    def __init__(self, entry: dict) -> None:
        self.name = entry["name"]
        credentials = {"username": os.environ["EXBE_USERNAME"], "password": os.environ["EXBE_PASSWORD"]}
        self.client = Client(entry["host"], port=entry["port"], ssl=False, auth=entry["auth"], **credentials)
        self.exchange = WSMan(entry["host"], port=entry["exchange_port"], path="PowerShell", ssl=False,
                              auth=entry["auth"], **credentials)

    def script(self, script: str) -> dict:
        output, _streams, _had_errors = self.client.execute_ps(script)
        return contract.parse_result(contract.parse_script(script)[0], output.splitlines())

    def cmdlets(self, commands: list[tuple[str, dict]]) -> list:
        """One pipeline (``a | b``) in a runspace pool of its own."""
        with RunspacePool(self.exchange, configuration_name="Microsoft.Exchange") as pool:
            ps = PowerShell(pool)
            for name, params in commands:
                ps.add_cmdlet(name)
                for key, value in params.items():
                    ps.add_parameter(key, value)
            return ps.invoke()


def one(entry: dict, task: str) -> None:
    server = _Server(entry)
    facts = server.script(render_step("facts", FACTS))["data"]
    for statement in exchange.read_statements(server.name):
        server.cmdlets(statement)
    if task != "renew":
        return
    bound = next(b["certificate_hash"] for b in facts["bindings"] if b["binding_information"] == "*:444:")
    cert = next(c for c in facts["certificates"] if c["thumbprint"] == bound)
    new = server.cmdlets([("New-ExchangeCertificate", {
        "Server": server.name, "SubjectName": cert["subject"], "DomainName": cert["dns_names"],
        "FriendlyName": "Microsoft Exchange", "KeySize": 2048, "PrivateKeyExportable": True, "Services": "None"})])
    created = exchange.read_certificate(new[0])  # real servers send RawData only
    assert created is not None
    thumb = created.thumbprint
    server.script(render_step("trust", {"thumbprint": thumb, "dry_run": False}))
    server.script(render_step("bind", {"thumbprint": thumb, "backend_site": "Exchange Back End",
                                       "frontend_site": "Default Web Site", "backend_binding": "*:444:",
                                       "loopback_binding": "127.0.0.1:443:", "loopback_from": bound,
                                       "dry_run": False}))
    server.script(render_step("facts", FACTS))


def main() -> None:
    inventory, task, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with open(inventory, encoding="utf-8") as handle:
        entries = json.load(handle)["exbe"]["inventory"]
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(lambda e: one(e, task), entries))


if __name__ == "__main__":
    main()

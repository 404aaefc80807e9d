"""A WAN blip does not fail a server: a request lost to a dropped connection is sent once more when repeating it
cannot change the server (opening a pool, reading output, closing, a pipeline that only reads), and a request that
changes the server is never sent twice: exbe re-reads the server instead.

The sandbox's ``drop_request=ENDPOINT:N`` fault drops that endpoint's N-th HTTP request unanswered. With NTLM the
requests of a one-script conversation are: 1-3 authentication, 4 Create and 5 Receive (the pool opens), 6 Command and
7 Receive (the script runs), 8 Delete (the pool closes) -- shared/psrp-facts.md's table, asserted in
tests/sandbox/test_protocol.py.
"""

from __future__ import annotations

import json
import time

import pytest

from exbe import contract
from exbe.errors import ConnectionFailed
from exbe.render import render_step
from exbe.sandbox.faults import Faults
from exbe.transport import RETRY_DELAY_S

from . import sandbox_probe as probe
from .conftest import first_server_session
from .exbe_cli import run_exbe

FACTS = {"backend_site": "Exchange Back End", "frontend_site": "Default Web Site",
         "friendly_name": "Microsoft Exchange"}
REQUESTS = {"pool-create": 4, "pool-receive": 5, "read-command": 6, "read-receive": 7, "close-delete": 8}


def _drop(fleet, request: str) -> None:
    fleet.host("exch01").faults = Faults(drop_request=request)


@pytest.mark.parametrize("lost", sorted(REQUESTS), ids=sorted(REQUESTS))
def test_a_read_survives_one_dropped_request_on_winrm(fleet, lost):
    _drop(fleet, f"winrm:{REQUESTS[lost]}")
    started = time.monotonic()
    with first_server_session(fleet) as session:
        result = session.run_scripts([render_step("facts", FACTS)], repeatable=True)
    assert contract.parse_result("facts", result.output)["ok"]
    assert time.monotonic() - started >= RETRY_DELAY_S, "the retry waits before it goes out"
    counts = fleet.host("exch01").request_counts()["winrm"]
    assert counts["Command"] == 1 and counts["Create"] == 1 and counts["Delete"] == 1
    assert counts["auth"] == 6, "the new connection authenticates again: the old one held the security context"


def test_a_read_of_exchange_cmdlets_survives_one_dropped_command(fleet):
    _drop(fleet, "exchange:6")
    with first_server_session(fleet) as session:
        result = session.run_cmdlets([[("Get-ExchangeCertificate", {"Server": "exch01"}),
                                       ("Select-Object", {"Property": ["Thumbprint", "Services"]})]])
    assert result.failed is None and result.output
    assert fleet.host("exch01").request_counts()["exchange"]["Command"] == 1


def test_a_dropped_command_that_changes_the_server_is_never_sent_again(start_fleet):
    fleet = start_fleet([("exch01", "untrusted_internal_disallowed")])
    bound = probe.binding(probe.facts(fleet), "Exchange Back End", "*:444:")
    fleet.host("exch01").reset_counts()
    _drop(fleet, "winrm:6")
    with first_server_session(fleet) as session, pytest.raises(ConnectionFailed) as lost:
        session.run_scripts([render_step("trust", {"thumbprint": bound, "dry_run": False})])
    assert lost.value.kind == "dropped"
    assert "Command" not in fleet.host("exch01").request_counts()["winrm"], "the change was not sent a second time"
    assert bound not in {c["thumbprint"] for c in probe.facts(fleet)["root"]}


def test_a_dropped_exchange_change_is_never_sent_again(start_fleet):
    fleet = start_fleet([("exch01", "backend_expiring")])
    before = {c["thumbprint"] for c in probe.facts(fleet)["certificates"]}
    fleet.host("exch01").reset_counts()
    _drop(fleet, "exchange:6")
    with first_server_session(fleet) as session, pytest.raises(ConnectionFailed) as lost:
        session.run_cmdlets([[("New-ExchangeCertificate", {
            "Server": "exch01", "SubjectName": "CN=exch01", "DomainName": ["exch01"],
            "FriendlyName": "Microsoft Exchange", "KeySize": 2048, "PrivateKeyExportable": True, "Services": "None",
            "Force": True})]])
    assert lost.value.kind == "dropped"
    assert "Command" not in fleet.host("exch01").request_counts()["exchange"]
    assert {c["thumbprint"] for c in probe.facts(fleet)["certificates"]} == before


# -- through the real command line -------------------------------------------------------------------------------------
@pytest.mark.parametrize("lost", ["winrm:5", "winrm:7", "exchange:6", "exchange:7"])
def test_verify_passes_with_one_dropped_read_or_receive(fleet, tmp_path, capsys, monkeypatch, lost):
    _drop(fleet, lost)
    record = tmp_path / "r.json"
    result = run_exbe(fleet, tmp_path, capsys, monkeypatch, "verify", "--server", "exch01", "--json", str(record))
    assert result.code == 0, result.out + result.err
    assert json.loads(record.read_text())["servers"][0]["error"] is None


def test_a_renewal_lost_on_the_way_is_not_repeated_and_the_next_run_converges(start_fleet, tmp_path, capsys,
                                                                             monkeypatch):
    fleet = start_fleet([("exch01", "backend_expiring")])
    host = fleet.host("exch01")
    before = {c["thumbprint"] for c in probe.facts(fleet)["certificates"]}
    host.reset_counts()
    # the Exchange endpoint's second pipeline is New-ExchangeCertificate (the first reads the Exchange facts)
    _drop(fleet, "exchange:8")
    first = run_exbe(fleet, tmp_path, capsys, monkeypatch, "renew", "--server", "exch01")
    assert first.code == 1
    assert host.request_counts()["exchange"]["Command"] == 1, "New-ExchangeCertificate was not sent a second time"
    assert {c["thumbprint"] for c in probe.facts(fleet)["certificates"]} == before
    host.faults = Faults()
    again = run_exbe(fleet, tmp_path, capsys, monkeypatch, "renew", "--server", "exch01")
    assert again.code == 0, again.out + again.err
    after = probe.facts(fleet)
    created = {c["thumbprint"] for c in after["certificates"]} - before
    assert len(created) == 1 and probe.binding(after, "Exchange Back End", "*:444:") in created


def test_only_exchange_cmdlets_that_read_are_counted_as_repeatable():
    assert contract.READ_ONLY_CMDLETS <= set(contract.EXCHANGE_CMDLETS)
    assert all(name.startswith("Get-") or name == "Select-Object" for name in contract.READ_ONLY_CMDLETS)
    assert {"New-ExchangeCertificate", "Enable-ExchangeCertificate", "Remove-ExchangeCertificate"}.isdisjoint(
        contract.READ_ONLY_CMDLETS)

"""What the rendered WinRM step scripts do on Windows where the sandbox only models it (issue 20, items 5-7): read
from the rendered scripts with tree-sitter-pwsh where a structure answers, from their text where nothing better
exists. No PowerShell runs here; the Windows workflow runs the same scripts (.github/windows/step_scripts.py)."""

from __future__ import annotations

import re

from exbe.model import Settings
from exbe.render import manual_input, render_manual, render_step
from tests import pwsh

SITES = {"backend_site": "Exchange Back End", "frontend_site": "Default Web Site"}
FACTS = render_step("facts", {**SITES, "friendly_name": "Microsoft Exchange"}, readable=True)
CLEANUP = render_step("cleanup", {"thumbprints": ["A1" * 20], **SITES, "dry_run": False}, readable=True)
RESTART = render_step("restart", {"method": "iisreset", "timeout_seconds": 120, "dry_run": False}, readable=True)


def function(text: str, name: str) -> str:
    """The text of one top-level function of a rendered script."""
    match = re.search(r"^function " + re.escape(name) + r" \{\n.*?^\}\n", text, re.M | re.S)
    assert match is not None, f"{name} is not defined"
    return match.group()


def test_cleanup_reads_every_http_sys_binding_and_every_winrm_listener_before_removing_anything():
    uses = function(CLEANUP, "Get-ExbeCertificateUses")
    assert "Get-ChildItem -Path 'IIS:\\SslBindings'" in uses
    assert "Get-ChildItem -Path 'WSMan:\\localhost\\Listener'" in uses and "'CertificateThumbprint'" in uses
    assert uses.count("throw (") == 2, "a source it cannot read fails the step: what is in use would be unknown"
    cleanup = function(CLEANUP, "Invoke-ExbeCleanup")
    assert cleanup.index("Get-ExbeCertificateUses") < cleanup.index("Remove-Item")


def test_cleanup_deletes_a_key_only_when_no_other_certificate_of_my_shares_its_container():
    removals = [c for c in pwsh.commands(function(CLEANUP, "Invoke-ExbeCleanup")) if c.name == "Remove-Item"]
    assert [("DeleteKey" in c.parameters) for c in removals] == [False, True, False], \
        "My without the key when it stays, My with it, Root (no key)"
    cleanup = function(CLEANUP, "Invoke-ExbeCleanup")
    kept, deleted = cleanup.index("if ($keyKept) {"), cleanup.index("-DeleteKey")
    assert kept < cleanup.index("} elseif ($PSCmdlet.ShouldProcess") < deleted
    reason = function(CLEANUP, "Get-ExbeKeyKeptReason")
    assert "if (-not $key.key_container) {" in reason, "an unknown container is kept: it may be shared"


def test_csp_or_cng_is_read_from_the_keys_provider_information_not_from_the_api_that_opened_it():
    key_info = function(FACTS, "Get-ExbeKeyInfo")
    # CryptAcquireContext refuses provider type 0 (a CNG key) with NTE_BAD_PROV_TYPE / NTE_PROV_TYPE_NOT_DEF
    codes = [int(n) for n in re.findall(r"-\d{10}", function(FACTS, "Test-ExbeNotACspKey"))]
    assert [c & 0xFFFFFFFF for c in codes] == [0x80090014, 0x80090017]
    opened_as_csp = key_info.index("$csp = $Certificate.PrivateKey")
    assert opened_as_csp < key_info.index("RSACertificateExtensions]::GetRSAPrivateKey(")
    csp = key_info.index("[System.Security.Cryptography.ICspAsymmetricAlgorithm]")
    assert key_info.index("$info.provider_type = 'CSP'", csp) < key_info.index("$info.provider_type = 'CNG'")
    refused = key_info[key_info.index("} catch {"):key_info.index("[System.Security.Cryptography.ICspAsym")]
    assert "Test-ExbeNotACspKey" in refused and "$info.provider_type = 'CSP'" in refused, \
        "a CSP key that fails to open for another reason stays a CSP key"


def test_sni_and_central_store_bindings_are_read_from_their_own_http_sys_entry():
    read = function(FACTS, "Get-ExbeBindingHash")
    assert "if (($flags -band 2) -ne 0) {\n        return ''" in read
    assert "'IIS:\\SslBindings\\!' + $parsed.port + '!'" in read and "if (($flags -band 1) -ne 0) {" in read
    assert "ssl_flags = Get-ExbeSslFlags -Binding $binding" in function(FACTS, "Get-ExbeSiteBindings")


def test_a_registry_value_is_never_cast_to_int_whatever_its_type():
    assert "[int]$value.Value" not in FACTS
    assert "ConvertTo-ExbeRegistryInteger -Name" in function(FACTS, "Invoke-ExbeFacts")


def test_the_hand_run_cleanup_reads_exchange_certificates_without_naming_a_property_they_may_lack():
    script = render_manual("cleanup", manual_input(Settings()))
    task = function(script, "Invoke-ExbeManualTask")
    assert not re.search(r"\$exchangeCertificate\.(?!PSObject\b)\w+", task), "StrictMode throws on a missing property"
    assert "$exchangeCertificate.PSObject.Properties['Services']" in task
    assert "Get-ExbeCertificateUses -Sites" in task, "in use as the pipeline's cleanup judges it"
    thumbprint = function(script, "Get-ExbeExchangeThumbprint")
    assert "PSObject.Properties['RawData']" in thumbprint and "ComputeHash" in thumbprint


def test_restart_never_waits_for_running_on_a_service_that_is_stopping():
    settled = function(RESTART, "Wait-ExbeServiceSettled")
    assert "@('StartPending', 'StopPending') -contains" in settled
    attempt = function(RESTART, "Start-ExbeStoppedService")
    assert attempt.index("WaitForStatus('Stopped'") < attempt.index("$service.Start()") \
        < attempt.index("WaitForStatus('Running'")


def test_a_csp_key_that_does_not_open_is_judged_csp_and_the_check_says_its_name_is_unknown():
    """The facts of a CSP key that does not open carry its kind but no provider name (Get-ExbeKeyInfo); the sandbox
    reports it so, and the key-provider check never writes a CSP named None."""
    from exbe.checks import run_checks
    from exbe.facts import HostFacts
    from exbe.sandbox.faults import Faults
    from exbe.sandbox.state import BACKEND_SITE, HostState
    from exbe.sandbox.steps import run_step
    from exbe.steps import facts

    state = HostState.from_scenario("exch01", "healthy")
    state.find("My", state.https_binding(BACKEND_SITE, 444).certificate_hash).key_accessible = False
    host = HostFacts.parse(run_step(state, "facts", facts.plan(Settings()), Faults())["data"])
    check = next(c for c in run_checks(host, None, None, Settings()) if c.id == "backend_key_provider")
    assert (check.status, check.value) == ("pass", None)
    assert check.message.endswith("back-end key in a CSP (its provider name is unknown: the key does not open)")

"""The sandbox is a real WinRM/PSRP peer: plain pypsrp (not exbe's layers) talks to it as to a Windows server."""

from __future__ import annotations

import hashlib
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from pypsrp.complex_objects import GenericComplexObject, PSInvocationState
from pypsrp.exceptions import AuthenticationError, WinRMTransportError, WSManFaultError
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from exbe import contract
from exbe.render import render_step
from exbe.sandbox.faults import Faults
from exbe.sandbox.records import NO_LANGUAGE_MESSAGE

from ..conftest import PASSWORD, USERNAME

FACTS_INPUT = {"backend_site": "Exchange Back End", "frontend_site": "Default Web Site",
               "friendly_name": "Microsoft Exchange"}


def wsman(fleet, name="exch01", *, endpoint="winrm", https=False, password=PASSWORD, **kwargs) -> WSMan:
    ports = fleet.ports(name)
    return WSMan("127.0.0.1", port=ports["https" if https else "http"], ssl=https,
                 path="wsman" if endpoint == "winrm" else "PowerShell",
                 auth="basic" if https else "ntlm", username=USERNAME, password=password,
                 cert_validation=str(fleet.ca_file) if https else False, operation_timeout=5, read_timeout=15,
                 **kwargs)


def exchange_pool(fleet, **kwargs) -> RunspacePool:
    return RunspacePool(wsman(fleet, endpoint="exchange", **kwargs), configuration_name="Microsoft.Exchange")


def run_script(pool: RunspacePool, script: str) -> PowerShell:
    ps = PowerShell(pool)
    ps.add_script(script)
    ps.invoke()
    return ps


def exchange_reads(pool: RunspacePool, server: str = "exch01", *, select: bool = True) -> PowerShell:
    """exbe's read pipeline: one statement per cmdlet, the projection last (a pipeline of two commands)."""
    ps = PowerShell(pool)
    ps.add_cmdlet("Get-ExchangeCertificate").add_parameter("Server", server)
    ps.add_statement()
    ps.add_cmdlet("Get-AuthConfig")
    if select:
        ps.add_statement()
        ps.add_cmdlet("Get-ExchangeCertificate").add_parameter("Server", server)
        ps.add_cmdlet("Select-Object").add_parameter("Property", ["Thumbprint", "Services"])
    ps.invoke()
    return ps


def of_type(output: list, leaf: str) -> list:
    """The objects whose most specific type name ends with ``leaf`` (projections are ``Selected.<type>``)."""
    return [o for o in output if o.types and o.types[0].endswith(leaf) and not o.types[0].startswith("Selected.")]


def my_thumbprints(fleet, name: str = "exch01") -> set[str]:
    return {c["thumbprint"] for c in fleet.host(name).snapshot()["certificates"]["my"]}


X509_TYPES = ["Microsoft.Exchange.Management.SystemConfigurationTasks.ExchangeCertificate",
              "System.Security.Cryptography.X509Certificates.X509Certificate2",
              "System.Security.Cryptography.X509Certificates.X509Certificate", "System.Object"]
REMOTING = {"PSComputerName", "RunspaceId", "PSShowComputerName"}


# -- what pypsrp hands back from the Exchange endpoint (the shapes exbe's readers get) --------------------------------
def test_pypsrp_gets_exchange_certificates_as_raw_data_with_the_remoting_members(fleet):
    with exchange_pool(fleet) as pool:
        ps = exchange_reads(pool, select=False)
        pool_id = uuid.UUID(pool.id)
    assert not ps.had_errors and not ps.streams.error
    certificates = of_type(ps.output, "ExchangeCertificate")
    assert {hashlib.sha1(o.adapted_properties["RawData"]).hexdigest().upper() for o in certificates} \
        == my_thumbprints(fleet), "RawData: the DER bytes, whose SHA-1 is the thumbprint"
    for obj in certificates:
        assert type(obj) is GenericComplexObject and obj.types == X509_TYPES
        assert list(obj.adapted_properties) == ["RawData"] and isinstance(obj.adapted_properties["RawData"], bytes)
        assert obj.extended_properties.keys() == REMOTING | {"SerializationData"}
        assert obj.extended_properties["RunspaceId"] == pool_id
        assert obj.extended_properties["PSComputerName"] == "exch01.contoso.local"
        assert obj.extended_properties["PSShowComputerName"] is False
        assert isinstance(obj.extended_properties["SerializationData"], bytes)
        assert obj.to_string.startswith("[Subject]\r\n  CN=") and "\r\n\r\n[Thumbprint]\r\n  " in obj.to_string
        assert obj.property_sets == []


def test_pypsrp_gets_the_projection_as_a_custom_object_with_the_services_enum(fleet):
    with exchange_pool(fleet) as pool:
        ps = exchange_reads(pool)
    assert not ps.had_errors
    projected = [o for o in ps.output if o.types[0].startswith("Selected.")]
    assert {o.extended_properties["Thumbprint"] for o in projected} == my_thumbprints(fleet)
    state = fleet.host("exch01").snapshot()
    for obj in projected:
        assert obj.types == ["Selected.Microsoft.Exchange.Management.SystemConfigurationTasks.ExchangeCertificate",
                             "System.Management.Automation.PSCustomObject", "System.Object"]
        assert obj.adapted_properties == {} and list(obj.extended_properties) == ["Thumbprint", "Services"]
        assert obj.to_string is None
        services = obj.extended_properties["Services"]
        assert type(services) is GenericComplexObject
        assert services.types == ["Microsoft.Exchange.Management.SystemConfigurationTasks.AllowedServices",
                                  "System.Enum", "System.ValueType", "System.Object"]
        expected = state["exchange"]["services"].get(obj.extended_properties["Thumbprint"], [])
        assert services.to_string == (", ".join(expected) or "None")
        flags = {"IMAP": 1, "POP": 2, "UM": 4, "IIS": 8, "SMTP": 16}
        assert services.property_sets == [sum(flags[s] for s in expected)], "the I32 flags value"


def test_pypsrp_gets_the_broken_state_as_deserialized_raw_data_objects(start_fleet):
    fleet = start_fleet([("exch01", "auth_cert_expired_with_signing")])
    with exchange_pool(fleet) as pool:
        ps = exchange_reads(pool)
    certificates = of_type(ps.output, "ExchangeCertificate")
    assert len(certificates) == len(my_thumbprints(fleet)), "not an empty list"
    for obj in certificates:
        assert obj.types == [f"Deserialized.{t}" for t in X509_TYPES]
        assert list(obj.adapted_properties) == ["RawData"] and obj.extended_properties.keys() == REMOTING
    assert {o.extended_properties["Thumbprint"] for o in ps.output if o.types[0].startswith("Selected.")} \
        == my_thumbprints(fleet), "the projection answers as in the healthy state (a belief)"


def test_pypsrp_gets_the_property_bag_too_from_a_full_wire_host(start_fleet):
    fleet = start_fleet([("exch01", "exchange_full_wire")])
    with exchange_pool(fleet) as pool:
        ps = exchange_reads(pool, select=False)
    for obj in of_type(ps.output, "ExchangeCertificate"):
        props = obj.adapted_properties
        assert list(props)[0] == "RawData" and props["Thumbprint"] == hashlib.sha1(props["RawData"]).hexdigest().upper()
        assert props["Services"].types[0].endswith("AllowedServices") and isinstance(props["NotAfter"], str)
        assert isinstance(props["IsSelfSigned"], bool) and isinstance(props["FriendlyName"], str)
        assert obj.extended_properties.keys() == REMOTING | {"SerializationData"}


def test_pypsrp_gets_auth_config_as_an_adapted_property_bag(fleet):
    with exchange_pool(fleet) as pool:
        ps = exchange_reads(pool, select=False)
    (auth,) = of_type(ps.output, "AuthConfig")
    props = auth.adapted_properties
    assert auth.types[:3] == ["Microsoft.Exchange.Data.Directory.SystemConfiguration.AuthConfig",
                              "Microsoft.Exchange.Data.Directory.SystemConfiguration.ADConfigurationObject",
                              "Microsoft.Exchange.Data.Directory.ADObject"]
    assert props["CurrentCertificateThumbprint"] in my_thumbprints(fleet)
    assert props["NextCertificateThumbprint"] == "" and props["NextCertificateEffectiveDate"] is None
    assert props["Id"] is props["Identity"] and str(props["Identity"]) == "Auth Configuration", "<Ref> resolved"
    assert str(props["ObjectState"]) == "Unchanged" and props["ObjectState"].property_sets == [1]
    (classes,) = props["ObjectClass"].property_sets
    assert classes.startswith("<LST>"), "pypsrp 0.9.1 leaves a MultiValuedProperty's <LST> as raw XML text"
    assert auth.extended_properties.keys() == REMOTING | {"SerializationData"}


def test_a_refused_select_object_is_an_error_record_and_the_pipeline_completes(start_fleet):
    """PowerShell's batch (real-server-shapes.md §4): the refused statement leaves its record, the batch goes on."""
    fleet = start_fleet([("exch01", "select_refused")])
    with exchange_pool(fleet) as pool:
        ps = exchange_reads(pool)
    assert not ps.had_errors and ps.state == PSInvocationState.COMPLETED, "one statement's error never fails a batch"
    (record,) = ps.streams.error
    assert "The term 'Select-Object' is not recognized as the name of a cmdlet" in str(record)
    assert (record.fq_error, record.target_name, record.reason) == (
        "CommandNotFoundException", "Select-Object", "CommandNotFoundException")
    assert len(of_type(ps.output, "ExchangeCertificate")) == len(my_thumbprints(fleet))
    assert len(of_type(ps.output, "AuthConfig")) == 1
    assert not [o for o in ps.output if o.types[0].startswith("Selected.")]


def batch_of(pool: RunspacePool, *statements: list[tuple[str, dict]]) -> PowerShell:
    ps = PowerShell(pool)
    for index, commands in enumerate(statements):
        if index:
            ps.add_statement()
        for name, params in commands:
            ps.add_cmdlet(name).add_parameters(params)
    ps.invoke()
    return ps


def test_a_failing_statement_in_the_middle_leaves_its_record_and_the_next_statements_run(start_fleet):
    fleet = start_fleet([("exch01", "healthy")], faults={"exch01": Faults(exchange_denied="Get-AuthConfig")})
    with exchange_pool(fleet) as pool:
        ps = batch_of(pool, [("Get-ExchangeServer", {"Identity": "exch01"})], [("Get-AuthConfig", {})],
                      [("Get-ExchangeCertificate", {"Server": "exch01"})])
    assert ps.state == PSInvocationState.COMPLETED and not ps.had_errors
    (record,) = ps.streams.error
    assert record.target_name == "Get-AuthConfig" and "'Get-AuthConfig' is not recognized" in str(record)
    assert len(of_type(ps.output, "ExchangeServer")) == 1, "the statement before it answered"
    assert len(of_type(ps.output, "ExchangeCertificate")) == len(my_thumbprints(fleet)), "the one after it ran"
    assert not of_type(ps.output, "AuthConfig")


def test_a_cmdlet_error_names_the_cmdlet_that_wrote_it(start_fleet):
    fleet = start_fleet([("exch01", "healthy")])
    with exchange_pool(fleet) as pool:
        ps = batch_of(pool, [("Get-ExchangeServer", {"Identity": "nosuch"})], [("Get-AuthConfig", {})])
    (record,) = ps.streams.error
    assert record.activity == "Get-ExchangeServer" and not ps.had_errors


def test_a_single_statement_is_no_batch_its_terminating_error_fails_the_pipeline(start_fleet):
    fleet = start_fleet([("exch01", "healthy")], faults={"exch01": Faults(exchange_denied="Get-AuthConfig")})
    with exchange_pool(fleet) as pool:
        ps = batch_of(pool, [("Get-AuthConfig", {})])
    assert ps.had_errors and ps.state == PSInvocationState.FAILED
    assert "'Get-AuthConfig' is not recognized" in str(ps.streams.error[-1])


def test_a_lost_runspace_fails_the_whole_pipeline_batch_or_not(start_fleet):
    fleet = start_fleet([("exch01", "healthy")], faults={"exch01": Faults(runspace_lost="facts")})
    with RunspacePool(wsman(fleet)) as pool:
        ps = PowerShell(pool)
        ps.add_script(render_step("facts", FACTS_INPUT)).add_statement().add_script(render_step("facts", FACTS_INPUT))
        ps.invoke()
    assert ps.had_errors and ps.state == PSInvocationState.FAILED and ps.output == []
    assert "runspace_lost" in str(ps.streams.error[-1])


def test_a_winrm_step_that_breaks_in_a_batch_lets_the_next_step_answer(start_fleet):
    fleet = start_fleet([("exch01", "healthy")], faults={"exch01": Faults(step_fail="trust")})
    with RunspacePool(wsman(fleet)) as pool:
        ps = PowerShell(pool)
        ps.add_script(render_step("trust", {"thumbprint": "AB" * 20, "dry_run": True})).add_statement()
        ps.add_script(render_step("facts", FACTS_INPUT))
        ps.invoke()
    assert not ps.had_errors and ps.state == PSInvocationState.COMPLETED
    assert "fault injected" in str(ps.streams.error[0])
    assert [e["step"] for e in contract.envelopes(ps.output)] == ["facts"]


@pytest.mark.parametrize("command", ["Where-Object", "ForEach-Object"])
def test_other_commands_after_an_exchange_cmdlet_are_not_recognized(fleet, command):
    with exchange_pool(fleet) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-ExchangeCertificate").add_cmdlet(command)
        ps.invoke()
    assert ps.had_errors and f"The term '{command}' is not recognized" in str(ps.streams.error[0])


# -- IIS restarts end the Exchange endpoint's pools ------------------------------------------------------------------
RESTART = {"method": "iisreset", "timeout_seconds": 30, "dry_run": False}


def test_an_iis_restart_ends_every_exchange_pool_of_the_host_and_winrm_survives(start_fleet):
    fleet = start_fleet([("exch01", "healthy"), ("exch02", "healthy")])
    exchange, other_host = exchange_pool(fleet), RunspacePool(wsman(fleet, "exch02", endpoint="exchange"),
                                                              configuration_name="Microsoft.Exchange")
    winrm = RunspacePool(wsman(fleet))
    for pool in (exchange, other_host, winrm):
        pool.open()
    assert not exchange_reads(exchange).had_errors
    restart = contract.parse_result("restart", run_script(winrm, render_step("restart", RESTART)).output)
    assert restart["ok"]
    with pytest.raises(WSManFaultError) as err:
        exchange_reads(exchange)
    assert err.value.code == 2150858843
    assert err.value.reason == (
        f"The request for the Windows Remote Shell with ShellId {exchange.shell.id} failed because the shell was not "
        "found on the server. Possible causes are: the specified ShellId is incorrect or the shell no longer exists "
        "on the server. Provide the correct ShellId or create a new shell and retry the operation.")
    assert contract.parse_result("facts", run_script(winrm, render_step("facts", FACTS_INPUT)).output)["ok"]
    assert not exchange_reads(other_host, "exch02").had_errors, "another host's pools are untouched"
    with exchange_pool(fleet) as reopened:
        assert of_type(exchange_reads(reopened).output, "ExchangeCertificate")
    winrm.close()
    other_host.close()


def test_while_w3svc_is_stopped_after_a_timed_out_iisreset_the_exchange_endpoint_answers_503(start_fleet):
    fleet = start_fleet([("exch01", "healthy")], faults={"exch01": Faults(iisreset_timeout=True)})
    exchange, winrm = exchange_pool(fleet), RunspacePool(wsman(fleet))
    exchange.open()
    winrm.open()
    restart = contract.parse_result("restart", run_script(winrm, render_step("restart", RESTART)).output)
    assert not restart["ok"] and "W3SVC" in restart["error"]
    with pytest.raises(WinRMTransportError) as err:
        exchange_reads(exchange)
    assert err.value.code == 503, "an IIS application with W3SVC stopped"
    assert contract.parse_result("facts", run_script(winrm, render_step("facts", FACTS_INPUT)).output)["ok"], \
        "WinRM (http.sys, not IIS) still answers"
    winrm.close()


def test_a_dry_run_restart_leaves_the_exchange_pools_open(fleet):
    with exchange_pool(fleet) as exchange, RunspacePool(wsman(fleet)) as winrm:
        run_script(winrm, render_step("restart", {**RESTART, "dry_run": True}))
        assert not exchange_reads(exchange).had_errors


def test_exchange_endpoint_refuses_scripts_with_the_no_language_error(fleet):
    with exchange_pool(fleet) as pool:
        ps = run_script(pool, "Get-ExchangeCertificate | Where-Object { $_.IsSelfSigned }")
    assert ps.had_errors
    assert NO_LANGUAGE_MESSAGE in str(ps.streams.error[0])


def test_unknown_exchange_parameter_is_refused_as_exchange_does(fleet):
    with exchange_pool(fleet) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-ExchangeCertificate").add_parameter("NoSuchParameter", "x")
        ps.invoke()
    assert ps.had_errors
    assert "A parameter cannot be found that matches parameter name 'NoSuchParameter'" in str(ps.streams.error[0])


def test_winrm_runs_an_exbe_step_over_ntlm_with_message_encryption(fleet):
    transport = wsman(fleet)
    with RunspacePool(transport) as pool:
        ps = run_script(pool, render_step("facts", FACTS_INPUT))
    assert transport.transport.encryption is not None, "NTLM over HTTP uses WinRM message encryption"
    result = contract.parse_result("facts", ps.output)
    assert result["ok"] and result["data"]["computer"]["name"].upper() == "EXCH01"


def test_basic_over_https_validates_the_sandbox_ca(fleet):
    with RunspacePool(wsman(fleet, https=True)) as pool:
        ps = run_script(pool, render_step("facts", FACTS_INPUT))
    assert contract.parse_result("facts", ps.output)["ok"]


def test_https_without_the_sandbox_ca_fails_certificate_validation(fleet):
    transport = WSMan("127.0.0.1", port=fleet.ports("exch01")["https"], ssl=True, auth="basic", username=USERNAME,
                      password=PASSWORD, cert_validation=True)
    with pytest.raises(requests.exceptions.SSLError):
        RunspacePool(transport).open()


def test_basic_over_plain_http_is_refused(fleet):
    transport = WSMan("127.0.0.1", port=fleet.ports("exch01")["http"], ssl=False, auth="basic", username=USERNAME,
                      password=PASSWORD, encryption="never")
    with pytest.raises(AuthenticationError):
        RunspacePool(transport).open()


@pytest.mark.parametrize("https", [False, True], ids=["ntlm", "basic-https"])
def test_wrong_password_is_refused_with_the_clients_normal_error(fleet, https):
    with pytest.raises(AuthenticationError):
        RunspacePool(wsman(fleet, https=https, password="not-the-password")).open()


def test_a_400_kb_script_arrives_in_several_envelopes_and_is_judged_whole(fleet):
    big = "# " + "x" * 400_000 + "\nWrite-Output 'hello'"
    host = fleet.host("exch01")
    host.reset_counts()
    with RunspacePool(wsman(fleet)) as pool:
        ps = run_script(pool, big)
    assert ps.had_errors
    assert "cannot execute arbitrary PowerShell" in str(ps.streams.error[0])
    assert host.request_counts()["winrm"].get("Send", 0) >= 1, "Command + Send fragments"


def test_an_unrecognised_script_ends_in_a_terminating_error_never_a_fake_success(fleet):
    with RunspacePool(wsman(fleet)) as pool:
        ps = run_script(pool, "Get-ChildItem Cert:\\LocalMachine\\My")
        assert ps.had_errors and ps.output == []
        edited = render_step("facts", FACTS_INPUT).replace("$ErrorActionPreference = 'Stop'",
                                                            "$ErrorActionPreference = 'Continue'")
        ps = run_script(pool, edited)
    assert ps.had_errors
    assert "cannot execute arbitrary PowerShell" in str(ps.streams.error[0])


def test_a_script_opening_an_exchange_session_fails_with_the_second_hop_error(fleet):
    script = ("$s = New-PSSession -ConfigurationName Microsoft.Exchange -ConnectionUri http://exch01/PowerShell\n"
              "Import-PSSession $s")
    with RunspacePool(wsman(fleet)) as pool:
        ps = run_script(pool, script)
    assert ps.had_errors
    assert "0x8009030e" in str(ps.streams.error[0])


def test_two_pipelines_of_one_pool_run_at_once_and_keep_their_own_output(fleet):
    with RunspacePool(wsman(fleet), max_runspaces=2) as pool:
        first, second = PowerShell(pool), PowerShell(pool)
        first.add_script(render_step("facts", FACTS_INPUT))
        second.add_script(render_step("trust", {"thumbprint": "00" * 20, "dry_run": True}))
        first.begin_invoke()
        second.begin_invoke()
        out_second = second.end_invoke()
        out_first = first.end_invoke()
    assert contract.parse_result("facts", out_first)["step"] == "facts"
    assert contract.parse_result("trust", out_second)["step"] == "trust"


def test_ten_hosts_serve_at_once(start_fleet):
    fleet = start_fleet([(f"exch{i:02d}", "healthy") for i in range(1, 11)])

    def facts(name: str) -> str:
        with RunspacePool(wsman(fleet, name)) as pool:
            return contract.parse_result("facts", run_script(pool, render_step("facts", FACTS_INPUT)).output)[
                "data"]["computer"]["name"]

    with ThreadPoolExecutor(max_workers=10) as pool:
        names = list(pool.map(facts, fleet.hosts))
    assert [n.lower() for n in names] == list(fleet.hosts)


# -- request counts: the table in shared/psrp-facts.md -----------------------------------------------------------
@pytest.mark.parametrize("https", [False, True], ids=["ntlm", "basic-https"])
def test_request_counts_per_phase_match_the_documented_table(fleet, https):
    host = fleet.host("exch01")
    host.reset_counts()
    auth = 0 if https else 3
    pool = RunspacePool(wsman(fleet, https=https))
    pool.open()
    assert host.total_requests("winrm") == auth + 2, "open = (auth) + Create + Receive"
    ps = run_script(pool, render_step("facts", FACTS_INPUT))
    assert host.total_requests("winrm") == auth + 4, "one script = Command + Receive"
    ps.close()
    assert host.total_requests("winrm") == auth + 5, "closing a finished pipeline = Signal"
    pool.exchange_keys()
    assert host.total_requests("winrm") == auth + 7, "exchange_keys = 2"
    pool.close()
    assert host.total_requests("winrm") == auth + 8, "close = Delete"
    counts = host.request_counts()["winrm"]
    assert counts["Create"] == 1 and counts["Delete"] == 1 and counts["Signal"] == 1
    assert counts.get("auth", 0) == auth


# -- faults ----------------------------------------------------------------------------------------------------------
def test_fault_step_fail_gives_a_terminating_error_record(start_fleet):
    fleet = start_fleet([("exch01", "healthy")], faults={"exch01": Faults(step_fail="facts")})
    with RunspacePool(wsman(fleet)) as pool:
        ps = run_script(pool, render_step("facts", FACTS_INPUT))
    assert ps.had_errors and "fault injected" in str(ps.streams.error[0])


def test_fault_auth_fail_refuses_good_credentials(start_fleet):
    fleet = start_fleet([("exch01", "healthy")], faults={"exch01": Faults(auth_fail=True)})
    with pytest.raises(AuthenticationError):
        RunspacePool(wsman(fleet)).open()


def test_fault_http_500_surfaces_as_a_wsman_fault(start_fleet):
    fleet = start_fleet([("exch01", "healthy")], faults={"exch01": Faults(http_500=True)})
    with pytest.raises((WSManFaultError, WinRMTransportError)):
        RunspacePool(wsman(fleet, https=True)).open()


def test_fault_drop_after_n_requests_drops_the_connection(start_fleet):
    fleet = start_fleet([("exch01", "healthy")], faults={"exch01": Faults(drop_after=5)})
    with pytest.raises(requests.exceptions.ConnectionError):
        with RunspacePool(wsman(fleet)) as pool:
            run_script(pool, render_step("facts", FACTS_INPUT))


def test_fault_drop_in_step_applies_the_change_then_drops(start_fleet):
    fleet = start_fleet([("exch01", "untrusted_internal_disallowed")], faults={"exch01": Faults(drop_in_step="trust")})
    host = fleet.host("exch01")
    with RunspacePool(wsman(fleet)) as pool:
        facts = contract.parse_result("facts", run_script(pool, render_step("facts", FACTS_INPUT)).output)["data"]
    bound = next(b["certificate_hash"] for b in facts["bindings"] if b["binding_information"] == "*:444:")
    pool = RunspacePool(wsman(fleet))
    pool.open()
    with pytest.raises(requests.exceptions.ConnectionError):
        run_script(pool, render_step("trust", {"thumbprint": bound, "dry_run": False}))
    # the security context died with the connection, as on Windows: the client reconnects with a new pool
    with RunspacePool(wsman(fleet)) as pool:
        after = contract.parse_result("facts", run_script(pool, render_step("facts", FACTS_INPUT)).output)["data"]
    assert bound in {r["thumbprint"] for r in after["root"]}
    assert host.state_path.exists()


def test_fault_operation_timeout_is_the_wsman_timeout_fault(fleet):
    pool = RunspacePool(wsman(fleet))
    pool.open()
    fleet.host("exch01").faults.operation_timeout = True
    with pytest.raises(WSManFaultError) as err:
        pool.shell.receive("stdout")
    assert err.value.code == 2150858793, "the code clients treat as 'poll again'"
    fleet.host("exch01").faults.operation_timeout = False
    pool.close()


def test_fault_latency_delays_every_request(start_fleet):
    import time

    fleet = start_fleet([("exch01", "healthy")], faults={"exch01": Faults(latency_ms=100)})
    started = time.monotonic()
    RunspacePool(wsman(fleet)).open()
    assert time.monotonic() - started >= 0.5, "5 requests x 100 ms"


def test_fault_exchange_unavailable_answers_503_on_the_exchange_endpoint_only(start_fleet):
    fleet = start_fleet([("exch01", "healthy")], faults={"exch01": Faults(exchange_unavailable=True)})
    with pytest.raises(WinRMTransportError) as err:
        exchange_pool(fleet).open()
    assert err.value.code == 503
    with RunspacePool(wsman(fleet)) as pool:
        assert contract.parse_result("facts", run_script(pool, render_step("facts", FACTS_INPUT)).output)["ok"]


def test_malformed_xml_gets_a_wsman_fault_and_the_server_keeps_serving(fleet):
    transport = wsman(fleet, https=True)
    response = requests.post(f"https://127.0.0.1:{fleet.ports('exch01')['https']}/wsman", data=b"<not-xml",
                             headers={"Content-Type": "application/soap+xml;charset=UTF-8"},
                             auth=(USERNAME, PASSWORD), verify=str(fleet.ca_file), timeout=10)
    assert response.status_code == 400 and b"WSManFault" in response.content
    response = requests.post(f"https://127.0.0.1:{fleet.ports('exch01')['https']}/wsman",
                             data=b"x" * (2 * 1024 * 1024), auth=(USERNAME, PASSWORD), verify=str(fleet.ca_file),
                             headers={"Content-Type": "application/soap+xml;charset=UTF-8"}, timeout=10)
    assert response.status_code == 400 and b"maximum envelope size" in response.content
    with RunspacePool(transport) as pool:
        assert contract.parse_result("facts", run_script(pool, render_step("facts", FACTS_INPUT)).output)["ok"]


def test_a_shell_the_server_no_longer_has_is_the_invalid_selectors_fault(fleet):
    pool = RunspacePool(wsman(fleet))
    pool.open()
    fleet.host("exch01").close_shell(pool.shell.id)
    ps = PowerShell(pool)
    ps.add_script("x")
    with pytest.raises(WSManFaultError) as err:
        ps.invoke()
    assert err.value.code == 2150858843


def test_host_state_persists_as_json_after_a_change(fleet):
    import json

    host = fleet.host("exch01")
    with RunspacePool(wsman(fleet)) as pool:
        facts = contract.parse_result("facts", run_script(pool, render_step("facts", FACTS_INPUT)).output)["data"]
        thumb = next(c["thumbprint"] for c in facts["certificates"] if c["friendly_name"] == "Microsoft Exchange")
        run_script(pool, render_step("trust", {"thumbprint": thumb, "dry_run": False}))
    on_disk = json.loads(host.state_path.read_text())
    assert on_disk == host.snapshot()

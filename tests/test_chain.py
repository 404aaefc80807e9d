"""The renew chain end to end on the sandbox, through the real `exbe` command line."""

from __future__ import annotations

import json

import junitparser
import pytest

from exbe.sandbox.faults import Faults
from exbe.sandbox.state import scenario_names

from . import sandbox_probe as probe

BACKEND, FRONTEND = "Exchange Back End", "Default Web Site"
MUST_STOP = {
    "ip_specific_444": "IP-specific",
    "unknown_candidates_none_bound": "candidates",
}
#: What an admin adds for a scenario: W3SVC is down, so the chain restarts IIS.
EXTRA_ARGS = {"w3svc_stopped": ["--restart-iis"]}
#: The back end is repaired, but verify rightly still fails what exbe does not renew: the Auth certificate.
VERIFY_STILL_FAILS = {
    "auth_cert_expired_with_signing": {"auth_cert"},
    # the lost certificate was also the internal transport certificate; SMTP moves only with --smtp move
    "backend_missing": {"internal_transport_cert"},
}


def failed_checks(record_path) -> set[str]:
    record = json.loads(record_path.read_text())
    return {c["id"] for step in record["servers"][0]["steps"] for c in step.get("checks", []) if c["status"] == "fail"}



def served_state(fleet) -> dict:
    """The host's state but exbe's own lock record (%ProgramData%\\exbe): every real run journals there."""
    return {k: v for k, v in fleet.host("exch01").snapshot().items() if k != "exbe_files"}


def untouched(before: dict, after: dict, before_services: dict, after_services: dict) -> None:
    assert probe.binding(after, FRONTEND, "*:443:") == probe.binding(before, FRONTEND, "*:443:"), \
        "the Default Web Site's public *:443: binding is never touched"
    smtp_before = {t for t, s in before_services.items() if "SMTP" in s.upper()}
    smtp_after = {t for t, s in after_services.items() if "SMTP" in s.upper()}
    assert smtp_after == smtp_before, "SMTP stays where it was unless --smtp move"


@pytest.mark.parametrize("scenario", scenario_names())
def test_renew_chain_ends_verified_or_stops_early_with_a_clear_message(start_fleet, exbe, tmp_path, scenario):
    fleet = start_fleet([("exch01", scenario)])
    before = probe.facts(fleet)
    services_before = probe.exchange_services(fleet)
    transport_before = probe.internal_transport(fleet)

    record = tmp_path / "r.json"
    result = exbe(fleet, "renew", "--server", "exch01", "--json", str(record), *EXTRA_ARGS.get(scenario, []))

    after = probe.facts(fleet)
    untouched(before, after, services_before, probe.exchange_services(fleet))
    assert probe.internal_transport(fleet) == transport_before
    if scenario in MUST_STOP:
        assert result.code == 1
        assert MUST_STOP[scenario] in result.out
        assert probe.binding(after, BACKEND, "*:444:") == probe.binding(before, BACKEND, "*:444:"), \
            "stopping early changes nothing"
    elif scenario in VERIFY_STILL_FAILS:
        assert result.code == 1
        assert failed_checks(record) == VERIFY_STILL_FAILS[scenario]
        bound = probe.binding(after, BACKEND, "*:444:")
        assert bound and bound in {c["thumbprint"] for c in after["certificates"]}
    else:
        assert result.code == 0, result.out + result.err
        bound = probe.binding(after, BACKEND, "*:444:")
        assert bound and bound in {c["thumbprint"] for c in after["certificates"]}


def test_under_expired_auth_cert_with_signing_renew_works_through_the_certificate_store(start_fleet, exbe,
                                                                                        tmp_path):
    fleet = start_fleet([("exch01", "auth_cert_expired_with_signing")])
    old = probe.binding(probe.facts(fleet), BACKEND, "*:444:")
    record = tmp_path / "r.json"
    result = exbe(fleet, "renew", "--server", "exch01", "--force", "--json", str(record))
    new = probe.binding(probe.facts(fleet), BACKEND, "*:444:")
    assert new and new != old
    assert "New-SelfSignedCertificate -CloneCert" in result.out
    assert "cannot sign their answers" in result.out or "cannot sign their answers" in record.read_text()
    preflight = next(s for s in json.loads(record.read_text())["servers"][0]["steps"] if s["step"] == "preflight")
    assert any("`exbe auth --server exch01` renews the Auth certificate" in w for w in preflight["warnings"]), \
        "the blinded path names the fix"
    steps = {s["step"]: s["status"] for s in json.loads(record.read_text())["servers"][0]["steps"]}
    assert steps["renew"] == steps["trust"] == steps["bind"] == "changed"
    assert failed_checks(record) == {"auth_cert"}, "only the Auth certificate, which is another job, stays red"


def test_a_bind_failure_leaves_the_previous_binding_exits_non_zero_and_says_so_in_junit(start_fleet, exbe, tmp_path):
    fleet = start_fleet([("exch01", "backend_expiring")], faults={"exch01": Faults(bind_com_error=True)})
    old = probe.binding(probe.facts(fleet), BACKEND, "*:444:")
    report = tmp_path / "renew.xml"
    result = exbe(fleet, "renew", "--server", "exch01", "--junit", str(report))
    assert result.code == 1
    assert probe.binding(probe.facts(fleet), BACKEND, "*:444:") == old
    suite = next(iter(junitparser.JUnitXml.fromfile(str(report))))
    bind_case = next(case for case in suite if case.name == "exch01: bind")
    assert bind_case.result and "0x80070520" in bind_case.result[0].message


# -- the Ansible trio for every mutating step ------------------------------------------------------------------------
TRIO = {
    "renew": ("backend_expiring", ["renew", "--server", "exch01"]),
    "trust": ("untrusted_internal_disallowed", ["trust", "--server", "exch01"]),
    "bind": ("binding_empty", ["bind", "--server", "exch01"]),
}


@pytest.mark.parametrize("step", sorted(TRIO))
def test_dry_run_reports_the_change_and_leaves_the_state_byte_identical(start_fleet, exbe, step):
    scenario, args = TRIO[step]
    fleet = start_fleet([("exch01", scenario)])
    state_file = fleet.host("exch01").state_path
    before = state_file.read_bytes()
    result = exbe(fleet, *args, "--dry-run")
    assert state_file.read_bytes() == before
    assert "would" in result.out and "changed" in result.out


@pytest.mark.parametrize("step", sorted(TRIO))
def test_the_real_run_makes_the_change_and_a_second_run_changes_nothing(start_fleet, exbe, tmp_path, step):
    scenario, args = TRIO[step]
    fleet = start_fleet([("exch01", scenario)])
    state_file = fleet.host("exch01").state_path
    before = state_file.read_bytes()
    first = exbe(fleet, *args, "--json", str(tmp_path / "first.json"))
    assert first.code == 0, first.out + first.err
    assert state_file.read_bytes() != before
    changed_first = [s for s in json.loads((tmp_path / "first.json").read_text())["servers"][0]["steps"]
                     if s["changed"]]
    assert any(s["step"] == step for s in changed_first)

    after_first = served_state(fleet)
    second = exbe(fleet, *args, "--json", str(tmp_path / "second.json"))
    assert second.code == 0
    assert not [s for s in json.loads((tmp_path / "second.json").read_text())["servers"][0]["steps"] if s["changed"]]
    assert served_state(fleet) == after_first


def test_cleanup_trio_removes_only_superseded_unused_certificates(start_fleet, exbe, tmp_path):
    fleet = start_fleet([("exch01", "duplicate_backend_certs")])
    state_file = fleet.host("exch01").state_path
    before_facts = probe.facts(fleet)
    before = state_file.read_bytes()
    dry = exbe(fleet, "cleanup", "--server", "exch01", "--min-age", "0", "--dry-run")
    assert dry.code == 0, dry.out
    assert state_file.read_bytes() == before and "would" in dry.out
    real = exbe(fleet, "cleanup", "--server", "exch01", "--min-age", "0")
    assert real.code == 0, real.out
    after = probe.facts(fleet)
    assert len(after["certificates"]) < len(before_facts["certificates"])
    assert probe.binding(after, BACKEND, "*:444:") in {c["thumbprint"] for c in after["certificates"]}
    again = served_state(fleet)
    assert exbe(fleet, "cleanup", "--server", "exch01", "--min-age", "0").code == 0
    assert served_state(fleet) == again


# -- round trips -----------------------------------------------------------------------------------------------------
def test_verify_costs_8_requests_per_endpoint(start_fleet, exbe):
    fleet = start_fleet([("exch01", "healthy")])
    host = fleet.host("exch01")
    host.reset_counts()
    assert exbe(fleet, "verify", "--server", "exch01").code == 0
    assert host.total_requests("winrm") == 8, host.request_counts()
    assert host.total_requests("exchange") == 8, host.request_counts()


def test_the_renew_chain_costs_10_winrm_and_10_exchange_requests(start_fleet, exbe):
    fleet = start_fleet([("exch01", "backend_expiring")])
    host = fleet.host("exch01")
    host.reset_counts()
    result = exbe(fleet, "renew", "--server", "exch01")
    assert result.code == 0, result.out
    assert host.total_requests("winrm") == 10, host.request_counts()
    assert host.total_requests("exchange") == 10, host.request_counts()


# -- reports ---------------------------------------------------------------------------------------------------------
def test_junit_has_a_suite_per_server_and_a_case_per_step_and_check(start_fleet, exbe, tmp_path):
    fleet = start_fleet([("exch01", "backend_expiring"), ("exch02", "healthy")])
    report = tmp_path / "reports" / "renew.xml"
    result = exbe(fleet, "renew", "--all", "--junit", str(report))
    assert result.code == 0, result.out
    suites = {s.name: s for s in junitparser.JUnitXml.fromfile(str(report))}
    assert set(suites) == {"exch01", "exch02"}
    cases = {(c.classname, c.name) for c in suites["exch01"]}
    for step in ("preflight", "renew", "trust", "bind"):
        assert ("exbe.exch01", f"exch01: {step}") in cases
    assert ("exbe.exch01", "exch01: backend_days_left") in cases
    assert ("exbe.exch01", "exch01: tls_444_serves_bound") in cases


# -- restart (opt-in, only when needed) ------------------------------------------------------------------------------
def restart_step_of(record) -> dict:
    return next(s for s in json.loads(record.read_text())["servers"][0]["steps"] if s["step"] == "restart")


def iis_restarts(fleet, name: str = "exch01") -> int:
    host = fleet.host(name)
    with host.lock:
        return host.state.iis_restarts


def test_restart_iis_whose_w3svc_stays_down_after_one_start_attempt_fails_loudly_and_the_chain_stops_before_verify(
        start_fleet, exbe, tmp_path):
    """``iisreset_timeout``: W3SVC cannot start on this host, so the one Start attempt after iisreset fails too."""
    fleet = start_fleet([("exch01", "backend_expiring")], faults={"exch01": Faults(iisreset_timeout=True)})
    record = tmp_path / "r.json"
    result = exbe(fleet, "renew", "--server", "exch01", "--restart-iis", "--json", str(record))
    assert result.code == 1
    steps = {s["step"]: s for s in json.loads(record.read_text())["servers"][0]["steps"]}
    restart = steps["restart"]
    assert restart["status"] == "failed"
    assert "W3SVC is Stopped after iisreset and one start attempt" in restart["message"], restart["message"]
    assert (restart["data"]["stopped_after_restart"], restart["data"]["started"]) == (["W3SVC"], [])
    assert (restart["data"]["w3svc_after"], restart["data"]["was_after"]) == ("Stopped", "Running")
    assert any(w.startswith("starting W3SVC failed:") for w in restart["warnings"]), restart["warnings"]
    assert "verify" not in steps, "nothing claims the server is fine while W3SVC is down"
    assert probe.facts(fleet)["services"]["W3SVC"] != "Running"


def test_restart_iis_that_left_w3svc_and_was_stopped_starts_them_once_and_the_chain_verifies(start_fleet, exbe,
                                                                                             tmp_path, monkeypatch):
    """An iisreset that timed out on a slow start (not the sandbox's fault, which models a W3SVC that cannot start):
    it leaves both services stopped, one start attempt each brings them back."""
    from exbe.sandbox import windows
    from exbe.sandbox.records import ErrorInfo

    def slow_iisreset(state, faults, timeout_seconds):
        state.iis_restarts += 1
        state.services.update(WAS="Stopped", W3SVC="Stopped")
        raise windows.WindowsCallError(ErrorInfo("Restart attempt failed. The IIS Admin Service or the World Wide "
                                                 f"Web Publishing Service failed to start within {timeout_seconds} "
                                                 "seconds.", error_id="NativeCommandError"))

    monkeypatch.setattr(windows, "iisreset", slow_iisreset)
    fleet = start_fleet([("exch01", "backend_expiring")])
    record = tmp_path / "r.json"
    result = exbe(fleet, "renew", "--server", "exch01", "--restart-iis", "--json", str(record))
    assert result.code == 0, result.out + result.err
    restart = restart_step_of(record)
    assert restart["status"] == "changed"
    assert (restart["data"]["stopped_after_restart"], restart["data"]["started"]) == (["WAS", "W3SVC"],
                                                                                       ["WAS", "W3SVC"])
    assert "started WAS, W3SVC" in restart["message"]
    assert any("one start attempt started WAS, W3SVC" in w for w in restart["warnings"]), restart["warnings"]
    assert probe.facts(fleet)["services"] == {"W3SVC": "Running", "WAS": "Running"}


def test_restart_iis_is_skipped_when_nothing_bound_changed_and_w3svc_and_was_run(start_fleet, exbe, tmp_path):
    fleet = start_fleet([("exch01", "healthy")])
    host = fleet.host("exch01")
    host.reset_counts()
    record = tmp_path / "r.json"
    result = exbe(fleet, "renew", "--server", "exch01", "--restart-iis", "--json", str(record))
    assert result.code == 0, result.out + result.err
    restart = restart_step_of(record)
    assert (restart["status"], restart["message"]) == ("skipped", "nothing bound changed and W3SVC/WAS run")
    assert iis_restarts(fleet) == 0
    assert host.request_counts()["exchange"]["Create"] == 1, "the Exchange session was kept"


def test_restart_iis_restarts_when_w3svc_is_down_though_nothing_else_asks_for_it(start_fleet, exbe, tmp_path):
    fleet = start_fleet([("exch01", "w3svc_stopped")])
    record = tmp_path / "r.json"
    result = exbe(fleet, "renew", "--server", "exch01", "--restart-iis", "--json", str(record))
    assert result.code == 0, result.out + result.err
    restart = restart_step_of(record)
    assert restart["status"] == "changed" and "W3SVC is Stopped" in restart["data"]["reason"]
    assert iis_restarts(fleet) == 1


def test_the_restart_task_always_restarts(start_fleet, exbe, tmp_path):
    fleet = start_fleet([("exch01", "healthy")])
    record = tmp_path / "r.json"
    result = exbe(fleet, "restart", "--server", "exch01", "--json", str(record))
    assert result.code == 0, result.out + result.err
    restart = restart_step_of(record)
    assert restart["status"] == "changed" and restart["data"]["reason"] == "asked for (exbe restart)"
    assert (restart["data"]["stopped_after_restart"], restart["data"]["started"]) == ([], [])
    assert iis_restarts(fleet) == 1


def test_restart_dry_run_changes_nothing(start_fleet, exbe):
    fleet = start_fleet([("exch01", "w3svc_stopped")])
    state_file = fleet.host("exch01").state_path
    before = state_file.read_bytes()
    result = exbe(fleet, "restart", "--server", "exch01", "--dry-run")
    assert state_file.read_bytes() == before
    assert "restart" in result.out


def test_smtp_moves_to_the_new_certificate_only_when_asked(start_fleet, exbe, tmp_path):
    fleet = start_fleet([("exch01", "backend_expiring")])
    record = tmp_path / "r.json"
    result = exbe(fleet, "renew", "--server", "exch01", "--smtp", "move", "--json", str(record))
    assert result.code == 0, result.out
    new = json.loads(record.read_text())["servers"][0]["new_thumbprint"]
    assert "SMTP" in probe.exchange_services(fleet)[new].upper()
    assert probe.binding(probe.facts(fleet), FRONTEND, "*:443:") != new, "IIS is never re-pointed"


# -- real-server shapes: an IIS restart, unknown assignments, no certificate left unnamed ----------------------------
def test_renew_with_restart_iis_and_cleanup_passes_and_reopens_the_exchange_session_after_iisreset(start_fleet, exbe,
                                                                                                    tmp_path):
    fleet = start_fleet([("exch01", "backend_expiring")])
    host = fleet.host("exch01")
    host.reset_counts()
    record = tmp_path / "r.json"
    result = exbe(fleet, "renew", "--server", "exch01", "--restart-iis", "--cleanup", "--json", str(record))
    assert result.code == 0, result.out + result.err
    steps = {s["step"]: s for s in json.loads(record.read_text())["servers"][0]["steps"]}
    assert steps["restart"]["status"] == "changed" and steps["verify"]["status"] == "ok"
    assert steps["restart"]["data"]["reason"] == "this run changed a binding", "needed: the bind changed"
    assert steps["cleanup"]["status"] == "skipped" and "--min-age" in steps["cleanup"]["message"], \
        "a fresh switch is not cleaned up yet, and that is not a failure"
    counts = host.request_counts()["exchange"]
    assert counts["Create"] == 2, f"iisreset ended the first Exchange pool; exbe opened a second one: {counts}"
    assert counts.get("fault", 0) == 0, "exbe never sent a request to the dead pool"


def test_with_select_object_refused_smtp_does_not_move_and_exbe_says_why(start_fleet, exbe, tmp_path):
    fleet = start_fleet([("exch01", "select_refused")])
    transport_before = probe.internal_transport(fleet)
    record = tmp_path / "r.json"
    result = exbe(fleet, "renew", "--server", "exch01", "--force", "--smtp", "move", "--json", str(record))
    assert result.code == 0, result.out + result.err
    assert probe.internal_transport(fleet) == transport_before
    renew = next(s for s in json.loads(record.read_text())["servers"][0]["steps"] if s["step"] == "renew")
    assert any("SMTP not moved" in w and "Select-Object" in w for w in renew["warnings"]), renew


def test_with_assignments_unknown_cleanup_keeps_every_superseded_certificate_and_passes(start_fleet, exbe, tmp_path):
    fleet = start_fleet([("exch01", "duplicate_backend_certs")])
    host = fleet.host("exch01")
    with host.lock:
        host.state.exchange.select_object = "refused"
    before = {c["thumbprint"] for c in probe.facts(fleet)["certificates"]}
    record = tmp_path / "r.json"
    result = exbe(fleet, "cleanup", "--server", "exch01", "--min-age", "0", "--json", str(record))
    assert result.code == 0, result.out + result.err
    assert {c["thumbprint"] for c in probe.facts(fleet)["certificates"]} == before, "nothing it cannot prove unused"
    cleanup = next(s for s in json.loads(record.read_text())["servers"][0]["steps"] if s["step"] == "cleanup")
    assert all("unknown" in why for _, why in cleanup["data"]["kept"]) and cleanup["warnings"]


RENEW_FAULTS = {
    "bind-fails": ("backend_expiring", Faults(step_fail="bind")),
    "bind-com-error": ("backend_expiring", Faults(bind_com_error=True)),
    "trust-fails": ("backend_expiring", Faults(step_fail="trust")),
    "drop-in-bind": ("backend_expiring", Faults(drop_in_step="bind")),
    "new-exchange-certificate-fails": ("backend_expiring", Faults(step_fail="New-ExchangeCertificate")),
    "clone-fails": ("auth_cert_expired_with_signing", Faults(step_fail="clone")),
    "drop-in-clone": ("auth_cert_expired_with_signing", Faults(drop_in_step="clone")),
    "exchange-down": ("backend_expiring", Faults(exchange_unavailable=True)),
}


@pytest.mark.parametrize("case", sorted(RENEW_FAULTS))
def test_no_fault_leaves_a_certificate_exbe_cannot_name(start_fleet, exbe, tmp_path, case):
    scenario, faults = RENEW_FAULTS[case]
    fleet = start_fleet([("exch01", scenario)], faults={"exch01": faults})
    before = {c["thumbprint"] for c in probe.facts(fleet)["certificates"]}
    record = tmp_path / "r.json"
    exbe(fleet, "renew", "--server", "exch01", "--force", "--json", str(record))
    fleet.host("exch01").faults = Faults()  # read the result undisturbed
    after = probe.facts(fleet)
    created = {c["thumbprint"] for c in after["certificates"]} - before
    text = record.read_text()
    for thumb in created:
        assert thumb in text, f"{case}: {thumb} was created but the run record never names it"
    bound = probe.binding(after, BACKEND, "*:444:")
    assert bound and bound in {c["thumbprint"] for c in after["certificates"]}, "444 is never left empty or invalid"


def test_a_new_exchange_certificate_whose_output_names_nothing_is_found_by_comparing_my(start_fleet, exbe, tmp_path,
                                                                                          monkeypatch):
    from exbe import exchange

    real = exchange.new_certificate

    def silent(session, params):  # the cmdlet ran, but its output carried no usable RawData
        _, errors = real(session, params)
        return None, errors

    monkeypatch.setattr(exchange, "new_certificate", silent)
    fleet = start_fleet([("exch01", "backend_expiring")])
    before = {c["thumbprint"] for c in probe.facts(fleet)["certificates"]}
    record = tmp_path / "r.json"
    result = exbe(fleet, "renew", "--server", "exch01", "--json", str(record))
    assert result.code == 0, result.out + result.err
    (created,) = {c["thumbprint"] for c in probe.facts(fleet)["certificates"]} - before
    renew = next(s for s in json.loads(record.read_text())["servers"][0]["steps"] if s["step"] == "renew")
    assert renew["data"]["new_thumbprint"] == created
    assert renew["data"]["identified_by"] == "comparing LocalMachine\\My before and after"
    assert probe.binding(probe.facts(fleet), BACKEND, "*:444:") == created


def test_a_dry_run_renewal_by_clone_asks_the_server_with_whatif_and_changes_nothing(start_fleet, exbe):
    fleet = start_fleet([("exch01", "auth_cert_expired_with_signing")])
    host = fleet.host("exch01")
    state_file = host.state_path
    before = state_file.read_bytes()
    host.reset_counts()
    result = exbe(fleet, "renew", "--server", "exch01", "--force", "--dry-run")
    assert result.code == 0, result.out + result.err
    assert "would renew" in result.out and "New-SelfSignedCertificate -CloneCert" in result.out
    assert state_file.read_bytes() == before
    assert host.request_counts()["winrm"]["Command"] == 2, "the facts read and the clone rehearsal (-WhatIf)"


def test_a_dry_run_renewal_by_clone_stops_when_the_server_says_the_clone_would_fail(start_fleet, exbe):
    fleet = start_fleet([("exch01", "auth_cert_expired_with_signing")], faults={"exch01": Faults(step_fail="clone")})
    result = exbe(fleet, "renew", "--server", "exch01", "--force", "--dry-run")
    assert result.code == 1 and "would fail" in result.out

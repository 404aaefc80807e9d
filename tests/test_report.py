"""Reports an administrator and a pipeline read: JUnit, the JSON run record, the summary table, the exit code."""

from __future__ import annotations

import json

import junitparser
import pytest

from exbe import __version__
from exbe.contract import make_result
from exbe.model import CheckResult, ServerRun, StepResult
from exbe.report import exit_code, summary_table, write_json, write_junit

OLD, NEW = "BFDC0014BC99FCAD6B3F728F6C46BEE7B762FB39", "3E587C8F4A02A8361B6D705E38C453660118D23E"
SECRET = "Pa55;w0rd"
#: How bind.ps1 words a failed bind after restoring the previous certificates.
BIND_ERROR = (f"binding {NEW} failed, previous certificates restored: A specified logon session does not exist "
              "(0x80070520)")


def renewed_with_warnings() -> ServerRun:
    checks = [
        CheckResult("backend_days_left", "pass", "EXCH01 back-end certificate 3E587C8F... expires in 1826 days"),
        CheckResult("root_copy", "warn", "EXCH01: back-end certificate 3E587C8F... is not in LocalMachine\\Root"),
        CheckResult("tls_444_serves_bound", "skip", "EXCH01: TLS probe of port 444 not run: port closed"),
    ]
    return ServerRun(server="exch01", host="exch01.contoso.local", started_at="2026-06-01T08:00:00Z", duration_s=4.25,
                     old_thumbprint=OLD, new_thumbprint=NEW, steps=[
                         StepResult("exch01", "preflight", "ok", f"{OLD} is bound to Exchange Back End *:444:"),
                         StepResult("exch01", "renew", "changed", f"renewed {OLD} -> {NEW} (20 days left (< 60))",
                                    changed=True, before={"thumbprint": OLD}, after={"thumbprint": NEW},
                                    duration_s=1.5),
                         StepResult("exch01", "verify", "ok", "3 checks, 1 warning(s)", checks=checks)])


def bind_failed() -> ServerRun:
    data = {"thumbprint": NEW, "before": {"backend": OLD, "loopback": OLD}, "after": {"backend": OLD, "loopback": OLD},
            "created_backend_binding": False, "restored": True, "ip_specific_444": []}
    envelope = make_result("bind", ok=False, data=data,
                           warnings=[f"restored the previous bindings (password {SECRET} leaked here)"],
                           error=BIND_ERROR)
    checks = [CheckResult("backend_days_left", "fail", "EXCH02 back-end certificate BFDC0014... expires in 20 days",
                          details="NotAfter 2026-06-21T08:00:00Z; warn below 60 days, fail below 30")]
    return ServerRun(server="exch02", host="exch02.contoso.local", started_at="2026-06-01T08:00:01Z", duration_s=2.0,
                     old_thumbprint=OLD, steps=[
                         StepResult("exch02", "preflight", "ok", f"{OLD} is bound"),
                         StepResult.from_envelope("exch02", envelope, 0.75),
                         StepResult("exch02", "verify", "failed", "1 check(s) failed: backend_days_left",
                                    checks=checks),
                         StepResult("exch02", "cleanup", "skipped", "verify did not pass")])


def redact(text: str) -> str:
    return text.replace(SECRET, "********")


@pytest.fixture
def junit(tmp_path):
    path = tmp_path / "reports" / "nested" / "exbe.xml"
    write_junit([renewed_with_warnings(), bind_failed()], path, redact=redact)
    return path, {suite.name: suite for suite in junitparser.JUnitXml.fromfile(str(path))}


def test_junit_holds_a_suite_per_server_with_host_timestamp_time_and_thumbprints(junit):
    _, suites = junit
    assert list(suites) == ["exch01", "exch02"]
    suite = suites["exch01"]
    assert suite._elem.get("hostname") == "exch01.contoso.local"
    assert suite.timestamp == "2026-06-01T08:00:00Z"
    assert suite.time == pytest.approx(4.25)
    assert {p.name: p.value for p in suite.properties()} == {
        "exbe_version": __version__, "old_thumbprint": OLD, "new_thumbprint": NEW}


def test_junit_has_a_case_per_step_and_per_check_under_the_steps_classname(junit):
    _, suites = junit
    assert [(case.classname, case.name) for case in suites["exch01"]] == [
        ("exbe.exch01.preflight", "preflight"), ("exbe.exch01.renew", "renew"), ("exbe.exch01.verify", "verify"),
        ("exbe.exch01.verify", "backend_days_left"), ("exbe.exch01.verify", "root_copy"),
        ("exbe.exch01.verify", "tls_444_serves_bound")]


def test_a_failed_step_is_a_failure_with_its_one_line_message_and_details_as_output(junit):
    _, suites = junit
    bind = next(case for case in suites["exch02"] if case.name == "bind")
    (failure,) = bind.result
    assert isinstance(failure, junitparser.Failure)
    assert failure.message == BIND_ERROR
    assert "restored the previous bindings" in failure.text and f'"backend": "{OLD}"' in failure.text


def test_a_failed_check_carries_its_details_a_skipped_one_its_reason_and_a_warning_passes_with_its_message(junit):
    _, suites = junit
    days = next(case for case in suites["exch02"] if case.name == "backend_days_left")
    assert days.result[0].message.endswith("expires in 20 days") and "fail below 30" in days.result[0].text
    cases = {case.name: case for case in suites["exch01"]}
    (skipped,) = cases["tls_444_serves_bound"].result
    assert isinstance(skipped, junitparser.Skipped) and skipped.message.endswith("not run: port closed")
    assert cases["root_copy"].is_passed and "warn: EXCH01: back-end certificate" in cases["root_copy"].system_out
    cleanup = next(case for case in suites["exch02"] if case.name == "cleanup")
    assert isinstance(cleanup.result[0], junitparser.Skipped)


def test_junit_counts_failures_and_skips_per_suite(junit):
    _, suites = junit
    assert (suites["exch02"].tests, suites["exch02"].failures, suites["exch02"].skipped) == (5, 3, 1)
    assert (suites["exch01"].tests, suites["exch01"].failures, suites["exch01"].skipped) == (6, 0, 1)


def test_a_connection_error_without_a_failed_step_still_fails_the_suite(tmp_path):
    run = ServerRun(server="exch03", host="exch03.contoso.local", started_at="2026-06-01T08:00:02Z",
                    error="exch03: cannot connect; check that the server is up")
    path = tmp_path / "r.xml"
    write_junit([run], path)
    (suite,) = junitparser.JUnitXml.fromfile(str(path))
    (case,) = list(suite)
    assert (case.classname, case.name) == ("exbe.exch03.run", "run")
    assert case.result[0].message.startswith("exch03: cannot connect")


def test_no_secret_reaches_junit_json_or_the_table(junit, tmp_path):
    path, _ = junit
    record = tmp_path / "run.json"
    write_json([bind_failed()], record, redact=redact)
    for text in (path.read_text(), record.read_text(), summary_table([bind_failed()], redact=redact)):
        assert SECRET not in text
    assert "password ******** leaked" in record.read_text()


def test_the_json_record_has_each_step_with_changed_before_after_and_checks(tmp_path):
    path = tmp_path / "out" / "run.json"
    write_json([renewed_with_warnings(), bind_failed()], path)
    document = json.loads(path.read_text())
    assert document["exbe"] == __version__ and document["failed"] is True
    first, second = document["servers"]
    assert (first["server"], first["old_thumbprint"], first["new_thumbprint"], first["failed"]) == (
        "exch01", OLD, NEW, False)
    renew = first["steps"][1]
    assert (renew["step"], renew["status"], renew["changed"]) == ("renew", "changed", True)
    assert (renew["before"], renew["after"]) == ({"thumbprint": OLD}, {"thumbprint": NEW})
    assert [c["id"] for c in first["steps"][2]["checks"]] == ["backend_days_left", "root_copy", "tls_444_serves_bound"]
    bind = second["steps"][1]
    assert bind["status"] == "failed" and bind["before"] == {"backend": OLD, "loopback": OLD} and bind["warnings"]


def test_the_summary_table_shows_each_step_the_thumbprint_change_and_the_verdict():
    table = summary_table([renewed_with_warnings(), bind_failed()])
    header, rule, exch01, exch02 = table.splitlines()
    assert header.split() == ["server", "preflight", "renew", "verify", "bind", "cleanup", "thumbprint", "verdict"]
    assert set(rule.replace(" ", "")) == {"-"}
    assert exch01.split()[:4] == ["exch01", "ok", "changed", "ok"]
    assert "(1 warn, 1 skip)" in exch01 and "BFDC0014 -> 3E587C8F" in exch01
    assert exch01.endswith("passed with warnings")
    assert "failed (1 fail)" in exch02 and "skipped" in exch02 and exch02.endswith("FAILED")
    assert exch02.split()[-2] == "BFDC0014", "no new thumbprint: the old one alone"


def test_exit_code_is_0_when_all_passed_even_with_warnings_and_1_on_any_failure():
    assert exit_code([renewed_with_warnings()]) == 0
    assert exit_code([renewed_with_warnings(), bind_failed()]) == 1
    failed_check = renewed_with_warnings()
    failed_check.steps[-1].checks.append(CheckResult("w3svc_running", "fail", "EXCH01: W3SVC is Stopped"))
    assert exit_code([failed_check]) == 1
    assert exit_code([ServerRun("exch03", "exch03", "2026-06-01T08:00:00Z", error="cannot connect")]) == 1


# -- step results from the contract's envelopes ----------------------------------------------------------------------
def test_a_dry_run_envelope_says_what_would_change():
    envelope = make_result("trust", ok=True, changed=True, dry_run=True,
                           data={"thumbprint": NEW, "present_before": False, "present_after": True})
    result = StepResult.from_envelope("exch01", envelope, 0.1)
    assert (result.status, result.changed) == ("changed", True)
    assert result.message == f"would add {NEW} to LocalMachine\\Root"
    assert (result.before, result.after) == ({"root": {NEW: False}}, {"root": {NEW: True}})


def bind_envelope(before: dict, after: dict, *, changed: bool = True, dry_run: bool = False) -> dict:
    return make_result("bind", ok=True, changed=changed, dry_run=dry_run, data={
        "thumbprint": NEW, "before": before, "after": after, "created_backend_binding": False, "restored": False,
        "ip_specific_444": []})


def test_a_bind_envelope_records_the_hashes_before_and_after_by_role():
    result = StepResult.from_envelope("exch01", bind_envelope({"backend": OLD, "loopback": OLD},
                                                              {"backend": NEW, "loopback": NEW}), 0.2)
    assert result.message == f"bound {NEW} on the back-end 444 binding and the loopback 127.0.0.1:443: binding"
    assert result.before == {"backend": OLD, "loopback": OLD} and result.after == {"backend": NEW, "loopback": NEW}


def test_a_bind_that_left_the_loopback_alone_names_only_the_back_end_binding():
    moved = StepResult.from_envelope("exch01", bind_envelope({"backend": OLD, "loopback": None},
                                                             {"backend": NEW, "loopback": None}, dry_run=True), 0)
    assert moved.message == f"would bind {NEW} on the back-end 444 binding"
    created = StepResult.from_envelope("exch01", bind_envelope({"backend": None, "loopback": OLD},
                                                               {"backend": NEW, "loopback": OLD}), 0)
    assert created.message == f"bound {NEW} on the back-end 444 binding"
    unchanged = StepResult.from_envelope("exch01", bind_envelope({"backend": NEW, "loopback": NEW},
                                                                 {"backend": NEW, "loopback": NEW}, changed=False), 0)
    assert (unchanged.status, unchanged.message) == ("ok", f"{NEW} is already bound on the back-end 444 binding")


def test_an_unchanged_envelope_is_ok_and_a_failed_one_keeps_the_error_on_one_line():
    unchanged = make_result("trust", ok=True, data={"thumbprint": NEW, "present_before": True, "present_after": True})
    assert StepResult.from_envelope("exch01", unchanged, 0).status == "ok"
    failed = make_result("cleanup", ok=False, error="refused to remove\n bound certificate(s)")
    result = StepResult.from_envelope("exch01", failed, 0)
    assert (result.status, result.message) == ("failed", "refused to remove bound certificate(s)")

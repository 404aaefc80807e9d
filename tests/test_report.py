"""Reports an administrator and a pipeline read: JUnit, the JSON run record, the summary table, the exit code."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import junitparser
import pytest

from exbe import __version__
from exbe.checks import CHECKS
from exbe.console import summary_table
from exbe.contract import make_result
from exbe.errors import ExbeError
from exbe.model import CheckResult, ServerRun, StepResult
from exbe.redaction import MASK, REDACTOR, Redactor
from exbe.report import ReportWriteError, exit_code, write_json, write_junit

OLD, NEW = "BFDC0014BC99FCAD6B3F728F6C46BEE7B762FB39", "3E587C8F4A02A8361B6D705E38C453660118D23E"
SECRET = "Pa55;w0rd"
#: How bind.ps1 words a failed bind after restoring the previous certificates.
BIND_ERROR = (f"binding {NEW} failed, previous certificates restored: A specified logon session does not exist "
              "(0x80070520)")


def renewed_with_warnings() -> ServerRun:
    checks = [
        CheckResult("backend_days_left", "pass", "EXCH01 back-end certificate 3E587C8F... expires in 1826 days",
                    value=1826),
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
    checks = [CheckResult("backend_days_left", "fail", "EXCH02 back-end certificate BFDC0014... expires in 20 days; "
                          "renew with `exbe renew`",
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
    write_junit([renewed_with_warnings(), bind_failed()], path, redact=redact, task="renew", wall_time_s=4.5)
    return path, {suite.name: suite for suite in junitparser.JUnitXml.fromfile(str(path))}


def _cases(suite) -> dict[str, junitparser.TestCase]:
    return {case.name.split(": ", 1)[1]: case for case in suite}


def test_junit_holds_a_suite_per_server_with_host_timestamp_time_verdict_and_thumbprints(junit):
    _, suites = junit
    assert list(suites) == ["exch01", "exch02"]
    suite = suites["exch01"]
    assert suite._elem.get("hostname") == "exch01.contoso.local"
    assert suite.timestamp == "2026-06-01T08:00:00Z"
    assert suite.time == pytest.approx(4.25)
    assert {p.name: p.value for p in suite.properties()} == {
        "exbe_version": __version__, "simulated": "false", "verdict": "warnings", "warnings": "1",
        "backend_days_left": "1826", "old_thumbprint": OLD, "new_thumbprint": NEW}


def test_every_case_is_titled_server_colon_step_or_check_under_the_servers_classname(junit):
    _, suites = junit
    assert [(case.classname, case.name) for case in suites["exch01"]] == [
        ("exbe.exch01", "exch01: preflight"), ("exbe.exch01", "exch01: renew"),
        ("exbe.exch01", "exch01: backend_days_left"), ("exbe.exch01", "exch01: root_copy"),
        ("exbe.exch01", "exch01: tls_444_serves_bound")]


def test_a_failed_step_is_a_failure_with_its_one_line_message_and_the_evidence_in_its_body(junit):
    _, suites = junit
    (failure,) = _cases(suites["exch02"])["bind"].result
    assert isinstance(failure, junitparser.Failure)
    assert failure.message == BIND_ERROR
    assert failure.text.startswith(BIND_ERROR + "\n")
    assert "WARNING: restored the previous bindings" in failure.text and f'"backend": "{OLD}"' in failure.text


def test_a_failed_check_carries_evidence_and_what_to_do_a_skipped_one_its_reason_and_a_warning_shows(junit):
    _, suites = junit
    (failure,) = _cases(suites["exch02"])["backend_days_left"].result
    assert failure.message == "EXCH02 back-end certificate BFDC0014... expires in 20 days; renew with `exbe renew`"
    assert failure.text.splitlines()[1:] == ["evidence: NotAfter 2026-06-21T08:00:00Z; warn below 60 days, fail below "
                                             "30", "what to do: renew with `exbe renew`"]
    cases = _cases(suites["exch01"])
    (skipped,) = cases["tls_444_serves_bound"].result
    assert isinstance(skipped, junitparser.Skipped) and skipped.message.endswith("not run: port closed")
    assert cases["root_copy"].is_passed
    assert cases["root_copy"].system_out.startswith("WARNING: EXCH01: back-end certificate")
    assert isinstance(_cases(suites["exch02"])["cleanup"].result[0], junitparser.Skipped)


def test_the_verify_step_adds_no_case_so_no_failure_is_counted_twice(junit):
    _, suites = junit
    assert "verify" not in _cases(suites["exch02"])
    assert (suites["exch02"].tests, suites["exch02"].failures, suites["exch02"].skipped) == (4, 2, 1)
    assert (suites["exch01"].tests, suites["exch01"].failures, suites["exch01"].skipped) == (5, 0, 1)


def test_the_root_counts_everything_and_its_time_is_the_wall_time_given(junit):
    path, _ = junit
    root = ET.parse(path).getroot()
    assert {key: root.get(key) for key in ("name", "tests", "failures", "errors", "skipped", "time")} == {
        "name": "exbe renew", "tests": "9", "failures": "2", "errors": "0", "skipped": "2", "time": "4.500"}


def test_a_check_case_takes_its_share_of_the_verify_steps_time(tmp_path):
    run = renewed_with_warnings()
    run.steps[-1].duration_s = 0.3
    write_junit([run], tmp_path / "r.xml")
    (suite,) = junitparser.JUnitXml.fromfile(str(tmp_path / "r.xml"))
    assert [case.time for case in suite][2:] == [pytest.approx(0.1)] * 3


def unreachable(kind: str = "unreachable") -> ServerRun:
    error = "exch03 (exch03.contoso.local:5985): cannot connect; check that the server is up"
    return ServerRun(server="exch03", host="exch03.contoso.local", started_at="2026-06-01T08:00:02Z",
                     duration_s=21.0, error=error, error_kind=kind,
                     steps=[StepResult("exch03", "connect", "failed", error)])


def test_a_server_exbe_could_not_reach_is_an_error_and_every_check_is_skipped_with_the_reason(tmp_path):
    path = tmp_path / "r.xml"
    write_junit([unreachable()], path, task="verify")
    (suite,) = junitparser.JUnitXml.fromfile(str(path))
    connect, *checks = list(suite)
    assert (connect.name, connect.time) == ("exch03: connect", 21.0)
    (error,) = connect.result
    assert isinstance(error, junitparser.Error) and error.type == "unreachable"
    assert error.message.startswith("exch03 (exch03.contoso.local:5985): cannot connect")
    assert error.text.endswith("what to do: check that the server is up")
    assert [case.name for case in checks] == [f"exch03: {check.__name__}" for check in CHECKS]
    assert all(isinstance(case.result[0], junitparser.Skipped) and case.result[0].message.startswith(
        "not checked: exch03 (exch03.contoso.local:5985): cannot connect") for case in checks)
    assert (suite.errors, suite.failures, suite.skipped) == (1, 0, len(CHECKS))


def test_a_server_not_attempted_is_an_error_too_and_a_task_that_does_not_verify_lists_no_checks(tmp_path):
    run = ServerRun(server="exch04", host="exch04", started_at="2026-06-01T08:00:02Z", error_kind="not_attempted",
                    error="not attempted: exch03 refused the credentials")
    run.steps.append(StepResult("exch04", "connect", "skipped", run.error))
    write_junit([run], tmp_path / "r.xml", task="trust")
    (suite,) = junitparser.JUnitXml.fromfile(str(tmp_path / "r.xml"))
    (case,) = list(suite)
    assert case.name == "exch04: connect" and case.result[0].type == "not_attempted"


def test_a_run_that_stopped_before_verify_still_lists_every_check_skipped_with_the_step_that_failed(tmp_path):
    write_junit([bind_failed_before_verify()], tmp_path / "r.xml", task="renew")
    (suite,) = junitparser.JUnitXml.fromfile(str(tmp_path / "r.xml"))
    skipped = [case for case in suite if case.name.split(": ")[1] in {c.__name__ for c in CHECKS}]
    assert len(skipped) == len(CHECKS)
    assert skipped[0].result[0].message == f"not checked: bind failed: {BIND_ERROR}"


def bind_failed_before_verify() -> ServerRun:
    run = bind_failed()
    run.steps = run.steps[:2]
    return run


def test_each_case_points_at_the_servers_inventory_entry_when_exbe_knows_it(tmp_path):
    write_junit([renewed_with_warnings()], tmp_path / "r.xml", locations={"exch01": ("exbe.yaml", 7)})
    (suite,) = junitparser.JUnitXml.fromfile(str(tmp_path / "r.xml"))
    assert {(case._elem.get("file"), case._elem.get("line")) for case in suite} == {("exbe.yaml", "7")}
    write_junit([renewed_with_warnings()], tmp_path / "r.xml")
    (suite,) = junitparser.JUnitXml.fromfile(str(tmp_path / "r.xml"))
    assert {case._elem.get("file") for case in suite} == {None}, "no guessed file"


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
    assert (result.before, result.after) == ({"thumbprint": NEW, "in_root": False},
                                             {"thumbprint": NEW, "in_root": True})


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


# -- masking keeps the structure (issue 13, item 1) --------------------------------------------------------------------
def _redactor(password: str) -> Redactor:
    redactor = Redactor()
    redactor.add(password)
    return redactor


@pytest.mark.parametrize("password", ["a", "e", "1", "t", '"', "<", "&", "true"])
def test_a_short_password_corrupts_neither_the_json_record_nor_junit_nor_the_table(tmp_path, password):
    runs = [renewed_with_warnings(), bind_failed()]
    write_json(runs, tmp_path / "plain.json", redact=str)
    write_json(runs, tmp_path / "masked.json", redact=_redactor(password).redact)
    masked = json.loads((tmp_path / "masked.json").read_text())
    assert masked == json.loads((tmp_path / "plain.json").read_text())
    assert masked["failed"] is True and "failed" in masked["servers"][1]
    write_junit(runs, tmp_path / "plain.xml", redact=str)
    write_junit(runs, tmp_path / "masked.xml", redact=_redactor(password).redact)
    assert (tmp_path / "masked.xml").read_text() == (tmp_path / "plain.xml").read_text()
    assert summary_table(runs, redact=_redactor(password).redact) == summary_table(runs, redact=str)


def test_a_password_that_is_a_json_key_or_a_status_word_leaves_the_record_meaning_the_same(tmp_path):
    run = bind_failed()
    run.steps[1].data["failed_note"] = "failed"  # a value that is the password, beside exbe's own words
    write_json([run], tmp_path / "run.json", redact=_redactor("failed").redact)
    document = json.loads((tmp_path / "run.json").read_text())
    assert document["failed"] is True and document["servers"][0]["failed"] is True
    assert [step["status"] for step in document["servers"][0]["steps"]] == ["ok", "failed", "failed", "skipped"]
    assert document["servers"][0]["steps"][1]["data"]["failed_note"] == "failed"  # a status word: never masked


def test_a_value_that_is_the_password_is_masked_wherever_it_stands(tmp_path):
    run = bind_failed()
    run.steps[1].message = "a"
    run.steps[1].warnings = ["a", "a warning"]
    run.steps[2].checks[0].details = " a "
    redact = _redactor("a").redact
    write_json([run], tmp_path / "run.json", redact=redact)
    bind = json.loads((tmp_path / "run.json").read_text())["servers"][0]["steps"][1]
    assert (bind["message"], bind["warnings"]) == (MASK, [MASK, "a warning"])
    write_junit([run], tmp_path / "run.xml", redact=redact)
    (suite,) = junitparser.JUnitXml.fromfile(str(tmp_path / "run.xml"))
    cases = _cases(suite)
    assert cases["bind"].result[0].message == MASK
    assert "WARNING: ***\nWARNING: a warning" in cases["bind"].result[0].text
    assert "\nevidence: ***\n" in cases["backend_days_left"].result[0].text


def test_writers_redact_through_the_process_redactor_when_the_caller_passes_none(tmp_path):
    REDACTOR.add("Rep0rt-Default-Pa55")
    run = bind_failed()
    run.steps[1].message = "server said Rep0rt-Default-Pa55"
    write_json([run], tmp_path / "run.json")
    write_junit([run], tmp_path / "run.xml")
    for text in ((tmp_path / "run.json").read_text(), (tmp_path / "run.xml").read_text(), summary_table([run])):
        assert "Rep0rt-Default-Pa55" not in text
    assert "server said ***" in (tmp_path / "run.json").read_text()


def test_junit_shows_control_characters_instead_of_dropping_them_so_no_password_is_joined(tmp_path):
    run = bind_failed()
    run.steps[1].message = "login Correct\x00-Horse-9 refused \x1b[31m\x07"
    write_junit([run], tmp_path / "run.xml", redact=_redactor("Correct-Horse-9").redact)
    text = (tmp_path / "run.xml").read_text()
    assert "Correct-Horse-9" not in text
    (suite,) = junitparser.JUnitXml.fromfile(str(tmp_path / "run.xml"))
    bind = next(case for case in suite if case.name == "exch02: bind")
    assert bind.result[0].message == "login Correct\\x00-Horse-9 refused \\x1b[31m\\x07"


def test_json_has_no_nan_or_infinity_whatever_a_server_sends(tmp_path):
    run = renewed_with_warnings()
    run.steps[2].checks[0].value = float("nan")
    run.steps[1].data = {"ratio": float("inf")}
    write_json([run], tmp_path / "run.json", redact=str)

    def refuse(constant: str) -> None:
        raise ValueError(constant)

    document = json.loads((tmp_path / "run.json").read_text(), parse_constant=refuse)
    assert document["servers"][0]["steps"][1]["data"] == {"ratio": "inf"}


# -- written atomically (issue 12, item 5) -----------------------------------------------------------------------------
@pytest.mark.parametrize("writer", [write_json, write_junit], ids=["json", "junit"])
def test_a_report_is_written_to_a_temporary_file_beside_it_and_renamed(tmp_path, monkeypatch, writer):
    renames = []
    replace = os.replace

    def recording(source, target):
        renames.append((Path(source), Path(target)))
        replace(source, target)

    monkeypatch.setattr(os, "replace", recording)
    target = tmp_path / "reports" / "exbe.out"
    writer([bind_failed()], target, redact=str)
    ((source, renamed),) = renames
    assert renamed == target and source.parent == target.parent and source != target
    assert sorted(p.name for p in target.parent.iterdir()) == ["exbe.out"]


@pytest.mark.parametrize("writer, kind", [(write_json, "JSON"), (write_junit, "JUnit")], ids=["json", "junit"])
def test_a_failed_write_raises_report_write_error_and_leaves_the_previous_report_and_no_temporary_file(
        tmp_path, monkeypatch, writer, kind):
    target = tmp_path / "exbe.out"
    target.write_text("the previous report\n")

    def full_disk(descriptor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(ReportWriteError) as raised:
        writer([bind_failed()], target, redact=str)
    assert isinstance(raised.value, ExbeError) and raised.value.exit_code == 1
    assert isinstance(raised.value, OSError) and (raised.value.errno, raised.value.strerror) == (
        28, "No space left on device")
    assert str(raised.value).startswith(f"cannot write the {kind} report {target}: No space left on device;")
    assert raised.value.path == target and isinstance(raised.value.reason, OSError)
    assert target.read_text() == "the previous report\n"
    assert [p.name for p in tmp_path.iterdir()] == ["exbe.out"]


def test_a_report_under_a_path_that_cannot_be_a_directory_is_a_report_write_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ReportWriteError, match="cannot write the JSON report"):
        write_json([bind_failed()], tmp_path / "file" / "run.json", redact=str)


def test_the_json_record_says_each_servers_verdict_and_why_exbe_could_not_work_on_one(tmp_path):
    run = unreachable("auth")
    run.warnings.append("TLS validation is off for exch03")
    write_json([renewed_with_warnings(), bind_failed(), run], tmp_path / "run.json")
    servers = json.loads((tmp_path / "run.json").read_text())["servers"]
    assert [(s["server"], s["verdict"]) for s in servers] == [
        ("exch01", "warnings"), ("exch02", "failed"), ("exch03", "unreachable")]
    assert (servers[2]["error_kind"], servers[2]["warnings"]) == ("auth", ["TLS validation is off for exch03"])

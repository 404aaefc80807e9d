"""The console an admin reads at 2 a.m.: every finding with its reason and value, warnings listed, a recap in
Ansible's style with totals and the elapsed time, where the reports went; grouped lines in CI, a live count and
colour on a terminal, nothing a server string could turn into a command or a terminal control."""

from __future__ import annotations

import io
import json
import socket

import pytest

from exbe.ci import AzureReporter, CiReporter, GitHubReporter
from exbe.console import Console, colour_wanted, sandbox_catalogue, summary_table
from exbe.model import CheckResult, ServerRun, StepResult
from exbe.redaction import Redactor

from .exbe_cli import run_exbe, write_config

OLD, NEW = "BFDC0014BC99FCAD6B3F728F6C46BEE7B762FB39", "3E587C8F4A02A8361B6D705E38C453660118D23E"
SECRET = "Hunter2-Correct-Horse"


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def expiring() -> ServerRun:
    checks = [
        CheckResult("backend_days_left", "fail", f"EXCH01 back-end certificate {OLD[:8]}... expires in 19 days "
                    "(2026-06-20); renew with `exbe renew`", details="NotAfter 2026-06-20T08:00:00Z; warn below 60 "
                    "days, fail below 30", value=19),
        CheckResult("root_copy", "warn", f"EXCH01: back-end certificate {OLD[:8]}... is not in LocalMachine\\Root "
                    "(as Exchange setup puts it); run `exbe trust`", value=False),
        CheckResult("tls_444_serves_bound", "skip", "EXCH01: TLS probe of port 444 not run: port closed"),
        CheckResult("w3svc_running", "pass", "EXCH01: W3SVC is Running"),
    ]
    return ServerRun(server="exch01", host="exch01.contoso.local", started_at="2026-06-01T08:00:00Z",
                     old_thumbprint=OLD, warnings=["TLS validation is off for exch01 (cert_validation: false)"],
                     steps=[StepResult("exch01", "preflight", "ok", f"{OLD} is bound to Exchange Back End *:444:",
                                       warnings=["Exchange endpoint not used: HTTP 503"]),
                            StepResult("exch01", "verify", "failed", "1 check(s) failed: backend_days_left",
                                       checks=checks)])


def renewed() -> ServerRun:
    return ServerRun(server="exch02", host="exch02.contoso.local", started_at="2026-06-01T08:00:01Z",
                     old_thumbprint=OLD, new_thumbprint=NEW, steps=[
                         StepResult("exch02", "preflight", "ok", f"{OLD} is bound"),
                         StepResult("exch02", "renew", "changed", f"renewed {OLD} -> {NEW}", changed=True,
                                    before={"thumbprint": OLD}, after={"thumbprint": NEW}),
                         StepResult("exch02", "verify", "ok", "16 checks, 0 warning(s)",
                                    checks=[CheckResult("backend_days_left", "pass", "expires in 1826 days")])])


def unreachable() -> ServerRun:
    message = ("exch03 (exch03.contoso.local:5985): cannot connect (connection refused); check that the server is up "
               "and that the WinRM port is open from this agent (firewall, listener)")
    return ServerRun(server="exch03", host="exch03.contoso.local", started_at="2026-06-01T08:00:02Z",
                     error=message, error_kind="unreachable",
                     steps=[StepResult("exch03", "connect", "failed", message)])


def not_attempted() -> ServerRun:
    message = "not attempted: exch05 refused the credentials, so exbe stopped using them before the account locks out"
    return ServerRun(server="exch04", host="exch04.contoso.local", started_at="2026-06-01T08:00:03Z",
                     error=message, error_kind="not_attempted",
                     steps=[StepResult("exch04", "connect", "skipped", message)])


def console_of(runs: list[ServerRun], reporter: CiReporter | None = None, *, verbose: bool = False,
               env: dict[str, str] | None = None, out: io.StringIO | None = None,
               err: io.StringIO | None = None, redact=str, reports=()) -> tuple[str, str]:
    out, err = out or io.StringIO(), err or io.StringIO()
    reporter = reporter or CiReporter({}, out, redact)
    console = Console(reporter, task="verify", verbose=verbose, env=env or {}, out=out, err=err, redact=redact)
    console.start(len(runs), 8)
    for run in runs:
        console.step(run.server, run.steps[-1].step, run.steps[-1].status, run.steps[-1].message)
        console.finished(run)
    console.close(runs, reports)
    return out.getvalue(), err.getvalue()


def section(text: str, title: str) -> list[str]:
    """The lines of the console section that starts with ``title`` (up to the next blank line)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].strip()), len(lines))
    return lines[start + 1:end]


def test_each_finding_is_listed_with_its_reason_value_and_thresholds_under_its_server():
    out, _ = console_of([expiring(), renewed()])
    findings = section(out, "FINDINGS")
    assert findings[0] == "exch01  FAILED"
    days = next(line for line in findings if "backend_days_left" in line)
    assert days.split()[0] == "fail"
    assert days.endswith(f"back-end certificate {OLD[:8]}... expires in 19 days (2026-06-20); renew with "
                         "`exbe renew --server exch01`"), \
        "the check's message, without the server's name in front of it, its advice a command for this server"
    assert findings[findings.index(days) + 1].strip() == "NotAfter 2026-06-20T08:00:00Z; warn below 60 days, " \
                                                         "fail below 30", "the details (the thresholds) under it"
    assert any(line.split()[:2] == ["warn", "root_copy"] and line.endswith("run `exbe trust --server exch01`")
               for line in findings)
    assert not any("exch02" in line for line in findings), "a server with nothing to say is not listed"


def test_every_warning_is_listed_the_run_s_the_steps_and_the_skipped_checks_count():
    findings = section(console_of([expiring()])[0], "FINDINGS")
    warnings = [line.split(None, 2) for line in findings if line.split()[0] == "warning"]
    assert ["warning", "run", "TLS validation is off for exch01 (cert_validation: false)"] in warnings
    assert ["warning", "preflight", "Exchange endpoint not used: HTTP 503"] in warnings
    assert any(line.split()[:3] == ["skipped", "1", "check(s)"] and "--verbose shows why" in line
               for line in findings)
    assert not any("1 check(s) failed: backend_days_left" in line for line in findings), \
        "a failed verify is told by its checks, not by its summary line"


def test_the_recap_counts_like_ansible_and_tells_unreachable_and_not_attempted_apart():
    runs = [expiring(), renewed(), unreachable(), not_attempted()]
    out, _ = console_of(runs)
    recap = section(out, "RECAP")
    assert len(recap) == 6, "a line per server, the total, the outcome"
    rows = {line.split()[0]: line for line in recap}
    assert rows["exch01"].split()[2:7] == ["ok=1", "changed=0", "unreachable=0", "failed=1", "skipped=0"]
    assert rows["exch02"].split()[2:7] == ["ok=3", "changed=1", "unreachable=0", "failed=0", "skipped=0"]
    assert f"{OLD[:8]} -> {NEW[:8]}" in rows["exch02"] and rows["exch02"].endswith("passed")
    assert rows["exch03"].split()[2:7] == ["ok=0", "changed=0", "unreachable=1", "failed=0", "skipped=0"], \
        "a server exbe could not reach is unreachable, not a failed step"
    assert rows["exch03"].endswith("UNREACHABLE")
    assert rows["exch04"].split()[6] == "skipped=1" and rows["exch04"].endswith("NOT ATTEMPTED")
    assert rows["total"].split()[2:7] == ["ok=4", "changed=1", "unreachable=1", "failed=1", "skipped=1"]
    assert recap[-1].startswith("4 servers in ") and recap[-1].endswith(
        ": 1 passed, 1 FAILED, 1 UNREACHABLE, 1 NOT ATTEMPTED")
    findings = section(out, "FINDINGS")
    assert any(line.split()[:3] == ["error", "connect", "exch03"] and "cannot connect (connection refused)" in line
               for line in findings), "the unreachable server's reason, with the address it tried"


def test_the_console_ends_with_where_the_reports_were_written():
    out, _ = console_of([renewed()], reports=[("JUnit", "reports/exbe.xml"), ("JSON", "reports/exbe.json")])
    assert out.splitlines()[-1] == "reports: JUnit reports/exbe.xml, JSON reports/exbe.json"


def test_each_server_s_lines_come_together_when_it_finishes_in_a_log_group_on_azure_and_github():
    for reporter, opening, closing in ((AzureReporter, "##[group]", "##[endgroup]"),
                                       (GitHubReporter, "::group::", "::endgroup::")):
        out = io.StringIO()
        text, _ = console_of([expiring(), renewed()], reporter({}, out, str), out=out)
        lines = text.splitlines()
        first = lines.index(f"{opening}exch01: FAILED")
        assert lines[first + 1].split()[:3] == ["exch01", "preflight", "ok"]
        assert lines[first + 2].split()[:3] == ["exch01", "verify", "failed"]
        assert lines[first + 3] == closing
        assert lines[first + 4] == f"{opening}exch02: passed"
    plain, _ = console_of([expiring()])
    assert "group" not in plain


def test_a_terminal_gets_a_live_count_on_stderr_and_a_pipeline_does_not():
    err = Terminal()
    console_of([expiring(), renewed(), unreachable()], err=err)
    frames = err.getvalue().split("\r\x1b[K")
    assert "[1/3] verify: 1 failed  exch01 verify failed" in frames
    assert "[2/3] verify: 1 failed  exch02 verify ok" in frames
    assert "[3/3] verify: 1 failed, 1 unreachable  exch03 connect failed" in frames, \
        "a server exbe could not reach is counted as unreachable, not as failed"
    assert err.getvalue().endswith("\r\x1b[K"), "the count is wiped before the recap"
    for env in ({"CI": "true"},):
        quiet = Terminal()
        console_of([expiring()], err=quiet, env=env)
        assert quiet.getvalue() == ""
    piped = io.StringIO()
    console_of([expiring()], err=piped)
    assert piped.getvalue() == ""


@pytest.mark.parametrize(("env", "tty", "wanted"), [
    ({}, True, True), ({}, False, False), ({"NO_COLOR": "1"}, True, False), ({"FORCE_COLOR": "1"}, False, True),
    ({"NO_COLOR": "1", "FORCE_COLOR": "1"}, True, False), ({"TERM": "dumb"}, True, False),
    ({"FORCE_COLOR": "0"}, False, False), ({"NO_COLOR": ""}, True, True)])
def test_colour_on_a_terminal_never_with_no_color_always_with_force_color(env, tty, wanted):
    assert colour_wanted(env, Terminal() if tty else io.StringIO()) is wanted


def test_colour_paints_whole_lines_by_outcome_and_nothing_without_a_terminal():
    out = Terminal()
    text, _ = console_of([expiring(), renewed()], out=out, reporter=CiReporter({}, out, str))
    lines = text.splitlines()
    assert any(line.startswith("\x1b[31mexch01     verify    failed") and line.endswith("\x1b[0m") for line in lines)
    assert any(line.startswith("\x1b[33mexch02 ") and "passed" in line for line in lines), \
        "a server that changed: its recap row yellow, as Ansible's"
    plain, _ = console_of([expiring(), renewed()], env={"NO_COLOR": "1"}, out=Terminal())
    assert "\x1b" not in plain


def test_verbose_shows_each_step_s_before_after_warnings_and_every_check():
    quiet, _ = console_of([renewed(), expiring()])
    loud, _ = console_of([renewed(), expiring()], verbose=True)
    assert "before:" not in quiet and "w3svc_running" not in quiet
    lines = loud.splitlines()
    renew = next(i for i, line in enumerate(lines) if line.split()[:2] == ["exch02", "renew"])
    assert lines[renew + 1].strip() == f'before: {{"thumbprint": "{OLD}"}}'
    assert lines[renew + 2].strip() == f'after: {{"thumbprint": "{NEW}"}}'
    assert any(line.strip() == "pass w3svc_running: W3SVC is Running" for line in lines)
    assert any(line.strip() == "skip tls_444_serves_bound: TLS probe of port 444 not run: port closed"
               for line in lines)
    assert any(line.strip() == "warning: Exchange endpoint not used: HTTP 503" for line in lines)


def test_no_secret_and_no_control_character_reaches_the_console_whatever_a_server_sends():
    redactor = Redactor()
    redactor.add(SECRET)
    run = expiring()
    run.server = "exch\n##vso[task.setvariable variable=x]1\x1b[2J"
    run.steps[1].checks[0].message = f"login {SECRET} refused \x1b]0;title\x07"
    run.steps[1].checks[0].details = f"details\n::error::{SECRET}"
    run.warnings.append(f"warning {SECRET}\r::add-mask::x")
    for reporter_type in (AzureReporter, GitHubReporter, CiReporter):
        out = io.StringIO()
        text, _ = console_of([run], reporter_type({}, out, redactor.redact), out=out, verbose=True,
                             redact=redactor.redact)
        assert SECRET not in text
        assert "\x1b" not in text and "\x07" not in text and "\r" not in text
        if reporter_type is AzureReporter:
            assert "##vso[" not in text, "the Azure agent finds a command anywhere in a line"
        if reporter_type is GitHubReporter:
            assert not any(line.lstrip().startswith("::") and not line.startswith(("::group::", "::endgroup::"))
                           for line in text.splitlines()), "GitHub reads a command at the start of a line"


def test_the_recap_table_keeps_a_hostile_server_string_on_one_line_and_masks_each_cell():
    run = renewed()
    run.server = "exch\n::error::x\x1b[2J"
    table = summary_table([run], redact=str)
    assert len(table.splitlines()) == 2 and "\x1b" not in table
    assert table.splitlines()[0].startswith("exch ::error::x\\x1b[2J : ok=3")
    run.new_thumbprint = SECRET
    redactor = Redactor()
    redactor.add(SECRET)
    assert SECRET[:8] not in summary_table([run], redact=redactor.redact)


def test_the_sandbox_catalogue_lists_each_scenario_with_its_changes_and_each_fault_kind():
    lines = sandbox_catalogue({"healthy": {}, "backend_expiring": {"backend": {"days_left": 20}}},
                              ("healthy",), {"auth_fail": (bool, "every logon refused"),
                                             "latency_ms": (int, "added latency")})
    assert lines[1].split() == ["healthy", "*", "the", "baseline:", "a", "healthy", "server"]
    assert lines[2].split() == ["backend_expiring", "backend.days_left=20"]
    assert lines[-2].split(None, 1) == ["auth_fail", "every logon refused"]
    assert lines[-1].split(None, 1) == ["latency_ms=N", "added latency"]


# -- the real command line on a sandbox fleet --------------------------------------------------------------------------
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_mixed_fleet_run_shows_the_reasons_the_unreachable_host_and_the_recap(start_fleet, tmp_path, capsys,
                                                                                 monkeypatch):
    fleet = start_fleet([("exch01", "healthy"), ("exch02", "backend_expiring")])
    config = write_config(fleet, tmp_path / "exbe.yaml", connect_timeout=5)
    document = json.loads(config.read_text())
    document["exbe"]["inventory"].append({"name": "exch09", "host": "127.0.0.1", "port": _closed_port()})
    config.write_text(json.dumps(document))
    result = run_exbe(fleet, tmp_path, capsys, monkeypatch, "verify", "--all", "--json", str(tmp_path / "r.json"),
                      config=config)
    assert result.code == 1
    findings = section(result.out, "FINDINGS")
    assert "exch02  FAILED" in findings
    assert any(line.split()[:2] == ["fail", "backend_days_left"] and " expires in " in line
               and line.endswith("renew with `exbe renew --server exch02`") for line in findings)
    assert "exch09  UNREACHABLE" in findings
    assert any(line.split()[:2] == ["error", "connect"] and "cannot connect" in line for line in findings)
    recap = {line.split()[0]: line for line in section(result.out, "RECAP")}
    assert recap["exch01"].endswith("passed") and recap["exch02"].endswith("FAILED")
    assert "unreachable=1" in recap["exch09"] and recap["exch09"].endswith("UNREACHABLE")
    assert result.out.splitlines()[-1] == f"reports: JSON {tmp_path / 'r.json'}"


# -- one cause, said once -------------------------------------------------------------------------------------------
def test_no_credentials_on_a_fleet_is_said_once_per_place_not_per_server(start_fleet, tmp_path, capsys, monkeypatch):
    fleet = start_fleet([("exch01", "healthy"), ("exch02", "healthy"), ("exch03", "healthy")])
    monkeypatch.delenv("NTLM_USER_FILE", raising=False)  # the in-process sandbox's account file, which spnego reads
    result = run_exbe(fleet, tmp_path, capsys, monkeypatch, "verify", "--all", credentials=False)
    assert result.code == 1
    cause = "no credentials to log on with"
    assert result.out.count(cause) == 2, "once on the first server's line, once in FINDINGS"
    assert result.err.count(cause) == 1, "and once on stderr, for all three servers"
    findings = section(result.out, "FINDINGS")
    assert findings[0] == "3 of 3 servers  NO CREDENTIALS (one cause, said once)"
    assert findings[-1].split()[-3:] == ["exch01,", "exch02,", "exch03"]
    recap = {line.split()[0]: line for line in section(result.out, "RECAP")}
    assert all(recap[name].endswith("NO CREDENTIALS") for name in ("exch01", "exch02", "exch03"))
    assert len(result.out.splitlines()) < 20, result.out


def test_a_refused_logon_is_auth_failed_not_unreachable(start_fleet, tmp_path, capsys, monkeypatch):
    fleet = start_fleet([("exch01", "healthy"), ("exch02", "healthy")])
    result = run_exbe(fleet, tmp_path, capsys, monkeypatch, "verify", "--all", "--keep-going",
                      password="Not-The-Right-Password-1")
    recap = {line.split()[0]: line for line in section(result.out, "RECAP")}
    assert recap["exch01"].endswith("AUTH FAILED") and recap["exch02"].endswith("AUTH FAILED")
    assert "UNREACHABLE" not in result.out
    assert result.out.count("authentication failed") == 2 and result.err.count("authentication failed") == 1
    assert "2 servers in" in result.out and "2 AUTH FAILED" in result.out


def test_servers_with_different_causes_each_keep_their_own_line():
    out, err = console_of([expiring(), unreachable(), not_attempted()])
    findings = section(out, "FINDINGS")
    assert not any("one cause" in line for line in findings), "one server per cause: nothing is shared"
    assert "exch03  UNREACHABLE" in findings and "exch04  NOT ATTEMPTED" in findings


# -- what is slow is named -----------------------------------------------------------------------------------------
def test_the_progress_names_each_running_server_its_step_and_elapsed_time():
    err = Terminal()
    console = Console(CiReporter({}, io.StringIO(), str), task="verify", env={}, out=io.StringIO(), err=err,
                      redact=str)
    console.start(3, 8)
    console.began("exch01", "preflight")
    console.began("exch02", "preflight")
    console.began("exch02", "verify")
    console._running["exch01"] = ("preflight", console._running["exch01"][1] - 85)  # began 85 s ago
    assert console.running().split(", ") == ["exch01 preflight 85 s", "exch02 verify 0 s"]
    console.finished(ServerRun(server="exch02", host="exch02", started_at="", steps=[
        StepResult("exch02", "verify", "ok", "16 checks, 0 warning(s)")]))
    assert console.running() == "exch01 preflight 85 s"
    assert err.getvalue().rsplit("\r\x1b[K", 1)[-1].endswith("running: exch01 preflight 85 s")
    console.close([])


def test_a_host_that_accepts_tcp_and_never_answers_is_named_in_the_log_while_it_holds_the_run(
        start_fleet, tmp_path, capsys, monkeypatch):
    fleet = start_fleet([("exch01", "healthy")])
    config = write_config(fleet, tmp_path / "exbe.yaml", connect_timeout=2, operation_timeout=2, read_timeout=4)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes the handshake; nobody ever reads or answers
    try:
        document = json.loads(config.read_text())
        document["exbe"]["inventory"].append({"name": "silent", "host": "127.0.0.1",
                                              "port": silent.getsockname()[1]})
        config.write_text(json.dumps(document))
        monkeypatch.setattr(Console, "NOTE_EVERY_S", 1.0)
        result = run_exbe(fleet, tmp_path, capsys, monkeypatch, "verify", "--all", config=config)
    finally:
        silent.close()
    noted = [line for line in result.err.splitlines() if line.startswith("exbe verify: still running: ")]
    held = [int(line.split("silent preflight ")[1].split()[0]) for line in noted if "silent preflight " in line]
    assert held and held[-1] >= 2 and held == sorted(held), f"the time it holds the run is measured: {result.err}"


# -- cleanup says what it kept ---------------------------------------------------------------------------------------
def test_cleanup_lists_each_kept_certificate_with_its_reason():
    kept = [(OLD, "assigned to SMTP"), (NEW, "bound to Default Web Site :443:")]
    run = ServerRun(server="exch01", host="exch01", started_at="", steps=[
        StepResult("exch01", "cleanup", "ok", "nothing to remove", data={"kept": kept})])
    out, _ = console_of([run])
    assert f"kept {OLD[:8]}...: assigned to SMTP" in out
    assert f"kept {NEW[:8]}...: bound to Default Web Site :443:" in out


def test_the_recap_shows_the_back_end_certificate_s_days_left():
    recap = summary_table([expiring(), renewed(), unreachable()], redact=str).splitlines()
    assert recap[0].split()[-3:] == [OLD[:8], "19d", "FAILED"]
    assert recap[1].split()[-2:] == ["-", "passed"], "verify judged no days (its check had no value): unknown"
    assert recap[2].split()[-3:] == ["-", "-", "UNREACHABLE"]

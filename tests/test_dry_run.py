"""A dry run says it is one, shows the plan per server, marks the findings the plan would fix as such, changes
nothing, and exits 1 only when something blocks the plan."""

from __future__ import annotations

import json

import junitparser

from exbe.model import CheckResult, Settings
from exbe.plan import planned_fixes


def section(text: str, title: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].strip()), len(lines))
    return lines[start + 1:end]


def states(fleet) -> dict[str, bytes]:
    return {name: fleet.host(name).state_path.read_bytes() for name in fleet.hosts}


def test_a_dry_run_shows_a_banner_and_the_plan_per_server_changes_nothing_and_exits_0(start_fleet, exbe, tmp_path):
    fleet = start_fleet([("exch01", "backend_expiring"), ("exch02", "healthy"),
                         ("exch03", "untrusted_internal_disallowed")])
    before = states(fleet)
    result = exbe(fleet, "renew", "--all", "--dry-run", "--json", str(tmp_path / "r.json"),
                  "--junit", str(tmp_path / "r.xml"))
    assert result.code == 0, result.out + result.err
    assert result.err.splitlines()[0].startswith("DRY RUN: nothing is changed on any server")
    assert result.out.splitlines()[0] == "exbe renew (dry run): 3 servers, 3 at a time"
    assert any(line.split()[:3] == ["exch01", "renew", "changed"] and "would renew" in line
               for line in result.out.splitlines())
    findings = section(result.out, "FINDINGS")
    assert any(line.split()[:3] == ["would", "fix", "backend_days_left"]
               and line.endswith("(the planned renew fixes this)") for line in findings)
    assert any(line.split()[:3] == ["would", "fix", "root_copy"]
               and line.endswith("(the planned trust fixes this)") for line in findings)
    recap = {line.split()[0]: line for line in section(result.out, "RECAP (DRY RUN)")}
    assert recap["exch01"].endswith("would change") and recap["exch03"].endswith("would change")
    assert recap["exch02"].endswith("no change needed")
    assert states(fleet) == before, "a dry run changes no server"


def test_a_dry_run_s_reports_skip_the_checks_the_plan_fixes_and_name_the_step(start_fleet, exbe, tmp_path):
    fleet = start_fleet([("exch01", "backend_expiring")])
    result = exbe(fleet, "renew", "--all", "--dry-run", "--json", str(tmp_path / "r.json"),
                  "--junit", str(tmp_path / "r.xml"))
    assert result.code == 0, result.out + result.err
    steps = {s["step"]: s for s in json.loads((tmp_path / "r.json").read_text())["servers"][0]["steps"]}
    assert steps["verify"]["data"]["would_fix"] == {"backend_days_left": "renew"}
    days = next(c for c in steps["verify"]["checks"] if c["id"] == "backend_days_left")
    assert days["status"] == "skip" and days["message"].endswith("(the planned renew fixes this)")
    cases = {case.name: case for suite in junitparser.JUnitXml.fromfile(str(tmp_path / "r.xml")) for case in suite}
    skipped = next(case for name, case in cases.items() if "backend_days_left" in name)
    assert isinstance(skipped.result[0], junitparser.Skipped)


def test_a_dry_run_exits_1_when_something_blocks_the_plan(start_fleet, exbe):
    fleet = start_fleet([("exch01", "ip_specific_444"), ("exch02", "healthy")])
    result = exbe(fleet, "renew", "--all", "--dry-run")
    assert result.code == 1, result.out + result.err
    findings = section(result.out, "FINDINGS")
    assert "exch01  BLOCKED" in findings
    assert any(line.split()[:2] == ["failed", "renew"] and "Remove-WebBinding" in line for line in findings), \
        "what blocks it, and what to do"
    recap = {line.split()[0]: line for line in section(result.out, "RECAP (DRY RUN)")}
    assert recap["exch01"].endswith("BLOCKED") and recap["exch02"].endswith("no change needed")


def test_a_finding_no_planned_step_fixes_is_shown_and_does_not_fail_the_dry_run(start_fleet, exbe):
    fleet = start_fleet([("exch01", "auth_cert_expired_with_signing")])
    result = exbe(fleet, "renew", "--all", "--dry-run")
    assert result.code == 0, result.out + result.err
    findings = section(result.out, "FINDINGS")
    assert any(line.split()[:2] == ["fail", "auth_cert"] and "exbe auth" in line
               for line in findings), "the real run's verify will report it: the dry run says so now"
    assert findings[0] == "exch01  no change needed (1 finding(s) the plan does not fix)"


def test_a_dry_run_with_restart_iis_on_a_stopped_w3svc_plans_the_restart_instead_of_failing_it(start_fleet, exbe):
    """-WhatIf restarts nothing, so W3SVC still being stopped is the finding the restart would fix, not a failure of
    the restart."""
    fleet = start_fleet([("exch01", "w3svc_stopped")])
    before = states(fleet)
    result = exbe(fleet, "renew", "--all", "--dry-run", "--restart-iis")
    assert result.code == 0, result.out + result.err
    assert "BLOCKED" not in result.out
    assert states(fleet) == before


def test_verify_without_dry_run_still_fails_on_the_same_finding(start_fleet, exbe):
    fleet = start_fleet([("exch01", "backend_expiring")])
    result = exbe(fleet, "verify", "--all")
    assert result.code == 1
    assert "would fix" not in result.out and "DRY RUN" not in result.err


def _check(check_id: str, status: str) -> CheckResult:
    return CheckResult(check_id, status, f"{check_id} says {status}")  # type: ignore[arg-type]


def test_planned_fixes_marks_only_what_a_planned_step_changes():
    results = [_check("backend_days_left", "fail"), _check("root_copy", "warn"), _check("backend_no_hsts", "fail"),
               _check("w3svc_running", "pass"), _check("internal_transport_cert", "fail")]
    judged, fixed = planned_fixes(results, ["renew", "trust", "bind"], Settings())
    assert fixed == {"backend_days_left": "renew", "root_copy": "trust"}
    statuses = {c.id: c.status for c in judged}
    assert statuses == {"backend_days_left": "skip", "root_copy": "skip", "backend_no_hsts": "fail",
                        "w3svc_running": "pass", "internal_transport_cert": "fail"}
    _, with_smtp = planned_fixes(results, ["renew"], Settings(smtp="move"))
    assert with_smtp["internal_transport_cert"] == "renew", "--smtp move puts SMTP on the new certificate"
    _, nothing = planned_fixes(results, [], Settings())
    assert nothing == {}

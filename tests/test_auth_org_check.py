# ruff: noqa: F811 - the shared fixtures (tests/auth_org.py) are imported, then named as test parameters
"""verify's organization check (`auth_organization`): the organization's Auth configuration judged once per run by
MEAC's rule, in every report; the hybrid upload said to be pending, on every run, until the next certificate is
current, and never guessed; its advice, run as printed, fixes it."""

from __future__ import annotations

import datetime
import json
import re
import shlex
from pathlib import Path

import junitparser
import pytest

from exbe.sandbox.authconfig import REPLICATION_DELAY, Organization
from exbe.sandbox.faults import Faults
from exbe.sandbox.fleet import Fleet

from .auth_org import HOSTS, Exbe, exbe, org, real_time, world  # noqa: F401 - pytest fixtures, used as parameters
from .exbe_cli import run_exbe

ADVICE = re.compile(r"`(exbe [^`]+)`")


def org_check(record: dict) -> dict:
    """The organization's one check in a JSON record."""
    (step,) = record["organization"]["steps"]
    (check,) = step["checks"]
    assert check["id"] == "auth_organization"
    return check


def verify(exbe: Exbe, tmp_path: Path, name: str = "v") -> tuple[int, str, dict, junitparser.JUnitXml]:
    junit = tmp_path / f"{name}.xml"
    result, record = exbe("verify", "--junit", str(junit))
    return result.code, result.out, record, junitparser.JUnitXml.fromfile(str(junit))


def organization_cases(xml: junitparser.JUnitXml) -> list[tuple[str, junitparser.TestCase]]:
    return [(suite.name, case) for suite in xml for case in suite if "auth_organization" in case.name]


def test_a_healthy_organization_is_judged_once_in_every_report(org: Organization, exbe: Exbe, tmp_path: Path,
                                                               world: tuple[Fleet, Organization],
                                                               capsys: pytest.CaptureFixture,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, record, xml = verify(exbe, tmp_path)
    assert code == 0, out
    check = org_check(record)
    assert check["status"] == "pass" and "judged on 3 servers" in check["message"], check
    assert check["value"]["current_days"] > 1000 and check["value"]["hybrid"] is False
    assert [s["server"] for s in record["servers"]] == ["exch01", "exch02", "exch03"]  # no server named so
    # JUnit: one case for the organization, in a suite of its own, under a classname an admin reads
    (found,) = organization_cases(xml)
    suite, case = found
    assert (suite, case.name, case.classname) == ("organization", "organization: auth_organization",
                                                  "exbe.organization")
    assert case.is_passed and "MEAC's rule" in (case.system_out or "")
    # the console says it once, after the servers; the metrics carry one series set for it
    assert "the organization: passed" in out and out.count("organization auth") == 1, out
    metrics = tmp_path / "m.prom"
    assert run_exbe(world[0], tmp_path, capsys, monkeypatch, "verify", "--all", "--metrics", str(metrics)).code == 0
    text = metrics.read_text()
    assert text.count('check="auth_organization",exbe_check_status="pass",server="organization"') == 1
    assert 'exbe_run_servers{shard="all",task="verify",verdict="passed"} 3.0' in text


@pytest.mark.parametrize(("days", "status"), [(45, "warn"), (20, "fail")])
def test_a_current_certificate_inside_the_renewal_window_names_exbe_auth_and_the_advice_fixes_it(
        org: Organization, exbe: Exbe, tmp_path: Path, world: tuple[Fleet, Organization],
        capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, days: int, status: str) -> None:
    org.set_auth(days)
    code, out, record, xml = verify(exbe, tmp_path)
    check = org_check(record)
    assert check["status"] == status and check["value"]["row"] == 2, check
    assert "threshold 60" in check["message"]  # exbe.defaults.auth_certificate.renew_days
    assert code == (1 if status == "fail" else 0), out
    (command,) = ADVICE.findall(check["message"])
    assert command == "exbe auth --server exch01 --server exch02 --server exch03"
    (_, case), = organization_cases(xml)
    assert case.is_passed == (status == "warn") and ("exbe auth" in (case.system_out or "") + str(case.result))
    ran = run_exbe(world[0], tmp_path, capsys, monkeypatch, *shlex.split(command)[1:])
    assert ran.code == 0, ran.out + ran.err
    code, out, record, _ = verify(exbe, tmp_path, "after")
    assert org_check(record)["status"] == "pass", org_check(record)
    assert code == 0, out


def test_an_expired_certificate_fails_the_organization_and_says_replace(org: Organization, exbe: Exbe,
                                                                       tmp_path: Path) -> None:
    org.set_auth(-3)
    code, _, record, xml = verify(exbe, tmp_path)
    check = org_check(record)
    assert code == 1 and check["status"] == "fail" and check["value"]["row"] == 1, check
    assert "expired on" in check["message"] and "`exbe auth --server exch01" in check["message"]
    (_, case), = organization_cases(xml)
    assert not case.is_passed and "exbe auth" in str(case.result[0].text)


def test_hybrid_pending_is_said_on_every_run_until_the_next_certificate_is_current_never_guessed(
        org: Organization, exbe: Exbe, tmp_path: Path, world: tuple[Fleet, Organization],
        capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    org.hybrid = True
    org.set_auth(45)
    # before staging: the advice spells out the plan, then --hybrid (MEAC's rule waits for it)
    _, _, record, _ = verify(exbe, tmp_path, "before")
    message = org_check(record)["message"]
    plan, change = ADVICE.findall(message)
    assert plan.endswith("--dry-run") and change.endswith("--hybrid"), message
    cer = tmp_path / "next.cer"
    staged = run_exbe(world[0], tmp_path, capsys, monkeypatch, *shlex.split(change)[1:], "--cer", str(cer))
    assert staged.code == 0 and cer.exists(), staged.out + staged.err
    # every run until it is current: pending, and exbe says it cannot see Entra ID
    for moved in (REPLICATION_DELAY, datetime.timedelta(days=10), datetime.timedelta(days=19)):
        org.advance(moved)
        code, out, record, xml = verify(exbe, tmp_path, f"pending{moved.days}")
        check = org_check(record)
        assert code == 0 and check["status"] == "warn", (out, check)
        assert "PENDING" in check["message"] and "cannot see Entra ID" in check["message"]
        assert check["value"]["hybrid_pending"] is True
        (_, case), = organization_cases(xml)
        assert case.is_passed and (case.system_out or "").startswith("WARNING: ")
        assert "PENDING" in out and "--server organization" not in out
    # the effective date passed: next is current; exbe cannot see OAuth work and names what proves it
    org.advance(datetime.timedelta(days=2))
    assert org.next is None and org.previous is not None
    _, _, record, _ = verify(exbe, tmp_path, "current")
    check = org_check(record)
    assert check["status"] == "warn" and "PENDING" not in check["message"], check
    assert "Test-OAuthConnectivity" in check["message"] and "exbe cannot see whether Entra ID" in check["message"]
    assert "Set-AuthConfig -ClearPreviousCertificate" in check["message"]


def test_a_server_whose_exchange_was_not_read_is_named_and_the_rule_changes_nothing(
        start_fleet, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    fleet = start_fleet(HOSTS, faults={"exch03": Faults(exchange_unavailable=True)})
    organization = Organization.of_fleet(fleet)
    try:
        organization.set_auth(45)
        record_path = tmp_path / "r.json"
        run_exbe(fleet, tmp_path, capsys, monkeypatch, "verify", "--all", "--json", str(record_path))
        check = org_check(json.loads(record_path.read_text()))
        assert check["value"]["not_judged"] == ["exch03"] and "not judged on exch03" in check["message"], check
        assert check["value"]["servers"] == ["exch01", "exch02"]
    finally:
        organization.leave()


def test_servers_that_read_different_configurations_are_judged_each_on_their_own(
        start_fleet, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand-alone servers (no shared organization): each read its own Auth configuration; the worst judgement is
    the check's, and every one is in its details."""
    fleet = start_fleet([("exch01", "healthy"), ("exch02", "healthy")])
    record_path = tmp_path / "r.json"
    run_exbe(fleet, tmp_path, capsys, monkeypatch, "verify", "--all", "--json", str(record_path))
    check = org_check(json.loads(record_path.read_text()))
    assert check["status"] == "pass" and "2 different Auth configurations" in check["message"], check
    assert [line.split(":")[0] for line in check["details"].splitlines()] == ["exch01", "exch02"]


def test_a_server_lacking_the_current_certificate_fails_the_organization_and_names_it(org: Organization,
                                                                                      exbe: Exbe,
                                                                                      tmp_path: Path) -> None:
    lacking = org.members[2].name
    org.unreachable.add(lacking)  # set_auth copies to the servers it reaches; the servicelet copies nothing there
    org.not_replicating.add(lacking)
    org.set_auth(400)
    org.unreachable.discard(lacking)
    code, _, record, _ = verify(exbe, tmp_path)
    check = org_check(record)
    assert code == 1 and check["status"] == "fail" and check["value"]["row"] == 4, check
    assert f"missing on {lacking.lower()}" in check["message"] and "`exbe auth --server exch01" in check["message"]

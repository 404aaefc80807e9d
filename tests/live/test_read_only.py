"""Read-only: what exbe reads from the live host and what it would do. Nothing here changes the host (the dry runs
are checked against a fresh read afterwards)."""

from __future__ import annotations

import re

import junitparser
import pytest

from exbe.checks import CHECKS
from exbe.report import case_name

from .conftest import Exbe
from .state import bound_on_444, facts_of, snapshot
from .target import ExbeRun, LiveTarget

pytestmark = pytest.mark.live

THUMBPRINT = re.compile(r"[0-9A-F]{40}")


@pytest.fixture(scope="module")
def preflight(exbe: Exbe) -> ExbeRun:
    return exbe("preflight")


def test_preflight_reads_the_certificate_store_and_iis_in_windows_powershell_5_1(preflight: ExbeRun) -> None:
    facts = facts_of(preflight)
    assert facts.powershell_version.startswith("5.1."), facts.powershell_version
    assert facts.certificates, "LocalMachine\\My holds no certificate"
    assert all(THUMBPRINT.fullmatch(c.thumbprint) for c in facts.certificates)
    assert bound_on_444(facts), "Exchange Back End has no certificate on *:444:"
    assert facts.services.get("W3SVC") == "Running", facts.services


def test_preflight_selects_the_certificate_bound_to_444(preflight: ExbeRun) -> None:
    facts = facts_of(preflight)
    selected = preflight.step("preflight")["data"]["selected"]
    assert selected == bound_on_444(facts), preflight.explain()
    cert = facts.certificate(selected)
    assert cert is not None and cert.has_private_key


def test_the_exchange_endpoint_is_used_exactly_when_the_host_is_an_exchange_server(preflight: ExbeRun,
                                                                                    target: LiveTarget) -> None:
    step = preflight.step("preflight")
    not_used = [w for w in step["warnings"] if w.startswith("Exchange endpoint not used")]
    if target.exchange:
        assert step["data"]["exchange"] is not None and not not_used, preflight.explain()
        listed = {c["thumbprint"] for c in step["data"]["exchange"]["certificates"]}
        assert step["data"]["selected"] in listed, "Get-ExchangeCertificate did not list the back-end certificate"
    else:
        assert step["data"]["exchange"] is None
        assert not_used, f"no warning says the Exchange endpoint was not used: {step['warnings']}"


def test_verify_judges_every_check_and_probes_444_from_this_agent(exbe: Exbe, target: LiveTarget) -> None:
    run = exbe("verify")
    checks = run.checks()
    assert set(checks) == {check.__name__ for check in CHECKS}
    failed = sorted(name for name, check in checks.items() if check["status"] == "fail")
    assert run.code == (1 if failed else 0), run.explain()
    for probed in ("tls_444_serves_bound", "backend_http_401"):
        assert checks[probed]["status"] != "skip", checks[probed]["message"]
    assert run.junit is not None
    cases = {case.name for suite in junitparser.JUnitXml.fromstring(run.junit) for case in suite}
    assert {case_name(target.name, name) for name in checks} <= cases, "every check is a JUnit test case"


def test_a_forced_renewal_dry_run_says_how_it_would_renew_and_changes_nothing(exbe: Exbe, target: LiveTarget,
                                                                             preflight: ExbeRun) -> None:
    run = exbe("renew", "--force", "--dry-run", "--restart-iis")
    assert run.code == 0, run.explain()
    renew = run.step("renew")
    assert renew["status"] == "changed" and renew["message"].startswith("would "), renew
    assert renew["data"]["method"] == ("exchange" if target.exchange else "clone")
    assert run.step("bind")["message"].startswith("would bind")
    assert run.step("restart")["message"].startswith("would run iisreset")
    assert snapshot(facts_of(exbe("preflight"))) == snapshot(facts_of(preflight))


def test_dry_runs_of_trust_bind_and_cleanup_change_nothing(exbe: Exbe, preflight: ExbeRun) -> None:
    for task in ("trust", "bind", "cleanup"):
        run = exbe(task, "--dry-run")
        steps = run.steps
        assert "connect" not in steps and steps["preflight"]["status"] == "ok", run.explain()
        if task in steps:  # cleanup runs only after a passing verify
            assert steps[task]["status"] != "failed", run.explain()
    assert snapshot(facts_of(exbe("preflight"))) == snapshot(facts_of(preflight))

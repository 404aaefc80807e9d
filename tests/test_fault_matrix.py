"""The fault matrix in CI (issue 12, item 8): a reduced grid of tests/fault_matrix.py, judged by reading the simulated
servers' state directly. The full grid is `invoke fault-matrix`."""

from __future__ import annotations

import pytest

from exbe.sandbox.faults import Faults
from exbe.sandbox.state import BACKEND_SITE, FRONTEND_SITE, HostState

from . import fault_matrix as matrix
from .conftest import PASSWORD, USERNAME

#: Grids run in CI: (scenario, the fault points it runs, the stride of its one-request drops; None: no drops). The
#: New-ExchangeCertificate path gets every fault point and, in a grid of its own, drops and HTTP 500s along its
#: requests; the clone path (an expired Auth certificate blinds Exchange's cmdlets) its own steps; the scenarios where
#: cleanup or SMTP could touch something in use their risky steps. Each grid is one test: a few seconds of CPU each,
#: so that a loaded machine slows each one and none holds the suite's hang guard (300 s) for the whole matrix.
CI_GRID: dict[str, tuple[str, tuple[str, ...], int | None]] = {
    "backend_expiring-points": ("backend_expiring", matrix.FAULT_POINTS, None),
    "backend_expiring-requests": ("backend_expiring", (), 4),
    "auth_cert_expired_with_signing": ("auth_cert_expired_with_signing", (
        "step_fail=clone", "drop_in_step=clone", "bind_com_error", "drop_in_step=bind"), 6),
    "duplicate_backend_certs": ("duplicate_backend_certs", (
        "step_fail=cleanup", "drop_in_step=cleanup", "drop_in_step=bind"), None),
    "smtp_on_backend_cert": ("smtp_on_backend_cert", ("drop_in_step=bind", "step_fail=New-ExchangeCertificate"), None),
    "w3svc_stopped": ("w3svc_stopped", ("iisreset_timeout", "drop_in_step=restart"), None),
}

#: Faults on the path of backend_expiring's chain (New-ExchangeCertificate, trust, bind, restart): each fails the run.
ON_THE_PATH = ("step_fail=facts", "step_fail=trust", "step_fail=bind", "step_fail=restart",
               "step_fail=New-ExchangeCertificate", "bind_com_error", "drop_in_step=trust", "drop_in_step=bind",
               "drop_in_step=restart", "http_500", "operation_timeout", "iisreset_timeout")


@pytest.fixture(autouse=True)
def _credentials(monkeypatch):
    monkeypatch.setenv("EXBE_USERNAME", USERNAME)
    monkeypatch.setenv("EXBE_PASSWORD", PASSWORD)


@pytest.mark.parametrize("grid", list(CI_GRID))
def test_the_reduced_fault_matrix_breaks_no_invariant_and_every_rerun_converges(grid, tmp_path):
    scenario, points, stride = CI_GRID[grid]
    totals = matrix.grid(tmp_path, [scenario], points, drop_stride=stride, fail_stride=stride and stride * 2)
    print(totals.text())
    assert totals.violations == []
    assert totals.non_converging == []
    assert totals.misleading == []
    assert totals.third_changed == []
    faults = [o.case.split(" / ", 1)[1] for o in totals.outcomes]
    assert set(points) <= set(faults), "every fault point was run"
    if stride:
        assert {f.split("=")[0] for f in faults} >= {"drop_request", "fail_request"}, "drops and 500s were run"
    if points and scenario == "backend_expiring":
        failed = {o.case for o in totals.outcomes if o.code != 0}
        assert {f"{scenario} / {point}" for point in ON_THE_PATH} <= failed, "a fault on the chain's path fails it"


def healthy_state() -> HostState:
    return HostState.from_scenario("exch01", "healthy")


def test_the_matrix_sees_an_emptied_444_a_touched_443_moved_smtp_and_a_deleted_certificate_in_use():
    before = healthy_state()

    def copy() -> HostState:
        return HostState.from_dict(before.to_dict())

    emptied = copy()
    emptied.https_binding(BACKEND_SITE, 444).certificate_hash = ""
    public = copy()
    public.https_binding(FRONTEND_SITE, 443).certificate_hash = matrix.backend_hash(before)
    moved = copy()
    moved.exchange.services = {thumb: [s for s in services if s != "SMTP"]
                               for thumb, services in moved.exchange.services.items()}
    deleted = copy()
    deleted.my = [c for c in deleted.my if c.thumbprint != matrix.backend_hash(before)]

    found = matrix.violations(before, [emptied, public, moved, deleted])
    assert [line.split(":")[0] for line in found] == [
        "state 1 of 4", "state 2 of 4", "state 3 of 4", "state 4 of 4", "state 4 of 4"], found
    assert "*:444: is empty" in found[0] and "Default Web Site :443: changed" in found[1]
    assert "SMTP moved" in found[2] and "bound to unusable" in found[3]
    assert "deleted from My while in use" in found[4]
    assert matrix.violations(before, [copy()]) == [], "an unchanged server breaks nothing"


def test_a_server_left_on_an_expiring_certificate_or_with_w3svc_down_counts_as_broken():
    before = healthy_state()
    assert matrix.broken(before, healthy_state()) == []
    expiring = HostState.from_scenario("exch01", "backend_expiring")
    assert "expires" in " ".join(matrix.broken(before, expiring))
    stopped = HostState.from_scenario("exch01", "w3svc_stopped")
    assert matrix.broken(before, stopped) == ["W3SVC is Stopped"]


def test_two_concurrent_renews_on_one_host_change_it_once_and_the_other_reports_the_lock(tmp_path):
    outcome = matrix.concurrent_renews(tmp_path)
    assert outcome.violations == [] and outcome.converged, outcome


def test_a_fleet_run_cancelled_with_sigint_keeps_every_invariant_and_a_rerun_converges(tmp_path):
    outcome = matrix.cancelled_fleet(tmp_path, 1.0, hosts=4)
    assert outcome.code == 130
    assert outcome.violations == []
    assert outcome.converged, outcome.why_not


def test_drop_request_drops_only_the_named_request_of_the_named_endpoint():
    fault = Faults.parse("drop_request=exchange:3")
    assert fault.drops("exchange", 3)
    assert not fault.drops("exchange", 4) and not fault.drops("winrm", 3)
    for bad in ("drop_request=smtp:3", "drop_request=winrm:0", "drop_request=winrm", "drop_request=winrm:x"):
        with pytest.raises(ValueError, match="ENDPOINT:N"):
            Faults.parse(bad)


@pytest.mark.parametrize("current_days", [45, -3])
@pytest.mark.parametrize("fault", ["", *matrix.AUTH_FAULT_POINTS])
def test_a_fault_in_any_auth_step_leaves_auth_config_on_certificates_every_server_holds(tmp_path, current_days,
                                                                                        fault):
    outcome = matrix.auth_case(tmp_path, current_days, fault)
    assert outcome.violations == [] and outcome.converged, (outcome.violations, outcome.why_not)


def test_issue_27s_interruptions_converge_and_name_what_they_leave(tmp_path):
    """A kill between the Exchange renewal and the next step on a server whose 444 is empty, a server that goes
    silent after the lock was taken (against server_timeout), SIGINT at start-up and at the end: no invariant
    broken, no misleading exit code, every rerun converges (after the named unlock where a lock was left), and a
    third run changes nothing."""
    totals = matrix.Totals(outcomes=[
        matrix.killed_after_renewal(tmp_path, "binding_empty"),
        matrix.hung_server(tmp_path, "backend_expiring", 7),
        matrix.signalled(tmp_path, "start", 0.3),
        matrix.signalled(tmp_path, "end"),
    ])
    print(totals.text())
    assert totals.violations == [] and totals.misleading == [] and totals.third_changed == []
    assert totals.non_converging == []
    killed, hung = totals.outcomes[:2]
    assert killed.lock_refused and hung.lock_refused, "both left the lock, and the rerun found it"

# ruff: noqa: F811 - the shared fixtures (tests/auth_org.py) are imported, then named as test parameters
"""A fault anywhere in `exbe auth`'s import where missing (MEAC rows 4-5) changes no Auth configuration and removes
no certificate; the next run imports it and verify's organization check passes (the fault matrix's import cases,
``tests/fault_matrix.py``), and a PFX whose password does not open it is refused without a change."""

from __future__ import annotations

from pathlib import Path

import pytest

from exbe import auth_import
from exbe.sandbox.authconfig import WRONG_PASSWORD, Organization
from exbe.sandbox.fleet import Fleet

from . import fault_matrix as matrix
from .auth_org import Exbe, exbe, org, real_time, world  # noqa: F401 - pytest fixtures, used as parameters


@pytest.mark.parametrize("fault", ["", *matrix.AUTH_IMPORT_FAULT_POINTS])
def test_a_fault_in_the_import_changes_no_auth_config_loses_nothing_and_the_next_run_converges(
        tmp_path: Path, fault: str) -> None:
    outcome = matrix.auth_import_case(tmp_path, fault)
    assert outcome.violations == [] and outcome.converged, (outcome.violations, outcome.why_not)
    if fault and fault != "step_fail=Get-ExchangeServer":  # without the sites: an import on every lacking server
        assert outcome.code != 0, "a fault in the import is reported, not passed over"


def test_a_pfx_the_password_does_not_open_is_refused_and_nothing_changes(
        world: tuple[Fleet, Organization], org: Organization, exbe: Exbe, monkeypatch: pytest.MonkeyPatch) -> None:
    current = org.set_auth(400)["current"]
    two = org.members[1]
    org.not_replicating.add(two.name)
    two.state.my.remove(two.state.find("My", current))
    export = auth_import.export

    def another_password(flow, thumbprint, password):  # the PFX as if protected with some other password
        return export(flow, thumbprint, auth_import.Secret("not the password exbe sends"))

    monkeypatch.setattr(auth_import, "export", another_password)
    result, record = exbe("auth")
    (step,) = [s for s in record["servers"][0]["steps"] if s["step"] == "auth"]
    assert result.code == 1 and step["status"] == "failed"
    assert WRONG_PASSWORD in step["message"] and "was not changed" in step["message"]
    assert two.state.find("My", current) is None and (org.current, org.next) == (current, None)
    monkeypatch.undo()
    healed, _ = exbe("auth")
    assert healed.code == 0 and two.state.find("My", current) is not None

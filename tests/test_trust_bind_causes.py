"""After a failed trust, each later statement of the trust + bind pipeline is reported by what really happened to
it: the bind that refused *because* the failed trust left its certificate out of LocalMachine\\Root did not act
("not run: trust failed before it"); a bind that ran and failed for a reason of its own is reported as that
failure, never hidden behind the trust's."""

from __future__ import annotations

import json

from exbe.sandbox.faults import Faults


def steps_of(record) -> dict[str, dict]:
    return {s["step"]: s for s in json.loads(record.read_text())["servers"][0]["steps"]}


def test_a_bind_refused_because_the_trust_failed_is_reported_as_not_run(start_fleet, exbe, tmp_path):
    fleet = start_fleet([("exch01", "backend_expiring")], faults={"exch01": Faults(step_fail="trust")})
    record = tmp_path / "r.json"
    assert exbe(fleet, "renew", "--server", "exch01", "--json", str(record)).code == 1
    steps = steps_of(record)
    assert steps["trust"]["status"] == "failed"
    assert steps["bind"]["status"] == "skipped"
    assert steps["bind"]["message"].startswith("not run: trust failed before it (refusing to bind: ")


def test_a_bind_that_ran_after_a_failed_trust_and_failed_on_its_own_is_reported_as_its_own_failure(
        start_fleet, exbe, tmp_path):
    """The certificate is already in Root (an earlier run trusted it, then its bind failed): when the trust fails
    this time, the bind still runs, passes the Root check and fails on IIS's own COM error; that is what the report
    says, as a failure of the bind."""
    fleet = start_fleet([("exch01", "backend_expiring")], faults={"exch01": Faults(step_fail="bind")})
    first = tmp_path / "first.json"
    assert exbe(fleet, "renew", "--server", "exch01", "--json", str(first)).code == 1
    assert steps_of(first)["trust"]["status"] == "changed", "the new certificate reached Root"
    fleet.host("exch01").faults = Faults(step_fail="trust", bind_com_error=True)
    record = tmp_path / "r.json"
    result = exbe(fleet, "renew", "--server", "exch01", "--json", str(record))
    assert result.code == 1, result.out
    steps = steps_of(record)
    assert "reusing staged certificate" in steps["renew"]["message"]
    assert steps["trust"]["status"] == "failed"
    assert steps["bind"]["status"] == "failed", steps["bind"]
    assert "not run" not in steps["bind"]["message"]
    assert "0x80070520" in steps["bind"]["message"]

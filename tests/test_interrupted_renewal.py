"""A renewal made on the Exchange endpoint is journaled in the very next WinRM request, and again on the release
when that request's answer is lost: a run interrupted right after New-ExchangeCertificate answered still names, in
the server's journal, the certificate it made -- so on a server whose 444 binding carries nothing, where
LocalMachine\\My then holds two back-end candidates, the next run binds that one without a human."""

from __future__ import annotations

import json

import pytest

from exbe.sandbox.faults import Faults
from exbe.sandbox.state import BACKEND_SITE, HostState

#: The renew chain's WinRM requests: 3 authentication, Create, Receive, the lock + facts pipeline (Command, Receive);
#: the 8th is the first after New-ExchangeCertificate's answer: the Command of the trust + bind pipeline.
FIRST_AFTER_RENEWAL = 8



@pytest.mark.parametrize("fault", [f"drop_request=winrm:{FIRST_AFTER_RENEWAL}",
                                   f"fail_request=winrm:{FIRST_AFTER_RENEWAL}"])
@pytest.mark.parametrize("scenario", ["binding_empty", "binding_removed_by_update"])
def test_a_renewal_whose_next_request_is_lost_is_bound_by_the_next_run_without_a_human(
        start_fleet, exbe, tmp_path, scenario, fault):
    fleet = start_fleet([("exch01", scenario)], faults={"exch01": Faults.parse(fault)})
    record = tmp_path / "interrupted.json"
    result = exbe(fleet, "renew", "--server", "exch01", "--force", "--json", str(record))
    assert result.code == 1, result.out
    server = json.loads(record.read_text())["servers"][0]
    steps = {s["step"]: s for s in server["steps"]}
    assert steps["renew"]["status"] == "changed" and "New-ExchangeCertificate" in steps["renew"]["message"]
    assert "trust" not in steps and "bind" not in steps, "interrupted between the renewal and the next step"
    assert not any("exbe unlock" in warning for warning in server["warnings"]), "the lock was released"
    new = steps["renew"]["after"]["thumbprint"]
    state_file = fleet.host("exch01").state_path
    interrupted = HostState.load(state_file)
    candidates = {c.thumbprint for c in interrupted.my if c.friendly_name == "Microsoft Exchange"}
    assert len(candidates) == 2 and new in candidates, "two back-end candidates, none bound"
    assert interrupted.https_binding(BACKEND_SITE, 444) is None or \
        not interrupted.https_binding(BACKEND_SITE, 444).certificate_hash

    fleet.host("exch01").faults = Faults()
    rerun = tmp_path / "rerun.json"
    again = exbe(fleet, "renew", "--server", "exch01", "--json", str(rerun))
    assert again.code == 0, again.out
    preflight = next(s for s in json.loads(rerun.read_text())["servers"][0]["steps"] if s["step"] == "preflight")
    assert f"{new} the one made by run" in preflight["message"], preflight["message"]
    after = HostState.load(state_file)
    assert after.https_binding(BACKEND_SITE, 444).certificate_hash == new
    assert {c.thumbprint for c in after.my} == {c.thumbprint for c in interrupted.my}, "no third certificate"


def test_a_note_sent_again_after_a_lost_answer_counts_once_in_its_first_place():
    """The pipeline that carried the note may have run (its bind began) before its answer was lost: the copy the
    release carries lands after the bind's entry, and the journal still reads as the run left it."""
    from exbe.steps.lock import NOTE_ID, LockRecord

    note = {"step": "renew", "phase": "end", "ok": True, NOTE_ID: "n1", "result": {"new_thumbprint": "AB"}}
    bind = {"step": "bind", "phase": "begin", "intent": "bind AB"}
    record = LockRecord.parse({"run_id": "r1", "journal": [note, bind, {**note, "at": "later"}]})
    assert record is not None
    assert [entry["step"] for entry in record.journal] == ["renew", "bind"]
    assert record.unfinished("bind") == bind

"""The sandbox's model of exbe's lock record and journal (%ProgramData%\\exbe), step by step on a host state: what
the lock templates do on Windows with CreateNew and exclusive handles."""

from __future__ import annotations

import datetime
import json

from exbe.facts import iso
from exbe.sandbox.faults import Faults
from exbe.sandbox.state import HostState, utcnow
from exbe.sandbox.steps import LAST_RUN_FILE, LOCK_FILE, run_step
from exbe.steps import get, lock

FIRST, SECOND = "run00000001", "run00000002"


def take(state: HostState, run_id: str, action: str = "acquire", **kwargs) -> dict:
    envelope = run_step(state, "lock", lock.request(action, run_id, f"agent-{run_id}", "renew", **kwargs), Faults())
    assert envelope["ok"], envelope["error"]
    get("lock").check_result(envelope)
    return envelope["data"]


def record(state: HostState, name: str = LOCK_FILE) -> dict:
    return json.loads(state.exbe_files[name]["text"])


def expire(state: HostState) -> None:
    held = record(state)
    held["expires_at"] = iso(utcnow() - datetime.timedelta(minutes=1))
    state.exbe_files[LOCK_FILE]["text"] = json.dumps(held)


def test_of_two_runs_taking_the_lock_exactly_one_gets_it_and_the_other_sees_who_holds_it():
    state = HostState.from_scenario("exch01", "healthy")
    assert take(state, FIRST)["acquired"]
    second = take(state, SECOND)
    assert not second["acquired"] and second["held"]["run_id"] == FIRST
    found = lock.LockFacts.parse(second)
    assert found.held is not None
    assert found.held.holder().startswith(f"run {FIRST} (renew) from agent agent-{FIRST} since ")
    assert "; expires at " in found.held.holder()


def test_taking_the_lock_again_for_the_same_run_keeps_it_so_a_repeated_request_is_harmless():
    state = HostState.from_scenario("exch01", "healthy")
    take(state, FIRST)
    journal = record(state)["journal"]
    again = take(state, FIRST)
    assert again["acquired"] and again["took_over"] is None and record(state)["journal"] == journal


def test_the_lock_records_what_my_held_so_the_next_run_can_name_what_an_interrupted_run_created():
    state = HostState.from_scenario("exch01", "healthy")
    take(state, FIRST)
    first_entry = record(state)["journal"][0]
    assert first_entry["step"] == "lock" and first_entry["phase"] == "begin"
    assert set(first_entry["replaces"]["my"]) == {c.thumbprint for c in state.my}


def test_an_expired_lock_is_taken_over_and_kept_in_the_new_record():
    state = HostState.from_scenario("exch01", "healthy")
    take(state, FIRST)
    expire(state)
    second = take(state, SECOND)
    assert second["acquired"] and second["took_over"]["run_id"] == FIRST
    assert record(state)["run_id"] == SECOND
    assert record(state)["took_over"]["ended"]["how"] == "taken over"
    assert lock.LockFacts.parse(second).interrupted().run_id == FIRST


def test_a_lock_file_without_a_record_holds_until_its_write_time_plus_the_ttl():
    state = HostState.from_scenario("exch01", "healthy")
    state.exbe_files[LOCK_FILE] = {"text": "", "written_at": iso(utcnow())}  # a writer killed after CreateNew
    blocked = take(state, FIRST)
    assert not blocked["acquired"] and "holds no exbe lock record" in blocked["held"]["unreadable"]
    state.exbe_files[LOCK_FILE]["written_at"] = iso(utcnow() - datetime.timedelta(minutes=lock.TTL_MINUTES + 1))
    assert take(state, FIRST)["acquired"]


def test_release_moves_the_record_to_last_run_and_only_the_holder_may_release():
    state = HostState.from_scenario("exch01", "healthy")
    take(state, FIRST)
    refused = take(state, SECOND, "release")
    assert not refused["released"] and refused["refused"].startswith(f"the lock is held by run {FIRST}")
    assert take(state, FIRST, "release")["released"]
    assert LOCK_FILE not in state.exbe_files
    assert record(state, LAST_RUN_FILE)["ended"]["how"] == "released"
    assert take(state, SECOND)["acquired"], "a released lock is free again"


def test_remove_takes_the_named_runs_lock_an_expired_one_or_with_force_any():
    state = HostState.from_scenario("exch01", "healthy")
    take(state, FIRST)
    assert take(state, "", "remove")["refused"], "no run named, not expired, no force: kept"
    assert take(state, SECOND, "remove")["refused"], "another run's lock: kept"
    removed = take(state, FIRST, "remove")
    assert removed["removed"]["run_id"] == FIRST and LOCK_FILE not in state.exbe_files
    assert record(state, LAST_RUN_FILE)["ended"]["how"] == "removed"
    assert lock.LockFacts.parse(take(state, SECOND, "show")).interrupted().run_id == FIRST, \
        "a removed lock's run counts as interrupted until a run follows it"
    take(state, SECOND)
    assert take(state, "", "remove", force=True)["removed"]["run_id"] == SECOND


def test_a_mutating_step_under_another_runs_lock_refuses_and_changes_nothing():
    state = HostState.from_scenario("exch01", "untrusted_internal_disallowed")
    target = next(c.thumbprint for c in state.my if c.friendly_name == "Microsoft Exchange")
    take(state, FIRST)
    before = state.to_dict()
    envelope = run_step(state, "trust", {"thumbprint": target, "dry_run": False, "lock": lock.context(SECOND)},
                        Faults())
    assert not envelope["ok"] and envelope["error"].startswith("refusing to trust: exbe's lock on this server is "
                                                               f"held by run {FIRST}")
    assert envelope["error"].endswith("nothing changed")
    assert state.to_dict() == before


def test_a_mutating_step_journals_its_intent_and_what_it_replaces_then_its_result():
    state = HostState.from_scenario("exch01", "untrusted_internal_disallowed")
    target = next(c.thumbprint for c in state.my if c.friendly_name == "Microsoft Exchange")
    take(state, FIRST)
    envelope = run_step(state, "trust", {"thumbprint": target, "dry_run": False, "lock": lock.context(FIRST)},
                        Faults())
    assert envelope["ok"] and envelope["changed"]
    begin, end = record(state)["journal"][-2:]
    assert (begin["step"], begin["phase"], begin["replaces"]) == ("trust", "begin", {"in_root": False})
    assert target in begin["intent"]
    assert (end["step"], end["phase"], end["ok"], end["changed"]) == ("trust", "end", True, True)
    assert end["result"]["present_after"] is True


def test_without_a_lock_context_a_step_neither_checks_nor_journals_as_a_hand_run_script():
    state = HostState.from_scenario("exch01", "untrusted_internal_disallowed")
    target = next(c.thumbprint for c in state.my if c.friendly_name == "Microsoft Exchange")
    take(state, FIRST)
    journal = record(state)["journal"]
    assert run_step(state, "trust", {"thumbprint": target, "dry_run": False}, Faults())["ok"]
    assert record(state)["journal"] == journal


def test_a_note_is_journaled_for_the_holder_only():
    state = HostState.from_scenario("exch01", "healthy")
    take(state, FIRST)
    entry = {"step": "renew", "phase": "end", "ok": True, "changed": True, "error": None, "intent": "renew",
             "result": {}}
    assert take(state, SECOND, "note", entry=entry)["refused"]
    assert take(state, FIRST, "note", entry=entry)["refused"] is None
    assert record(state)["journal"][-1]["step"] == "renew" and "at" in record(state)["journal"][-1]


def test_the_lock_files_survive_a_save_and_load_of_the_host_state(tmp_path):
    state = HostState.from_scenario("exch01", "healthy")
    take(state, FIRST)
    state.save(tmp_path / "exch01.json")
    assert HostState.load(tmp_path / "exch01.json").exbe_files == state.exbe_files


def test_the_first_lock_creates_the_exbe_directory_for_administrators_and_system_only():
    state = HostState.from_scenario("exch01", "healthy")
    assert state.exbe_directory_acl is None
    envelope = run_step(state, "lock", lock.request("acquire", FIRST, "agent", "renew"), Faults())
    assert envelope["ok"] and envelope["warnings"] == []
    assert state.exbe_directory_acl == ["S-1-5-32-544", "S-1-5-18"]


def test_an_exbe_directory_that_lets_users_in_is_a_warning_and_the_lock_is_still_taken():
    state = HostState.from_scenario("exch01", "healthy")
    state.exbe_directory_acl = ["S-1-5-32-544", "S-1-5-18", "S-1-5-32-545", "S-1-3-0"]  # as ProgramData passes on
    envelope = run_step(state, "lock", lock.request("acquire", FIRST, "agent", "renew"), Faults())
    assert envelope["ok"] and envelope["data"]["acquired"]
    assert envelope["warnings"] == [
        "C:\\ProgramData\\exbe also grants access to S-1-5-32-545, S-1-3-0: a non-admin may be able to create or "
        "replace exbe's lock there; allow only Administrators (S-1-5-32-544) and SYSTEM (S-1-5-18)"]
    assert state.exbe_directory_acl == ["S-1-5-32-544", "S-1-5-18", "S-1-5-32-545", "S-1-3-0"]  # never changed

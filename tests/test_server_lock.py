"""The lock as one run holds it (exbe.lock.ServerLock), on its own: what it adds to each pipeline, what it makes of
the server's answers, and what it leaves an admin when it cannot release. No server: a fake pipeline answers the way
the lock script does (exbe.steps.lock's RESULT). End to end on the sandbox: tests/test_lock.py."""

from __future__ import annotations

from typing import Any

from exbe.contract import make_result
from exbe.errors import ConnectionFailed
from exbe.lock import ServerLock
from exbe.steps import lock as lock_step

RUN = "run000000001"
NOW = "2026-12-06T22:00:00Z"
MINE = {"run_id": RUN, "agent": "agent01", "task": "renew", "started_at": NOW, "expires_at": "2026-12-06T22:30:00Z",
        "journal": []}
OTHER = {**MINE, "run_id": "other0000001", "agent": "agent02"}


def lock_answer(*, held: dict[str, Any] | None = None, acquired: bool = False, released: bool = False,
                refused: str | None = None, last_run: dict[str, Any] | None = None) -> dict[str, Any]:
    return make_result("lock", ok=True, data={"action": "x", "now": NOW, "held": held, "last_run": last_run,
                                              "acquired": acquired, "took_over": None, "released": released,
                                              "removed": None, "refused": refused})


class Server:
    """A fake pipeline: records what each pipeline carried; answers lock statements as ``answers`` says and every
    other statement with an ok envelope."""

    def __init__(self, **answers: dict[str, Any]) -> None:
        self.answers = answers  # lock action -> envelope
        self.pipelines: list[list[tuple[str, dict[str, Any]]]] = []
        self.fail_with: list[BaseException] = []

    def __call__(self, planned: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        self.pipelines.append(planned)
        if self.fail_with:
            raise self.fail_with.pop(0)
        return [self.answers[data["action"]] if step == "lock" else make_result(step, ok=True)
                for step, data in planned]

    def shape(self, index: int = -1) -> list[str]:
        """A pipeline as ``step`` or ``lock:action`` statements, ``+lock`` where a statement carries the context."""
        return [f"lock:{data['action']}" if step == "lock"
                else step + ("+lock" if lock_step.CONTEXT_KEY in data else "") for step, data in self.pipelines[index]]


def taken(server: Server, warnings: list[str] | None = None) -> ServerLock:
    lock = ServerLock("exch01", RUN, "renew", taking=True, warn=(warnings if warnings is not None else []).append)
    result, notes = lock.first_answered(lock_answer(held=MINE, acquired=True))
    assert result is not None and result.step == "lock" and result.status == "ok" and notes == []
    return lock


def test_a_changing_run_takes_the_lock_in_its_first_statement_and_a_read_only_one_only_looks():
    assert ServerLock("exch01", RUN, "renew", taking=True, warn=print).first_statement()[1]["action"] == "acquire"
    assert ServerLock("exch01", RUN, "verify", taking=False, warn=print).first_statement()[1]["action"] == "show"


def test_under_the_lock_only_mutating_statements_carry_its_context_and_the_release_rides_last():
    server = Server(release=lock_answer(released=True))
    lock = taken(server)
    envelopes = lock.pipeline(server, [("trust", {}), ("bind", {}), ("facts", {})], release=True, stage="bind")
    assert server.shape() == ["trust+lock", "bind+lock", "facts", "lock:release"]
    assert [e["step"] for e in envelopes] == ["trust", "bind", "facts"], "the job gets its own envelopes only"
    assert not lock.held
    lock.pipeline(server, [("facts", {})], release=True)
    assert server.shape() == ["facts"], "a lock no longer held is neither carried nor released"


def test_a_change_on_the_exchange_endpoint_is_journaled_in_the_next_pipeline_once():
    server = Server(note=lock_answer(held=MINE))
    lock = taken(server)
    lock.note_exchange_change("renew", "renew A with New-ExchangeCertificate", "A" * 40, "B" * 40, None)
    lock.pipeline(server, [("trust", {})])
    assert server.shape() == ["lock:note", "trust+lock"]
    note = server.pipelines[-1][0][1]["entry"]
    assert note["step"] == "renew" and note["result"] == {"replaced": "A" * 40, "new_thumbprint": "B" * 40}
    lock.pipeline(server, [("facts", {})])
    assert server.shape() == ["facts"]


def test_a_lock_released_with_the_bind_is_taken_again_by_a_restart_in_the_restarts_own_pipeline():
    server = Server(release=lock_answer(released=True), acquire=lock_answer(held=MINE, acquired=True))
    lock = taken(server)
    lock.pipeline(server, [("bind", {})], release=True, stage="bind")
    lock.pipeline(server, [("restart", {})], release=True, retake=True, stage="restart")
    assert server.shape() == ["lock:acquire", "restart+lock", "lock:release"]


def test_a_lock_held_by_another_run_stops_a_changing_run_and_names_the_holder():
    lock = ServerLock("exch01", RUN, "renew", taking=True, warn=print)
    result, warnings = lock.first_answered(lock_answer(held=OTHER))
    assert warnings is None and result is not None and result.status == "failed"
    assert result.message.startswith("locked by run other0000001 (renew) from agent agent02")
    assert not lock.held


def test_a_read_only_run_reports_an_unexpired_lock_as_a_run_at_work_or_one_that_died_and_how_to_remove_it():
    lock = ServerLock("exch01", RUN, "verify", taking=False, warn=print)
    result, warnings = lock.first_answered(lock_answer(held={**OTHER, "expires_at": "2026-12-06T23:00:00Z"}))
    assert result is None and warnings is not None
    (said,) = warnings
    assert "another exbe run is changing this server, or it stopped without releasing its lock" in said
    assert "`exbe unlock --server exch01 --run other0000001` removes it" in said


def test_a_refused_lock_names_the_exact_unlock_command_of_its_run():
    result, _ = ServerLock("exch01", RUN, "renew", taking=True, warn=print).first_answered(lock_answer(held=OTHER))
    assert result is not None and "`exbe unlock --server exch01 --run other0000001` once it is gone" in result.message


def test_a_lock_no_longer_this_runs_stops_carrying_its_context_and_is_a_warning():
    warnings: list[str] = []
    server = Server(release=lock_answer(refused="the lock is run other0000001's"))
    lock = taken(server, warnings)
    lock.pipeline(server, [("bind", {})], release=True)
    assert not lock.held and warnings == ["exbe's lock was no longer this run's (the lock is run other0000001's)"]


def test_a_release_that_fails_twice_leaves_the_admin_the_exact_unlock_command():
    warnings: list[str] = []
    server = Server(release=lock_answer(released=True))
    lock = taken(server, warnings)
    fresh: list[bool] = []
    server.fail_with = [ConnectionFailed("exch01", "h", 5985, "dropped"), ConnectionFailed("exch01", "h", 5985,
                                                                                           "dropped")]
    lock.release_at_end(server, lambda: fresh.append(True))
    assert fresh == [True], "the second try on a fresh connection"
    assert warnings[-1].endswith(f"`exbe unlock --server exch01 --run {RUN}` removes it")


def test_a_release_that_fails_once_is_sent_again_on_a_fresh_connection():
    warnings: list[str] = []
    server = Server(release=lock_answer(released=True))
    lock = taken(server, warnings)
    server.fail_with = [ConnectionFailed("exch01", "h", 5985, "dropped")]
    lock.release_at_end(server, lambda: None)
    assert not lock.held and warnings == []
    assert server.shape() == ["lock:release"]


# -- what the last run made (issue 27, item 2) -------------------------------------------------------------------------
A, B, C = "A" * 40, "B" * 40, "C" * 40
TAKEN = {"step": "lock", "phase": "begin", "replaces": {"my": [A]}}


def found_last_run(journal: list[dict[str, Any]], how: str | None) -> lock_step.LockFacts:
    last = {**OTHER, "journal": journal, "ended": {"how": how} if how else None}
    return lock_step.LockFacts.parse(lock_answer(held=MINE, acquired=True, last_run=last)["data"])


def test_the_replacement_is_what_the_last_runs_journal_recorded_for_its_renewal_or_clone():
    renewed = {"step": "renew", "phase": "end", "ok": True, "result": {"replaced": A, "new_thumbprint": B.lower()}}
    assert found_last_run([TAKEN, renewed], "released").replacement({A, B})[0] == B
    cloned = {"step": "clone", "phase": "end", "ok": True, "result": {"new_thumbprint": C}}
    replacement = found_last_run([TAKEN, cloned], "removed").replacement({A, C})
    assert replacement == (C, "made by run other0000001 (renew) from agent agent02 to replace the back-end certificate")


def test_a_run_stopped_before_recording_its_renewal_is_judged_by_what_my_gained_since_it_took_the_lock():
    assert found_last_run([TAKEN], "removed").replacement({A, B})[0] == B
    assert found_last_run([TAKEN], "removed").replacement({A, B, C}) is None, "two new ones: a human chooses"
    assert found_last_run([TAKEN], "released").replacement({A, B}) is None, "a run that ended as it should"
    assert found_last_run([TAKEN, {"step": "renew", "phase": "end", "ok": False, "result": {}}],
                          "removed").replacement({A}) is None

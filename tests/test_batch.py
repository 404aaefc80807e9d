"""Reading a batch: each statement's answer from the error records and outputs of one pipeline, in arrival order.

PowerShell runs several statements of one PSRP pipeline one after another; a statement's terminating error becomes
a record in the error stream and the next statement runs (real-server-shapes.md §4). The reader must place each
record on the statement that wrote it when the stream proves it, and say "this or that one" when it does not.
"""

from __future__ import annotations

from exbe.batch import ServerError, Statement, read, step_answers
from exbe.contract import encode_result, make_result


def kind(name: str):
    return lambda obj: obj == name


STATEMENTS = [Statement("A", kind("a"), ("Get-A",)), Statement("B", kind("b"), ("Get-B",)),
              Statement("C", kind("c"), ("Get-C",), writes_output=False), Statement("D", kind("d"), ("Get-D",))]


def record(text: str, **names: str) -> ServerError:
    return ServerError(text, **names)


def answers_of(*events):
    return {answer.statement.name: answer for answer in read(STATEMENTS, [
        ("error", e) if isinstance(e, ServerError) else ("output", e) for e in events])}


def test_every_statement_answered_is_clean():
    answers = answers_of("a", "b", "d")
    assert all(a.clean for a in answers.values()), "C writes nothing when it has nothing to say"
    assert answers["A"].output == ["a"] and not answers["C"].failed


def test_a_record_naming_its_command_goes_to_that_statement_wherever_it_arrived():
    denied = record("The term 'Get-B' is not recognized", target="Get-B", reason="CommandNotFoundException")
    answers = answers_of("a", denied, "d")
    assert answers["B"].failed and answers["B"].errors == [denied] and answers["B"].why() == denied.text
    assert answers["C"].clean and answers["D"].clean and answers["A"].clean


def test_the_first_record_of_a_statement_that_always_writes_and_did_not_is_its_own():
    """A always writes and did not: it failed, and its record comes before anything a later statement writes."""
    first, second = record("A broke"), record("something else")
    answers = answers_of(first, second, "b", "d")
    assert answers["A"].errors == [first] and answers["A"].failed
    assert answers["A"].unplaced == answers["B"].unplaced == [second], \
        "the second could be A's or B's (B writes it before its output): said, not guessed"
    assert answers["B"].output == ["b"] and not answers["B"].failed


def test_after_a_cmdlet_answered_a_record_may_still_be_its_own():
    """An Exchange cmdlet may write a non-terminating record after its objects: the record after A's answer is
    A's or B's, and B's failure says so."""
    broke = record("B broke?")
    answers = answers_of("a", broke, "d")
    assert answers["A"].unplaced == answers["B"].unplaced == answers["C"].unplaced == [broke]
    assert answers["B"].failed and answers["B"].why() == "no answer; the server wrote: B broke?"


def test_a_record_between_two_answers_that_both_arrived_may_be_either_and_is_said_so():
    warning = record("a non-terminating error")
    answers = answers_of("a", "b", warning, "d")
    assert answers["B"].unplaced == answers["C"].unplaced == answers["D"].unplaced == [warning]
    assert not any(a.failed for a in answers.values())
    assert answers["C"].uncertain, "C wrote nothing and the record may be its"


def test_statements_after_the_batch_stopped_have_no_answer_and_no_record():
    lost = record("The runspace was lost.")
    answers = answers_of(lost)
    assert answers["A"].errors == [lost]
    assert answers["D"].failed and answers["D"].why() == ("no answer and no error record (it did not run, or wrote "
                                                          "nothing)")


def envelope(step: str, ok: bool = True) -> str:
    return encode_result(make_result(step, ok=ok))


def test_step_scripts_end_with_their_envelope_so_a_record_after_one_is_a_later_steps():
    """lock, trust, bind, facts, lock: trust broke; its record arrived after the first lock's envelope."""
    broke = record("The exbe step 'trust' failed")
    answers = step_answers(["lock", "trust", "bind", "facts", "lock"], [
        ("output", envelope("lock")), ("error", broke), ("output", envelope("bind")), ("output", envelope("facts")),
        ("output", envelope("lock"))])
    lock, trust, bind, facts, release = answers
    assert trust.failed and trust.errors == [broke] and trust.why() == broke.text
    assert bind.clean and facts.clean and lock.clean and release.clean
    assert [a.output[0]["step"] for a in (lock, release)] == ["lock", "lock"], "each lock statement its own envelope"

"""What each statement of one PSRP pipeline answered, read from the error records and the outputs that arrived.

exbe sends several statements in one pipeline to save round trips (the Exchange reads; lock + facts; trust + bind +
facts). A server runs them as PowerShell's *batch* (``../shared/real-server-shapes.md`` §4, read from PowerShell's
source, ``System.Management.Automation/engine/hostifaces/PowerShell.cs``: ``BatchInvocationWorkItem`` and
``BatchInvocationCallback``): a statement that ends in a terminating error has its error record appended to the
error stream and the next statement runs, because the server passes invocation settings without an
ErrorActionPreference (``ServerPowerShellDriver.PrepInvoke``), so the preference is Continue. The pipeline ends
Completed. "This statement failed" is therefore visible only as an error record and a missing output, never as a
failed pipeline; only a single statement (no batch) or a lost runspace fails the pipeline itself.

:func:`read` takes the statements (each says which output objects are its, which commands it runs and whether it
always writes something) and the pipeline's stream in arrival order, and returns one :class:`Answer` per statement:
its output, the error records placed on it, and the records that arrived where it and a neighbour both could have
written them (``unplaced``: said, never guessed away). Nothing here reads "the pipeline failed" alone: a failed
pipeline's own error record is one more record of the statements that did not answer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from . import contract


@dataclasses.dataclass(frozen=True)
class ServerError:
    """One error record as the server wrote it: its text as PowerShell shows it, and what names its origin."""

    text: str
    error_id: str = ""  # FullyQualifiedErrorId ("CommandNotFoundException", "NamedParameterNotFound,Get-X", ...)
    reason: str = ""  # CategoryInfo.Reason: the exception's type name ("CommandNotFoundException")
    target: str = ""  # CategoryInfo.TargetName (the unknown command's name for CommandNotFoundException)
    command: str = ""  # the command that wrote it: InvocationInfo.InvocationName, else CategoryInfo.Activity

    def names(self, command: str) -> bool:
        """Whether this record names ``command`` as the command that wrote it or the one it could not find."""
        wanted = command.lower()
        return wanted in (self.command.lower(), self.target.lower()) or self.error_id.lower().endswith(
            f",{wanted}")

    @property
    def command_not_found(self) -> bool:
        """PowerShell could not resolve a command name: on Exchange's endpoint, a cmdlet outside the account's
        RBAC roles (Exchange builds the session from the roles' cmdlets only)."""
        return "CommandNotFoundException" in (self.reason, self.error_id.partition(",")[0])


@dataclasses.dataclass(frozen=True)
class Statement:
    """One statement of a pipeline, as the reader needs to know it.

    ``claims`` tells its output objects from the others'; ``commands`` are the command names it runs (a record
    naming one of them is its own); ``writes_output``: it always writes something when it succeeds (a missing output
    then means it failed or did not run); ``output_last``: its output is the last thing it writes (exbe's step
    scripts end with their result envelope), so a record after its output is a later statement's."""

    name: str
    claims: Callable[[Any], bool]
    commands: tuple[str, ...] = ()
    writes_output: bool = True
    output_last: bool = False


@dataclasses.dataclass
class Answer:
    """What one statement answered."""

    statement: Statement
    output: list[Any] = dataclasses.field(default_factory=list)
    errors: list[ServerError] = dataclasses.field(default_factory=list)
    unplaced: list[ServerError] = dataclasses.field(default_factory=list)

    @property
    def failed(self) -> bool:
        """It did not answer: no output where it always writes some, or only error records."""
        return not self.output and (self.statement.writes_output or bool(self.errors))

    @property
    def uncertain(self) -> bool:
        """It wrote nothing (which it may do when it succeeds), and a record that may be its arrived."""
        return not self.output and not self.failed and bool(self.unplaced)

    @property
    def clean(self) -> bool:
        """It answered and no record is, or may be, its."""
        return not self.failed and not self.errors and not self.unplaced

    def why(self) -> str:
        """Why it failed, in the server's own words: its records, else the records that may be its, else that
        nothing arrived."""
        if self.errors:
            return "; ".join(dict.fromkeys(e.text for e in self.errors))
        if self.unplaced:
            return "no answer; the server wrote: " + "; ".join(dict.fromkeys(e.text for e in self.unplaced))
        return "no answer and no error record (it did not run, or wrote nothing)"


#: One item of a pipeline's streams in arrival order: ("output", object) or ("error", ServerError).
Event = tuple[str, Any]


def read(statements: Sequence[Statement], events: Sequence[Event]) -> list[Answer]:
    """Each statement's answer from the stream.

    An output object goes to the first statement, from the one the stream is at, that claims it (and has not said
    its last word). An error record goes to the statement it names when exactly one of the statements its position
    between outputs allows runs that command; else to the only statement its position allows; the first record
    after an answer goes to the next statement when that one always writes and did not (it failed, and its record
    comes before any later statement's); else the record is ``unplaced`` on every statement it may belong to."""
    answers = [Answer(statement) for statement in statements]
    if not answers:
        return answers
    owner: list[int | None] = []  # per event: the statement of an output, None for a record or a stray object
    at = 0
    for kind, item in events:
        index = None
        if kind == "output":
            order = [*range(at, len(statements)), *range(at)]
            index = next((i for i in order if statements[i].claims(item) and not _finished(answers[i])), None)
            if index is not None:
                answers[index].output.append(item)
                at = index
        owner.append(index)
    gaps: set[tuple[int, ...]] = set()  # the stretches between outputs whose first record has been placed
    for position, (kind, item) in enumerate(events):
        if kind != "error":
            continue
        candidates = _candidates(statements, owner, position)
        named = [i for i in candidates if any(item.names(c) for c in statements[i].commands)]
        first, gap = candidates[0], tuple(candidates)
        if len(named) == 1 or len(candidates) == 1:
            answers[(named or candidates)[0]].errors.append(item)
        elif not named and gap not in gaps and statements[first].writes_output and not answers[first].output:
            # statements run in order, and one that always writes and did not, failed with a record of its own:
            # the first record after the last answer before it is that one
            answers[first].errors.append(item)
        else:
            for i in named or candidates:
                answers[i].unplaced.append(item)
        gaps.add(gap)
    return answers


def _finished(answer: Answer) -> bool:
    """A statement whose output is its last word has said it (two statements of one step each get one)."""
    return answer.statement.output_last and bool(answer.output)


def _candidates(statements: Sequence[Statement], owner: list[int | None], position: int) -> list[int]:
    """The statements a record at ``position`` can belong to: from the statement of the last output before it to
    the statement of the next output after it (statements run in order); not one whose output is its last word
    and came before the record."""
    before = next((o for o in reversed(owner[:position]) if o is not None), None)
    after = next((o for o in owner[position + 1:] if o is not None), None)
    low = 0 if before is None else before
    high = len(statements) - 1 if after is None else after
    if before is not None and statements[before].output_last and before < high:
        low = before + 1  # before the last statement: a record after its last word is a later statement's
    return list(range(low, max(low, high) + 1))


def step_answers(steps: Sequence[str], events: Sequence[Event]) -> list[Answer]:
    """The answers of a pipeline of exbe's step scripts (``steps`` in order; a step may appear twice, the lock):
    each answer's output is the decoded result envelopes that name its step. Every template ends with its
    envelope, so a record after a step's envelope is a later step's."""
    decoded: list[Event] = []
    for kind, item in events:
        if kind == "output":
            decoded.extend(("output", envelope) for envelope in contract.envelopes([item]))
        else:
            decoded.append((kind, item))
    return read([Statement(step, _names_step(step), output_last=True) for step in steps], decoded)


def _names_step(step: str) -> Callable[[Any], bool]:
    return lambda envelope: isinstance(envelope, dict) and envelope.get("step") == step

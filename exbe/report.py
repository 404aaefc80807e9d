"""Writers over the results of a run: JUnit XML, a JSON run record, a plain-text summary table, the exit code; and
what a run came to (:func:`verdict`, :func:`backend_days_left`, :func:`findings`), which the step summary
(:mod:`exbe.summary`) and the metrics (:mod:`exbe.metrics`) read too.

Every string that leaves through a writer passes through ``redact`` (the secrets choke point,
:data:`exbe.redaction.REDACTOR` unless the caller passes another), one *value* at a time, before the document is
built: keys, element and attribute names and exbe's closed vocabulary (statuses, step names, check ids) never do, so
the JSON record and the JUnit file parse, and mean, the same whatever the password is (see :mod:`exbe.redaction`).
JUnit and the table also show control characters from servers as ``\\xNN`` (XML cannot hold most of them).

**JUnit, shaped for its readers** (Azure DevOps' Tests tab titles a result by its test name alone; GitHub reporters
by ``classname.name``, and mikepenz/action-junit-report guesses a source file from the last part of the classname
unless a case names its ``file``): one ``<testsuite>`` per server; every case is named ``<server>: <step or check
id>`` under classname ``exbe.<server>``, the same on every run, so each server and check has one history. A failing
check is one ``<failure>`` whose message is its one line (what, with the value) and whose body holds the evidence and
what to do; the verify step adds no case of its own (its "N check(s) failed" would count every failure twice). A
warning passes, with ``WARNING:`` in ``<system-out>`` and ``status="warn"`` on the case, and every suite counts its
warnings in a property. junit-xml writes the document (:func:`render_junit` says what exbe sets on it
afterwards). A server exbe could not work on (``ServerRun.error_kind``: unreachable, refused
credentials, timeouts, not attempted, an unexpected error) is an ``<error>``, never a finding, and in a task that
verifies, every check it did not judge is still there, skipped with the reason. Every case has a time (a check's
share of the verify step that judged it); the root counts tests, failures, errors and skipped, and its time is the
run's wall time, not a sum over servers that ran side by side.

Both files are written atomically: to a temporary file in the target's directory, flushed to disk, then renamed over
the target, so a reader (a pipeline's publish step, a gate) never sees half a report and a failed write leaves the
previous file as it was. A failure raises :class:`ReportWriteError` (an :class:`exbe.errors.ExbeError`, exit code 1)
naming the report and the path; the caller prints it and still exits non-zero.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import junit_xml  # type: ignore[import-untyped]  # junit-xml 1.9 ships no type information

from . import __version__, safe_write
from .errors import ExbeError
from .model import CheckResult, ServerRun, StepResult
from .organization import is_organization
from .quoting import verify_command
from .redaction import REDACTOR, VOCABULARY, Redact, clean, redact_values, typed_text

EXIT_OK = 0
EXIT_FAILED = 1

#: Statuses exbe's own code chooses from a closed set: never secret, so never given to the redactor.
STATUSES = frozenset({"ok", "changed", "failed", "skipped", "pass", "warn", "fail", "skip"}) & VOCABULARY
_IDENTIFIER = re.compile(r"[a-z][a-z0-9_]{0,63}")

#: What a server's run came to, worst last: findings decide the first three, ``unreachable`` means exbe could not
#: work on the server at all (its run has an ``error_kind`` other than ``unexpected``, which is exbe's own failure),
#: ``cancelled`` that a stop request ended its run, ``not_attempted`` that exbe did not try it (another server refused
#: the credentials).
Verdict = Literal["passed", "warnings", "failed", "unreachable", "cancelled", "not_attempted"]
VERDICTS: tuple[Verdict, ...] = ("passed", "warnings", "failed", "unreachable", "cancelled", "not_attempted")

#: Tasks that end in verify: in their reports every server carries every check, judged or skipped with the reason.
VERIFYING_TASKS = frozenset({"renew", "verify", "cleanup"})

#: Where a server stands in the configuration exbe read: (file, 1-based line of its inventory entry).
Location = tuple[str, int]


class ReportWriteError(ExbeError, OSError):
    """A report file could not be written; the file at ``path``, if there was one, is unchanged.

    An :class:`~exbe.errors.ExbeError` (``str()`` is one redacted line, exit code 1) and an :class:`OSError` carrying
    the cause's ``errno``/``strerror`` and the report's path as ``filename``, so a caller catching either reports it.
    """

    def __init__(self, kind: str, path: Path, reason: OSError) -> None:
        why = reason.strerror or str(reason) or type(reason).__name__
        super().__init__(f"cannot write the {kind} report {path}: {why}; check that its directory exists or can be "
                         "created and is writable, and that no other program holds the file open")
        self.kind = kind
        self.path = path
        self.reason = reason
        self.errno = reason.errno
        self.strerror = why
        self.filename = str(path)


def _redact_default(redact: Redact | None) -> Redact:
    return REDACTOR.redact if redact is None else redact


def _vocabulary(key: str, value: str) -> bool:
    """A string under ``key`` that exbe's code picked from a closed set (a status, a step name, a check id)."""
    if key == "status":
        return value in STATUSES
    return key in ("step", "id") and _IDENTIFIER.fullmatch(value) is not None


def _word(value: str, redact: Redact) -> str:
    """A step name or check id as it goes into JUnit: as it is when it is exbe's vocabulary."""
    return value if _IDENTIFIER.fullmatch(value) else _xml(value, redact)


def _xml(text: str | None, redact: Redact) -> str:
    """One JUnit value: masked, its controls visible (tab and line breaks are fine in XML)."""
    return clean(text or "", redact)


def exit_code(runs: list[ServerRun]) -> int:
    """0 when every step and check passed (warnings included), 1 when any failed."""
    return EXIT_FAILED if any(run.failed for run in runs) else EXIT_OK


# -- what a run came to ----------------------------------------------------------------------------------------------
def checks(run: ServerRun) -> list[CheckResult]:
    """The verify checks of ``run`` (empty when verify did not judge the server)."""
    return [check for step in run.steps for check in step.checks]


def warnings(run: ServerRun) -> list[str]:
    """Every warning of ``run``, as one line each: its own, its steps', and each check that warned (by its message)."""
    return [*run.warnings, *(w for step in run.steps for w in step.warnings),
            *(check.message for check in checks(run) if check.status == "warn")]


def verdict(run: ServerRun) -> Verdict:
    """``cancelled``, ``not_attempted``, ``unreachable`` (exbe could not work on the server), ``failed``,
    ``warnings`` or ``passed``."""
    if run.error_kind in ("cancelled", "not_attempted"):
        return "cancelled" if run.error_kind == "cancelled" else "not_attempted"
    if run.error_kind is not None and run.error_kind != "unexpected":
        return "unreachable"
    if run.failed:
        return "failed"
    return "warnings" if warnings(run) else "passed"


def infrastructure_step(run: ServerRun) -> StepResult | None:
    """The step that carries the run's infrastructure error (the connect attempt, or where the unexpected struck)."""
    if run.error_kind is None:
        return None
    return next((step for step in reversed(run.steps) if step.message == run.error
                 and step.status in ("failed", "skipped")), None)


def findings(run: ServerRun, status: Literal["fail", "warn"]) -> list[str]:
    """The ids of the checks of ``run`` with ``status``, and for ``fail`` the failed steps' names before them (not
    the step that carries an infrastructure error: that is no finding about the server)."""
    infrastructure = infrastructure_step(run)
    failed_steps = [step.step for step in run.steps
                    if step.status == "failed" and not step.checks and step is not infrastructure]
    ids = [check.id for check in checks(run) if check.status == status]
    return [*failed_steps, *ids] if status == "fail" else ids


def new_certificate(run: ServerRun) -> str | None:
    """The certificate this run put in place of the old one: its ``new_thumbprint``, unless the run's bind failed
    (and restored the previous certificate, which port 444 still serves) or was skipped (an earlier step failed):
    then the renewed certificate is only created, never "the new certificate". None: nothing new is in place."""
    if run.new_thumbprint is None or run.new_thumbprint == run.old_thumbprint:
        return None
    if any(step.step == "bind" and step.status in ("failed", "skipped") for step in run.steps):
        return None
    return run.new_thumbprint


def renewed_to(run: ServerRun) -> str | None:
    """The run's ``new_thumbprint`` as the reports record it: the certificate the server has after the run (the old
    one when nothing was due), None when the renewed one's bind failed and was rolled back."""
    return None if unbound_certificate(run) else run.new_thumbprint


def unbound_certificate(run: ServerRun) -> str | None:
    """A certificate this run created that is not in place (its bind failed and was rolled back), else None."""
    if run.new_thumbprint not in (None, run.old_thumbprint) and new_certificate(run) is None:
        return run.new_thumbprint
    return None


def backend_days_left(run: ServerRun) -> int | None:
    """Days the bound back-end certificate had left when verify judged it (None: not judged)."""
    for check in checks(run):
        if check.id == "backend_days_left" and check.status != "skip" and isinstance(check.value, int):
            return check.value
    return None


#: How the backend_days_left check states the certificate's NotAfter in its details (exbe.checks, ISO 8601 UTC).
_NOT_AFTER = re.compile(r"\bNotAfter (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)")


def backend_not_after(run: ServerRun) -> datetime.datetime | None:
    """When the bound back-end certificate expires, as verify judged it (None: not judged)."""
    for check in checks(run):
        found = _NOT_AFTER.search(check.details) if check.id == "backend_days_left" else None
        if found and check.status != "skip":
            return datetime.datetime.strptime(found.group(1), "%Y-%m-%dT%H:%M:%SZ").replace(
                tzinfo=datetime.timezone.utc)
    return None


def advice(message: str) -> str | None:
    """What to do, as exbe's one-line messages say it: the clause after their last ``; `` (None: they say nothing)."""
    head, separator, tail = message.rpartition("; ")
    return tail.strip() if separator and head and tail.strip() else None


def write_atomically(path: Path, text: str, kind: str) -> None:
    """Write ``text`` (UTF-8, ``\\n`` line ends) to ``path`` whole or not at all, never through a link
    (:func:`exbe.safe_write.write_atomically`); any OSError becomes :class:`ReportWriteError`."""
    try:
        safe_write.write_atomically(Path(path), text.encode("utf-8"), f"the {kind} report")
    except OSError as exc:
        raise ReportWriteError(kind, Path(path), exc) from exc


# -- JUnit -----------------------------------------------------------------------------------------------------------
def write_junit(runs: list[ServerRun], path: Path, *, redact: Redact | None = None, task: str | None = None,
                wall_time_s: float | None = None, locations: Mapping[str, Location] | None = None) -> None:
    """A test suite per server, a case per step and per verify check (see the module doc), written by junit-xml.
    ``task`` decides whether every server carries every check (a task of :data:`VERIFYING_TASKS`; None: when any
    server was verified); ``wall_time_s`` is the run's wall time (None: the longest server's, which is what it is at
    least); ``locations`` gives a server's inventory entry for the cases' ``file``/``line``. Raises
    :class:`ReportWriteError`."""
    write_atomically(Path(path), render_junit(runs, redact=redact, task=task, wall_time_s=wall_time_s,
                                              locations=locations), "JUnit")


def render_junit(runs: list[ServerRun], *, redact: Redact | None = None, task: str | None = None,
                 wall_time_s: float | None = None, locations: Mapping[str, Location] | None = None) -> str:
    """The JUnit document :func:`write_junit` writes.

    junit-xml builds and serializes every suite and case. What exbe writes that it cannot say is set on its document
    afterwards, each because a reader uses it: the root's ``name``, ``skipped``, ``timestamp`` and ``time``
    (junit-xml sums the suites' times, which for servers that ran side by side is no time the run took;
    dorny/test-reporter shows the root's time as the run's), a suite's ``time`` as the server's own (junit-xml sums
    its cases', which leave out connecting and the session), and a case ``time`` of 0 (junit-xml leaves it out, and
    dorny's parser reads a missing time as NaN; every case's time is written the same way, to the millisecond). A
    case's own ``<properties>`` (``status=warn`` before) it cannot write at all: a warning is its ``status="warn"``
    attribute instead (junit-xml's ``status``; mikepenz reads only ``disabled``/``ignored`` there, the others none),
    beside the ``WARNING:`` first line of its output and the suite's ``warnings`` property.
    """
    redact = _redact_default(redact)
    every_check = task in VERIFYING_TASKS if task else any(checks(run) for run in runs)
    suites = [_suite(run, redact, every_check, (locations or {}).get(run.server)) for run in runs]
    root = ET.fromstring(junit_xml.to_xml_report_string(suites, prettyprint=False))
    root.set("name", f"exbe {task}" if task else "exbe")
    root.set("skipped", str(sum(len(case.skipped) > 0 for suite in suites for case in suite.test_cases)))
    wall = wall_time_s if wall_time_s is not None else max((run.duration_s for run in runs), default=0.0)
    root.set("time", f"{wall:.3f}")
    if runs:
        root.set("timestamp", _xml(min(run.started_at for run in runs), redact))
    for suite, run in zip(root.iter("testsuite"), runs, strict=True):
        suite.set("time", f"{run.duration_s:.3f}")
    for case in root.iter("testcase"):  # every case's time, 0 included, in milliseconds, in one place
        seconds = float(case.attrib.pop("time", 0.0))
        case.set("time", f"{seconds:.3f}")
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def case_name(server: str, what: str) -> str:
    """The test name of a step or check on a server, as the Tests tab and the reporters title it."""
    return f"{server}: {what}"


def _suite(run: ServerRun, redact: Redact, every_check: bool, location: Location | None) -> junit_xml.TestSuite:
    server = _xml(run.server, redact)
    days = backend_days_left(run)
    properties = {}
    for name, value in (("exbe_version", __version__), ("simulated", "true" if run.simulated else "false"),
                        ("verdict", verdict(run)), ("warnings", str(len(warnings(run)))),
                        ("error_kind", _xml(run.error_kind, redact)),
                        ("backend_days_left", "" if days is None else str(days)),
                        ("old_thumbprint", _xml(run.old_thumbprint, redact)),
                        ("new_thumbprint", _xml(renewed_to(run), redact))):
        if value or name in ("old_thumbprint", "new_thumbprint"):
            properties[name] = value
    cases = _cases(run, server, redact, every_check)
    if location is not None:
        for case in cases:
            case.file, case.line = _xml(location[0], redact), str(location[1])
    return junit_xml.TestSuite(server, cases, hostname=_xml(run.host, redact), timestamp=_xml(run.started_at, redact),
                               properties=properties,
                               stdout="\n".join(f"WARNING: {_xml(w, redact)}" for w in run.warnings) or None)


def _cases(run: ServerRun, server: str, redact: Redact, every_check: bool) -> list[junit_xml.TestCase]:
    infrastructure = infrastructure_step(run)
    cases: list[junit_xml.TestCase] = []
    for step in run.steps:
        if step is infrastructure:
            continue
        if step.checks:
            # at least a millisecond for a step that took time: a check that ran never reads as taking none
            share = max(round(step.duration_s / len(step.checks), 3), 0.001 if step.duration_s > 0 else 0.0)
            cases.extend(_check_case(server, check, share, redact) for check in step.checks)
        else:
            cases.append(_step_case(server, step, redact))
    if run.error_kind is not None:
        cases.append(_error_case(run, server, infrastructure, redact))
    if every_check and not checks(run):
        from .checks import CHECKS  # the check ids, in their order: one history per server and check

        reason = _not_checked(run, redact)
        for check in CHECKS:
            case = _case(server, check.__name__, 0.0)
            case.add_skipped_info(message=reason)
            cases.append(case)
    return cases


def _case(server: str, what: str, seconds: float, **fields: str | None) -> junit_xml.TestCase:
    return junit_xml.TestCase(case_name(server, what), classname=f"exbe.{server}", elapsed_sec=round(seconds, 3),
                              **fields)


def _error_case(run: ServerRun, server: str, step: StepResult | None, redact: Redact) -> junit_xml.TestCase:
    spent = run.duration_s - sum(other.duration_s for other in run.steps if other is not step)
    case = _case(server, _word(step.step, redact) if step else "connect", max(spent, 0.0))
    message = _xml(" ".join((run.error or "").split()), redact)
    todo = advice(run.error or "")
    body = [message, f"kind: {_xml(run.error_kind, redact)}", f"host: {_xml(run.host, redact)}",
            "this is not a finding about the server's certificate: exbe could not work on it"]
    if todo:
        body.append(f"what to do: {_xml(todo, redact)}")
    case.add_error_info(message=message, output="\n".join(body), error_type=_xml(run.error_kind, redact))
    return case


def _not_checked(run: ServerRun, redact: Redact) -> str:
    if run.error:
        return f"not checked: {_xml(' '.join(run.error.split()), redact)}"
    stopped = next((step for step in reversed(run.steps) if step.status == "failed"), None)
    if stopped is not None:
        return f"not checked: {_word(stopped.step, redact)} failed: {_xml(stopped.message, redact)}"
    return "not checked: the task ended before verify"


def _step_case(server: str, step: StepResult, redact: Redact) -> junit_xml.TestCase:
    message = _xml(step.message, redact)
    lines = [*(f"WARNING: {_xml(w, redact)}" for w in step.warnings),
             *(f"{key}: {typed_text(value, redact, sort_keys=True)}"
               for key, value in (("before", step.before), ("after", step.after)) if value)]
    output = None if step.status == "failed" else "\n".join([f"{_status(step.status, redact)}: {message}", *lines])
    case = _case(server, _word(step.step, redact), step.duration_s, stdout=output,
                 status="warn" if step.warnings else None)
    if step.status == "failed":
        todo = advice(step.message)
        body = [message, *lines, *([f"what to do: {_xml(todo, redact)}"] if todo else [])]
        case.add_failure_info(message=message, output="\n".join(body), failure_type=_word(step.step, redact))
    elif step.status == "skipped":
        case.add_skipped_info(message=message)
    return case


def _check_case(server: str, check: CheckResult, seconds: float, redact: Redact) -> junit_xml.TestCase:
    case = _case(server, _word(check.id, redact), seconds)
    message = _xml(check.message, redact)
    evidence = [*([f"value: {typed_text(check.value, redact)}"]
                  if check.value is not None else []),
                *([f"evidence: {_xml(check.details, redact)}"] if check.details else [])]
    todo = advice(check.message)
    if check.status == "fail":
        body = [message, *evidence, f"what to do: {_xml(todo, redact)}" if todo else
                f"what to do: fix what the message names, then run {verify_command(server)}"]
        case.add_failure_info(message=message, output="\n".join(body), failure_type=_word(check.id, redact))
    elif check.status == "skip":
        case.add_skipped_info(message=message)
    else:
        case.status = _status(check.status, redact)
        first = f"WARNING: {message}" if check.status == "warn" else f"{_status(check.status, redact)}: {message}"
        todo_line = [f"what to do: {_xml(todo, redact)}"] if check.status == "warn" and todo else []
        case.stdout = "\n".join([first, *evidence, *todo_line])
    return case


def _status(status: str, redact: Redact) -> str:
    return status if status in STATUSES else _xml(status, redact)


# -- JSON ------------------------------------------------------------------------------------------------------------
def write_json(runs: list[ServerRun], path: Path, *, redact: Redact | None = None) -> None:
    """The run record: per server its verdict and, per step, status, message, changed, before/after, data,
    warnings, checks. Raises :class:`ReportWriteError`."""
    redact = _redact_default(redact)
    document: dict[str, object] = {
        "exbe": __version__,
        "failed": exit_code(runs) != EXIT_OK,
        "simulated": any(run.simulated for run in runs),
        "servers": [_server_record(run, redact) for run in runs if not is_organization(run)],
    }
    for run in filter(is_organization, runs):
        document["organization"] = _server_record(run, redact)
    write_atomically(Path(path), json.dumps(document, indent=1, sort_keys=False, allow_nan=False) + "\n", "JSON")


def _server_record(run: ServerRun, redact: Redact) -> dict[str, object]:
    return {
            **redact_values({
                "server": run.server,
                "host": run.host,
                "started_at": run.started_at,
                "duration_s": run.duration_s,
                "old_thumbprint": run.old_thumbprint,
                "new_thumbprint": renewed_to(run),
                "error": run.error,
                "error_kind": run.error_kind,
                "warnings": run.warnings,
                "failed": run.failed,
                "simulated": run.simulated,
            }, redact),
            "verdict": verdict(run),
            "steps": [_step_record(step, redact) for step in run.steps],
        }


def _step_record(step: StepResult, redact: Redact) -> dict[str, object]:
    record = dataclasses.asdict(step)
    judged = record.pop("checks")
    return {**_record(record, redact), "checks": [_record(check, redact) for check in judged]}


def _record(fields: dict[str, object], redact: Redact) -> dict[str, object]:
    """A step's or check's fields with each value redacted, except its vocabulary (status, step name, check id)."""
    return {key: value if isinstance(value, str) and _vocabulary(key, value) else redact_values(value, redact)
            for key, value in fields.items()}

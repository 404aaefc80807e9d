"""Writers over the results of a run: JUnit XML, a JSON run record, a plain-text summary table, the exit code.

Every string that leaves through a writer passes through ``redact`` (the secrets choke point,
:data:`exbe.redaction.REDACTOR` unless the caller passes another), one *value* at a time, before the document is
built: keys, element and attribute names and exbe's closed vocabulary (statuses, step names, check ids) never do, so
the JSON record and the JUnit file parse, and mean, the same whatever the password is (see :mod:`exbe.redaction`).
JUnit and the table also show control characters from servers as ``\\xNN`` (XML cannot hold most of them, and
junit-xml would silently drop them, joining what was apart).

Both files are written atomically: to a temporary file in the target's directory, flushed to disk, then renamed over
the target, so a reader (a pipeline's publish step, a gate) never sees half a report and a failed write leaves the
previous file as it was. A failure raises :class:`ReportWriteError` (an :class:`exbe.errors.ExbeError`, exit code 1)
naming the report and the path; the caller prints it and still exits non-zero.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import secrets
import xml.etree.ElementTree as ET
from pathlib import Path

import junit_xml

from . import __version__
from .errors import ExbeError
from .model import CheckResult, ServerRun, StepResult
from .redaction import REDACTOR, VOCABULARY, Redact, clean, redact_values

EXIT_OK = 0
EXIT_FAILED = 1

#: Statuses exbe's own code chooses from a closed set: never secret, so never given to the redactor.
STATUSES = frozenset({"ok", "changed", "failed", "skipped", "pass", "warn", "fail", "skip"}) & VOCABULARY
_IDENTIFIER = re.compile(r"[a-z][a-z0-9_]{0,63}")


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


def write_atomically(path: Path, text: str, kind: str) -> None:
    """Write ``text`` (UTF-8, ``\\n`` line ends) to ``path`` through a temporary file beside it and a rename; any
    OSError becomes :class:`ReportWriteError` and leaves no temporary file behind."""
    path = Path(path)
    temporary: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        while temporary is None:
            candidate = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
            try:  # created by exbe alone (O_EXCL), with the permissions a plain write would give (0666 less umask)
                descriptor = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                                     0o666)
            except FileExistsError:
                continue
            temporary = candidate
        with open(descriptor, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException as exc:
        if temporary is not None:
            with contextlib.suppress(OSError):
                temporary.unlink()
        if isinstance(exc, OSError):
            raise ReportWriteError(kind, path, exc) from exc
        raise


# -- JUnit -----------------------------------------------------------------------------------------------------------
def write_junit(runs: list[ServerRun], path: Path, *, redact: Redact | None = None) -> None:
    """A test suite per server, a test case per step (classname ``exbe.<server>.<step>``) and per verify check
    (classname ``exbe.<server>.verify``, name the check id). Raises :class:`ReportWriteError`."""
    redact = _redact_default(redact)
    suites = [_suite(run, redact) for run in runs]
    text = junit_xml.to_xml_report_string(suites, prettyprint=False)
    root = ET.fromstring(text)
    for element, run in zip(root.iter("testsuite"), runs, strict=True):
        # junit_xml sums the case times; the suite's time is the server's wall time, connection included.
        element.set("time", f"{run.duration_s:.3f}")
    root.set("time", f"{sum(run.duration_s for run in runs):.3f}")
    ET.indent(root)
    write_atomically(Path(path), '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode")
                     + "\n", "JUnit")


def _suite(run: ServerRun, redact: Redact) -> junit_xml.TestSuite:
    server = _xml(run.server, redact)
    cases: list[junit_xml.TestCase] = []
    for step in run.steps:
        cases.append(_step_case(server, step, redact))
        cases.extend(_check_case(server, check, redact) for check in step.checks)
    if run.error and not any(step.status == "failed" for step in run.steps):
        case = junit_xml.TestCase("run", classname=f"exbe.{server}.run")
        case.add_failure_info(message=_xml(run.error, redact))
        cases.append(case)
    return junit_xml.TestSuite(
        server, cases, hostname=_xml(run.host, redact), timestamp=_xml(run.started_at, redact),
        properties={"exbe_version": __version__, "old_thumbprint": _xml(run.old_thumbprint, redact),
                    "new_thumbprint": _xml(run.new_thumbprint, redact),
                    "simulated": "true" if run.simulated else "false"})


def _step_case(server: str, step: StepResult, redact: Redact) -> junit_xml.TestCase:
    name = _word(step.step, redact)
    case = junit_xml.TestCase(name, classname=f"exbe.{server}.{name}", elapsed_sec=step.duration_s)
    lines = [*(f"warning: {_xml(w, redact)}" for w in step.warnings),
             *(f"{key}: {_xml(json.dumps(redact_values(value, redact), sort_keys=True), redact)}"
               for key, value in (("before", step.before), ("after", step.after)) if value)]
    details = "\n".join(lines)
    message = _xml(step.message, redact)
    if step.status == "failed":
        case.add_failure_info(message=message, output=details or None)
    elif step.status == "skipped":
        case.add_skipped_info(message=message)
    else:
        case.stdout = "\n".join(filter(None, [f"{_status(step.status, redact)}: {message}", details]))
    return case


def _check_case(server: str, check: CheckResult, redact: Redact) -> junit_xml.TestCase:
    case = junit_xml.TestCase(_word(check.id, redact), classname=f"exbe.{server}.verify")
    message, details = _xml(check.message, redact), _xml(check.details, redact)
    if check.status == "fail":
        case.add_failure_info(message=message, output=details or None)
    elif check.status == "skip":
        case.add_skipped_info(message=message)
    else:
        case.stdout = "\n".join(filter(None, [f"{_status(check.status, redact)}: {message}", details]))
    return case


def _status(status: str, redact: Redact) -> str:
    return status if status in STATUSES else _xml(status, redact)


# -- JSON ------------------------------------------------------------------------------------------------------------
def write_json(runs: list[ServerRun], path: Path, *, redact: Redact | None = None) -> None:
    """The run record: per server and step, status, message, changed, before/after, data, warnings, checks.
    Raises :class:`ReportWriteError`."""
    redact = _redact_default(redact)
    document = {
        "exbe": __version__,
        "failed": exit_code(runs) != EXIT_OK,
        "simulated": any(run.simulated for run in runs),
        "servers": [{
            **redact_values({
                "server": run.server,
                "host": run.host,
                "started_at": run.started_at,
                "duration_s": run.duration_s,
                "old_thumbprint": run.old_thumbprint,
                "new_thumbprint": run.new_thumbprint,
                "error": run.error,
                "failed": run.failed,
                "simulated": run.simulated,
            }, redact),
            "steps": [_step_record(step, redact) for step in run.steps],
        } for run in runs],
    }
    write_atomically(Path(path), json.dumps(document, indent=1, sort_keys=False, allow_nan=False) + "\n", "JSON")


def _step_record(step: StepResult, redact: Redact) -> dict[str, object]:
    record = dataclasses.asdict(step)
    checks = record.pop("checks")
    return {**_record(record, redact), "checks": [_record(check, redact) for check in checks]}


def _record(fields: dict[str, object], redact: Redact) -> dict[str, object]:
    """A step's or check's fields with each value redacted, except its vocabulary (status, step name, check id)."""
    return {key: value if isinstance(value, str) and _vocabulary(key, value) else redact_values(value, redact)
            for key, value in fields.items()}


# -- summary table ---------------------------------------------------------------------------------------------------
def summary_table(runs: list[ServerRun], *, redact: Redact | None = None) -> str:
    """One row per server: each step's status, the thumbprint change, the verdict. Each cell is masked on its own
    and kept on one line, with control characters shown as ``\\xNN``."""
    redact = _redact_default(redact)

    def cell(text: str) -> str:
        return clean(text, redact, one_line=True)

    steps = list(dict.fromkeys(step.step for run in runs for step in run.steps))
    header = ["server", *(name if _IDENTIFIER.fullmatch(name) else cell(name) for name in steps), "thumbprint",
              "verdict"]
    rows = [[cell(run.server), *(_step_cell(run, name, redact) for name in steps), _thumbprints(run, cell),
             _verdict(run)] for run in runs]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(row) for row in rows)])


def _step_cell(run: ServerRun, name: str, redact: Redact) -> str:
    found = [step for step in run.steps if step.step == name]
    if not found:
        return "-"
    step = found[-1]
    status = step.status if step.status in STATUSES else clean(step.status, redact, one_line=True)
    counts = {kind: sum(c.status == kind for c in step.checks) for kind in ("fail", "warn", "skip")}
    extra = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
    return f"{status} ({extra})" if extra else status


def _thumbprints(run: ServerRun, cell: Redact) -> str:
    # masked whole before the cut to 8 characters, so the cut cannot leave a piece of a secret unmasked
    old, new = cell(run.old_thumbprint or "")[:8], cell(run.new_thumbprint or "")[:8]
    if not old and not new:
        return "-"
    if not new or new == old:
        return old or new
    return f"{old or '?'} -> {new}"


def _verdict(run: ServerRun) -> str:
    if run.failed:
        return "FAILED"
    if any(c.status == "warn" for step in run.steps for c in step.checks):
        return "passed with warnings"
    return "passed"

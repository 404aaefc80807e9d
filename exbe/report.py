"""Writers over the results of a run: JUnit XML, a JSON run record, a plain-text summary table, the exit code.

Every string that leaves through a writer passes through ``redact`` (the caller's secrets choke point).
"""

from __future__ import annotations

import dataclasses
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import junit_xml

from . import __version__
from .model import CheckResult, ServerRun, StepResult

Redact = Callable[[str], str]
EXIT_OK = 0
EXIT_FAILED = 1


def _keep(text: str) -> str:
    return text


def exit_code(runs: list[ServerRun]) -> int:
    """0 when every step and check passed (warnings included), 1 when any failed."""
    return EXIT_FAILED if any(run.failed for run in runs) else EXIT_OK


# -- JUnit -----------------------------------------------------------------------------------------------------------
def write_junit(runs: list[ServerRun], path: Path, *, redact: Redact = _keep) -> None:
    """A test suite per server, a test case per step (classname ``exbe.<server>.<step>``) and per verify check
    (classname ``exbe.<server>.verify``, name the check id)."""
    suites = [_suite(run, redact) for run in runs]
    text = junit_xml.to_xml_report_string(suites, prettyprint=False)
    root = ET.fromstring(text)
    for element, run in zip(root.iter("testsuite"), runs, strict=True):
        # junit_xml sums the case times; the suite's time is the server's wall time, connection included.
        element.set("time", f"{run.duration_s:.3f}")
    root.set("time", f"{sum(run.duration_s for run in runs):.3f}")
    ET.indent(root)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n",
                    encoding="utf-8")


def _suite(run: ServerRun, redact: Redact) -> junit_xml.TestSuite:
    cases: list[junit_xml.TestCase] = []
    for step in run.steps:
        cases.append(_step_case(run.server, step, redact))
        cases.extend(_check_case(run.server, check, redact) for check in step.checks)
    if run.error and not any(step.status == "failed" for step in run.steps):
        case = junit_xml.TestCase("run", classname=redact(f"exbe.{run.server}.run"))
        case.add_failure_info(message=redact(run.error))
        cases.append(case)
    return junit_xml.TestSuite(
        redact(run.server), cases, hostname=redact(run.host), timestamp=run.started_at,
        properties={"exbe_version": __version__, "old_thumbprint": run.old_thumbprint or "",
                    "new_thumbprint": run.new_thumbprint or ""})


def _step_case(server: str, step: StepResult, redact: Redact) -> junit_xml.TestCase:
    case = junit_xml.TestCase(redact(step.step), classname=redact(f"exbe.{server}.{step.step}"),
                              elapsed_sec=step.duration_s)
    details = "\n".join([*(f"warning: {w}" for w in step.warnings),
                         *(f"{key}: {json.dumps(value, sort_keys=True, default=str)}"
                           for key, value in (("before", step.before), ("after", step.after)) if value)])
    if step.status == "failed":
        case.add_failure_info(message=redact(step.message), output=redact(details) or None)
    elif step.status == "skipped":
        case.add_skipped_info(message=redact(step.message))
    else:
        case.stdout = redact("\n".join(filter(None, [f"{step.status}: {step.message}", details])))
    return case


def _check_case(server: str, check: CheckResult, redact: Redact) -> junit_xml.TestCase:
    case = junit_xml.TestCase(redact(check.id), classname=redact(f"exbe.{server}.verify"))
    if check.status == "fail":
        case.add_failure_info(message=redact(check.message), output=redact(check.details) or None)
    elif check.status == "skip":
        case.add_skipped_info(message=redact(check.message))
    else:
        case.stdout = redact("\n".join(filter(None, [f"{check.status}: {check.message}", check.details])))
    return case


# -- JSON ------------------------------------------------------------------------------------------------------------
def write_json(runs: list[ServerRun], path: Path, *, redact: Redact = _keep) -> None:
    """The run record: per server and step, status, message, changed, before/after, data, warnings, checks."""
    document = {
        "exbe": __version__,
        "failed": exit_code(runs) != EXIT_OK,
        "servers": [{
            "server": run.server,
            "host": run.host,
            "started_at": run.started_at,
            "duration_s": run.duration_s,
            "old_thumbprint": run.old_thumbprint,
            "new_thumbprint": run.new_thumbprint,
            "error": run.error,
            "failed": run.failed,
            "steps": [dataclasses.asdict(step) for step in run.steps],
        } for run in runs],
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_redacted(document, redact), indent=1, sort_keys=False, default=str) + "\n",
                    encoding="utf-8")


def _redacted(value: Any, redact: Redact) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(str(k)): _redacted(v, redact) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redacted(v, redact) for v in value]
    return value


# -- summary table ---------------------------------------------------------------------------------------------------
def summary_table(runs: list[ServerRun], *, redact: Redact = _keep) -> str:
    """One row per server: each step's status, the thumbprint change, the verdict."""
    steps = list(dict.fromkeys(step.step for run in runs for step in run.steps))
    header = ["server", *steps, "thumbprint", "verdict"]
    rows = [[run.server, *(_step_cell(run, name) for name in steps), _thumbprints(run), _verdict(run)]
            for run in runs]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()

    return redact("\n".join([line(header), line(["-" * w for w in widths]), *(line(row) for row in rows)]))


def _step_cell(run: ServerRun, name: str) -> str:
    found = [step for step in run.steps if step.step == name]
    if not found:
        return "-"
    step = found[-1]
    counts = {status: sum(c.status == status for c in step.checks) for status in ("fail", "warn", "skip")}
    extra = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    return f"{step.status} ({extra})" if extra else step.status


def _thumbprints(run: ServerRun) -> str:
    old, new = (run.old_thumbprint or "")[:8], (run.new_thumbprint or "")[:8]
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

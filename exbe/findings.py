"""What needs the admin after a run, in exbe's words: each server's findings (failed steps and checks with their
reasons, warnings, what a dry run's plan fixes), and the causes that are the run's rather than one server's -- the
same credentials or trust for every server -- so that the console and the HTML report say each of those once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from .advice import runnable
from .errors import CONNECTION_KINDS
from .redaction import Redact, clean

if TYPE_CHECKING:
    from .model import CheckResult, ServerRun

#: Causes that are the run's rather than one server's (the same credentials, the same trust for every server): when
#: servers share one, it is said once -- in full on the first server's line and once in FINDINGS -- not per server.
RUN_WIDE_KINDS = ("no_credentials", "auth", "tls_validation")
_ADDRESSED = re.compile(r"^\S+ \([^)]*\): ")


def unreachable(run: ServerRun) -> bool:
    """exbe could not work with the server at all: a connection failure (exbe.errors.CONNECTION_KINDS)."""
    return run.error_kind in CONNECTION_KINDS


def cause(run: ServerRun) -> str:
    """A server's connection failure without the server's name and address in front: what servers can share."""
    return _ADDRESSED.sub("", run.error or "", count=1)


def shared_causes(runs: Sequence[ServerRun]) -> dict[str, list[ServerRun]]:
    """Run-wide causes (:data:`RUN_WIDE_KINDS`) that more than one server hit, with those servers (and, for refused
    credentials, the servers exbe then did not attempt)."""
    by_kind: dict[str, list[ServerRun]] = {}
    for run in runs:
        if run.error_kind in RUN_WIDE_KINDS:
            by_kind.setdefault(run.error_kind or "", []).append(run)
    shared = {kind: found for kind, found in by_kind.items() if len(found) > 1}
    if "auth" in by_kind:
        skipped = [run for run in runs if run.error_kind == "not_attempted"]
        if skipped:
            shared["auth"] = [*by_kind["auth"], *skipped]
    return shared


def findings(run: ServerRun, redact: Redact, *, cause_said: bool = False) -> list[tuple[str, str, str]]:
    """What needs the admin on one server, as ``(label, what, reason)``: the connection error (not when
    ``cause_said``: a run-wide cause said once for the fleet), failed steps, failed and warning checks (with their
    details), checks a dry run's plan would fix, and every warning."""
    def text(value: str) -> str:
        return runnable(without_server(clean(value, redact, one_line=True), run.server), run.server)

    found: list[tuple[str, str, str]] = []
    for warning in run.warnings:
        found.append(("warning", "run", text(warning)))
    planned: Mapping[str, str] = {}
    for step in run.steps:
        judged = [c for c in step.checks if c.status == "fail"]
        if cause_said and step.step == "connect" and step.message == run.error:
            pass
        elif step.status == "failed" and not judged:  # a failed verify is told by its failed checks, below
            found.append(("error" if unreachable(run) and step.step == "connect" else "failed", step.step,
                          text(step.message)))
        elif step.status == "skipped" and step.step == "connect":
            found.append(("skipped", step.step, text(step.message)))
        if step.step == "verify":
            planned = step.data.get("would_fix") or {}
        for check in step.checks:
            label = _check_label(check, planned)
            if label:
                found.append((label, check.id, text(check.message)))
                if check.details and label != "would fix":
                    found.append(("", "", text(check.details)))
        found.extend(("warning", step.step, text(w)) for w in step.warnings)
        unjudged = sum(c.status == "skip" and c.id not in planned for c in step.checks)
        if unjudged:
            found.append(("skipped", f"{unjudged} check(s)", "could not be judged; --verbose shows why"))
    return found


def _check_label(check: CheckResult, planned: Mapping[str, str]) -> str:
    if check.id in planned:
        return "would fix"
    return {"fail": "fail", "warn": "warn"}.get(check.status, "")


def without_server(text: str, server: str) -> str:
    """A message under its server's heading without the server's name in front (``EXCH01: ...``, ``EXCH01 ...``);
    kept where the name introduces an address (``exch01 (10.0.0.5:5985): cannot connect``)."""
    head, rest = text[: len(server)], text[len(server):]
    if head.lower() == server.lower() and rest[:1] in (":", " ") and not rest.lstrip(": ").startswith("("):
        return rest[1:].lstrip(" ")
    return text

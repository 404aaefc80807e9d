"""What exbe decides with and what it reports: settings (:mod:`exbe.run_settings`), check results, step results, one
server's run.

Plain data; the decisions live in ``selection``/``plan``/``checks`` and the writers in ``report``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from .run_settings import Settings as Settings  # the decisions' input, kept apart: the steps plan with it
from .steps import get

CheckStatus = Literal["pass", "warn", "fail", "skip"]
StepStatus = Literal["ok", "changed", "failed", "skipped"]


@dataclasses.dataclass
class CheckResult:
    """One verify check; ``id`` is stable (it is the JUnit test case name), ``message`` is one line."""

    id: str
    status: CheckStatus
    message: str
    details: str = ""
    value: Any = None


@dataclasses.dataclass
class StepResult:
    """One step on one server. ``before``/``after`` describe the state the step looked at and left (or, in a dry
    run, would leave)."""

    server: str
    step: str
    status: StepStatus
    message: str
    changed: bool = False
    before: dict[str, Any] = dataclasses.field(default_factory=dict)
    after: dict[str, Any] = dataclasses.field(default_factory=dict)
    data: dict[str, Any] = dataclasses.field(default_factory=dict)
    warnings: list[str] = dataclasses.field(default_factory=list)
    duration_s: float = 0.0
    checks: list[CheckResult] = dataclasses.field(default_factory=list)

    @classmethod
    def from_envelope(cls, server: str, envelope: dict[str, Any], duration_s: float) -> StepResult:
        """A step script's result envelope (``exbe.contract``) as a StepResult with a one-line message."""
        step = envelope["step"]
        declared = get(step)
        data = dict(envelope.get("data") or {})
        changed = bool(envelope.get("changed"))
        if not envelope.get("ok"):
            status: StepStatus = "failed"
            message = _one_line(envelope.get("error") or f"{step} failed without saying why")
        else:
            status = "changed" if changed else "ok"
            message = declared.describe(data, changed, bool(envelope.get("dry_run")))
        before, after = declared.before_after(data)
        return cls(server=server, step=step, status=status, message=message, changed=changed, before=before,
                   after=after, data=data, warnings=[_one_line(w) for w in envelope.get("warnings") or []],
                   duration_s=round(duration_s, 3))


@dataclasses.dataclass
class ServerRun:
    """Everything exbe did on one server in one task."""

    server: str
    host: str
    started_at: str  # ISO 8601 UTC
    duration_s: float = 0.0
    steps: list[StepResult] = dataclasses.field(default_factory=list)
    old_thumbprint: str | None = None
    new_thumbprint: str | None = None
    error: str | None = None
    #: Why the server has no full run, when it has an error: a ConnectionFailed kind ("auth", "unreachable",
    #: "timeout", ... see exbe.errors.CONNECTION_KINDS), "not_attempted", "cancelled" or "unexpected". Reports show
    #: these as infrastructure errors (JUnit <error>), not as findings about the server.
    error_kind: str | None = None
    #: Run-level warnings that belong to no step (for example TLS validation switched off for this server).
    warnings: list[str] = dataclasses.field(default_factory=list)
    simulated: bool = False  # a sandbox server (--sandbox): every report says so

    @property
    def failed(self) -> bool:
        """A connection error, a failed step or a failed check."""
        return self.error is not None or any(
            step.status == "failed" or any(check.status == "fail" for check in step.checks) for step in self.steps)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())

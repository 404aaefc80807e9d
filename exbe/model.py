"""What exbe decides with and what it reports: settings, check results, step results, one server's run.

Plain data; the decisions live in ``selection``/``plan``/``checks`` and the writers in ``report``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

CheckStatus = Literal["pass", "warn", "fail", "skip"]
StepStatus = Literal["ok", "changed", "failed", "skipped"]


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the operator asked for (flags merged over ``exbe.defaults``)."""

    days: int = 60  # renew when fewer days are left
    force: bool = False
    smtp: Literal["keep", "move"] = "keep"
    trust: bool = True
    dry_run: bool = False
    min_age_days: int = 7  # cleanup waits this long after the switch
    restart_iis: bool = False
    backend_site: str = "Exchange Back End"
    frontend_site: str = "Default Web Site"
    friendly_name: str = "Microsoft Exchange"
    warn_days: int = 60  # verify warns below this many days
    fail_days: int = 30  # verify fails below this many days


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
        data = dict(envelope.get("data") or {})
        changed = bool(envelope.get("changed"))
        if not envelope.get("ok"):
            status: StepStatus = "failed"
            message = _one_line(envelope.get("error") or f"{step} failed without saying why")
        else:
            status = "changed" if changed else "ok"
            message = _describe(step, data, changed, bool(envelope.get("dry_run")))
        before, after = _before_after(step, data)
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

    @property
    def failed(self) -> bool:
        """A connection error, a failed step or a failed check."""
        return self.error is not None or any(
            step.status == "failed" or any(check.status == "fail" for check in step.checks) for step in self.steps)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _describe(step: str, data: dict[str, Any], changed: bool, dry_run: bool) -> str:
    """A successful step in one line; a dry run says what it *would* do."""
    def verb(done: str, would: str) -> str:
        return would if dry_run else done

    if step == "trust":
        thumb = data.get("thumbprint")
        if changed:
            return f"{verb('added', 'would add')} {thumb} to LocalMachine\\Root"
        return f"{thumb} is already in LocalMachine\\Root"
    if step == "bind":
        thumb = data.get("thumbprint")
        before, after = data.get("before") or {}, data.get("after") or {}
        names = {"backend": "the back-end 444 binding", "loopback": "the loopback 127.0.0.1:443: binding"}
        moved = [names[key] for key in names if before.get(key) != after.get(key)]
        if changed:
            return f"{verb('bound', 'would bind')} {thumb} on {' and '.join(moved) or names['backend']}"
        return f"{thumb} is already bound on {names['backend']}"
    if step == "clone":
        return (f"{verb('cloned', 'would clone')} {data.get('source_thumbprint')}"
                + (f" -> {data['new_thumbprint']}" if data.get("new_thumbprint") else ""))
    if step == "restart":
        return (f"{verb('ran', 'would run')} {data.get('method')}: W3SVC {data.get('w3svc_before')} -> "
                f"{data.get('w3svc_after')}")
    if step == "cleanup":
        removed_my, removed_root = data.get("removed_my") or [], data.get("removed_root") or []
        if not (removed_my or removed_root):
            return "nothing to remove"
        return (f"{verb('removed', 'would remove')} {len(removed_my)} certificate(s) from LocalMachine\\My and "
                f"{len(removed_root)} from LocalMachine\\Root: {', '.join(dict.fromkeys(removed_my + removed_root))}")
    if step == "facts":
        return (f"read {len(data.get('certificates') or [])} certificate(s) and {len(data.get('bindings') or [])} "
                "https binding(s)")
    return verb("changed", "would change") if changed else "no change"


def _before_after(step: str, data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The part of a step's data that a run record shows as before/after."""
    if step == "bind":
        return dict(data.get("before") or {}), dict(data.get("after") or {})
    if step == "trust" and "present_before" in data:
        thumb = data.get("thumbprint")
        return ({"root": {thumb: data["present_before"]}}, {"root": {thumb: data.get("present_after")}})
    if step == "clone":
        return {"thumbprint": data.get("source_thumbprint")}, {"thumbprint": data.get("new_thumbprint")}
    if step == "restart":
        return {"W3SVC": data.get("w3svc_before")}, {"W3SVC": data.get("w3svc_after"), "WAS": data.get("was_after")}
    if step == "cleanup":
        removed = {"my": list(data.get("removed_my") or []), "root": list(data.get("removed_root") or [])}
        return removed, {"my": [], "root": []}
    return {}, {}

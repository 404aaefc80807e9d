"""`exbe status`: when does what expire, one line per server, most urgent first.

Read-only and as cheap as a run gets: it is preflight (exbe's lock looked at, never taken, and the facts read in one
WinRM pipeline; the Exchange endpoint read beside it for the Auth certificate), judged here from the run record, so
a status line and a verify finding are made from the same facts by the same code (:mod:`exbe.checks`).

The days left of a run (:func:`backend_days`) are also what the RECAP and the HTML report show for every task.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

from . import checks
from .advice import runnable
from .facts import ExchangeFacts, HostFacts, iso
from .model import ServerRun, Settings
from .redaction import Redact, clean
from .selection import backend_binding, short
from .steps.lock import LockFacts

#: ``exbe status --json``'s document format (a new key may be added; a changed meaning gets a new version).
FORMAT = "exbe-status/1"


@dataclasses.dataclass(frozen=True)
class ServerStatus:
    """One server's line. ``days_left``/``auth_days_left`` are None when unknown; ``state`` is ``ok``, ``warn``,
    ``fail`` (as verify would judge the back-end certificate's binding and days) or ``unknown`` (not read)."""

    server: str
    state: str
    thumbprint: str | None = None
    not_after: str | None = None
    days_left: int | None = None
    auth_days_left: int | None = None
    binding_ok: bool | None = None
    lock: str | None = None
    note: str = ""

    def urgency(self) -> tuple[int, float, str]:
        """Sort key: a server that could not be read or whose 444 binding is broken first, then fewest days left
        (back-end or Auth certificate, whichever ends first)."""
        if self.state == "unknown":
            return 0, 0, self.server
        if not self.binding_ok:
            return 1, 0, self.server
        known = [d for d in (self.days_left, self.auth_days_left) if d is not None]
        return 2, min(known) if known else float("inf"), self.server

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def preflight_step_data(run: ServerRun) -> Mapping[str, Any]:
    """What preflight recorded it read (facts, Exchange's view, the lock), or nothing."""
    step = next((s for s in run.steps if s.step == "preflight"), None)
    return step.data if step is not None and step.status == "ok" else {}


def server_status(run: ServerRun, settings: Settings, word: str) -> ServerStatus:
    """``run`` (a preflight) as its status line; ``word`` is the console's verdict, used when nothing was read."""
    data = preflight_step_data(run)
    if not data.get("facts"):
        failed = next((s for s in run.steps if s.status == "failed"), None)
        return ServerStatus(server=run.server, state="unknown",
                            note=f"{word}: {failed.message}" if failed else word)
    facts = HostFacts.parse(data["facts"])
    exchange = ExchangeFacts.from_dict(data["exchange"]) if data.get("exchange") else None
    lock = LockFacts.parse(data["lock"]) if data.get("lock") else None
    judged = {c.id: c for c in checks.run_checks(facts, exchange, None, settings, lock=lock)}
    binding = backend_binding(facts, settings)
    cert = facts.certificate(binding.certificate_hash if binding else None)
    present, days = judged["backend_binding_present"], judged["backend_days_left"]
    auth = exchange.auth.current if exchange else None
    auth_cert = facts.certificate(auth)
    lock_text = None
    if lock is not None and lock.held is not None:
        lock_text = ("expired: " if lock.held.expired(lock.now) else "") + lock.held.holder()
    worst = "fail" if "fail" in (present.status, days.status) else "warn" if days.status == "warn" else "ok"
    notes = [c.message for c in (present, days) if c.status in ("fail", "warn")]
    if exchange is None:
        notes.append("Auth certificate not read: the Exchange endpoint was not available")
    return ServerStatus(
        server=run.server, state=worst, thumbprint=cert.thumbprint if cert else None,
        not_after=iso(cert.not_after) if cert else None, days_left=facts.days_left(cert) if cert else None,
        auth_days_left=facts.days_left(auth_cert) if auth_cert else None,
        binding_ok=present.status == "pass", lock=lock_text,
        note="; ".join(runnable(_without_name(n, run.server), run.server) for n in notes))


def _without_name(text: str, server: str) -> str:
    return text[len(server):].lstrip(": ") if text.lower().startswith(server.lower()) else text


def statuses(runs: Sequence[ServerRun], settings: Settings, words: Mapping[str, str]) -> list[ServerStatus]:
    """Every server's status, most urgent first; ``words``: the console's verdict by server name."""
    return sorted((server_status(run, settings, words.get(run.server, "")) for run in runs),
                  key=ServerStatus.urgency)


def table(rows: Sequence[ServerStatus], redact: Redact) -> list[tuple[str, str]]:
    """The console's lines, as ``(state, line)``: a header, then one line per server."""
    def cell(value: object) -> str:
        return clean("-" if value is None else str(value), redact, one_line=True)

    head = ("server", "state", "days", "not after", "back-end cert", "auth days", "444", "lock", "")
    body = [(cell(r.server), r.state.upper() if r.state != "ok" else "ok",
             cell(r.days_left), (r.not_after or "-")[:10], short(r.thumbprint) if r.thumbprint else "-",
             cell(r.auth_days_left), {True: "ok", False: "BROKEN", None: "?"}[r.binding_ok],
             cell(r.lock) if r.lock else "free", cell(r.note)) for r in rows]
    widths = [max(len(line[i]) for line in (head, *body)) for i in range(len(head) - 1)]

    def joined(line: Sequence[str]) -> str:
        return "  ".join(f"{text:<{w}}" for text, w in zip(line[:-1], widths, strict=True)).rstrip() + \
            (f"  {line[-1]}" if line[-1] else "")

    return [("", joined(head)), *((r.state, joined(line)) for r, line in zip(rows, body, strict=True))]


def document(rows: Sequence[ServerStatus], *, simulated: bool, redact: Redact) -> str:
    """``--json``'s document: the rows in the console's order, every text masked."""
    def masked(value: Any) -> Any:
        return redact(value) if isinstance(value, str) else value

    return json.dumps({"format": FORMAT, "simulated": simulated,
                       "servers": [{k: masked(v) for k, v in row.to_dict().items()} for row in rows]}, indent=2) + "\n"


def exit_code(rows: Sequence[ServerStatus]) -> int:
    """1 when a server could not be read or would fail verify's binding or days check, else 0."""
    return 1 if any(row.state in ("fail", "unknown") for row in rows) else 0


def backend_days(run: ServerRun) -> int | None:
    """Days left of the back-end certificate as the run last saw it: verify's judgement when it ran, else the
    certificate preflight selected (None when neither is known)."""
    for step in reversed(run.steps):
        for check in step.checks:
            if check.id == "backend_days_left" and isinstance(check.value, int):
                return check.value
    data = preflight_step_data(run)
    if data.get("facts") and data.get("selected"):
        facts = HostFacts.parse(data["facts"])
        cert = facts.certificate(run.new_thumbprint or data["selected"]) or facts.certificate(data["selected"])
        return facts.days_left(cert) if cert else None
    return None

"""The step summary: the page an admin opens after a run (GitHub ``$GITHUB_STEP_SUMMARY``, Azure DevOps
``##vso[task.uploadsummary]``).

One heading with the fleet's count per verdict, one table row per server -- verdict (passed / warnings / failed /
unreachable), the back-end certificate's days left after the run, the failing and the warning checks by name, and
for a server exbe could not work on, why -- most severe first; then a picture of the fleet's expiry: how many
back-end certificates are in each band of days left, as a Mermaid pie chart where the page renders Mermaid (GitHub
Markdown) and as a plain text bar chart in a code block where it does not (Azure DevOps' summary tab).

Every value from a server passes the redactor and :func:`exbe.ci.markdown_code` (control characters visible, no live
Markdown or HTML); the charts hold only exbe's band names and counts. A page stays under :data:`LIMIT_BYTES` (GitHub
refuses a step summary over 1 MiB; Azure DevOps publishes none for the attachment, so the same bound applies): when
the rows would not fit, the least severe ones are left out and a last line says how many.
"""

from __future__ import annotations

from collections.abc import Sequence

from .markdown import markdown_table, markdown_text
from .model import ServerRun
from .organization import servers_only
from .redaction import Redact
from .report import VERDICTS, backend_days_left, findings, new_certificate, unbound_certificate, verdict

#: GitHub's limit for one step's summary (1 MiB); exbe keeps its page under it, its closing lines included.
LIMIT_BYTES = 1024 * 1024
HEADERS = ("Server", "Verdict", "Back-end days left", "Certificate", "Failing", "Warnings", "Why")

#: Why a server has no run of its own when a cause that is not its own stopped it: each such kind is one cause for
#: the whole run (one annotation says it, before any server's).
RUN_WIDE = {"not_attempted": "not attempted", "cancelled": "cancelled"}

#: Bands of days left, as (label, lowest day in it); the default thresholds (fail below 30, warn below 60) fall on
#: band edges, so a band never mixes certificates that verify judges differently at the defaults.
BANDS: tuple[tuple[str, int], ...] = (("expired", -(10**9)), ("1-29 days", 1), ("30-59 days", 30),
                                      ("60-364 days", 60), ("1 year or more", 365))
NOT_JUDGED = "not judged"
_BAR_WIDTH = 40


def title(task: str | None) -> str:
    """The summary's title: ``exbe renew``, ``exbe verify`` (the page's heading, and Azure's section name)."""
    return f"exbe {task}" if task else "exbe"


def severity(run: ServerRun) -> tuple[int, float, str]:
    """Sort key, most severe first: unreachable (exbe could not work on the server at all: nothing about it is
    known), failed, stopped by a run-wide cause (:data:`RUN_WIDE`: not attempted, cancelled; reported once, for all
    of them), warnings, passed; then fewest days left; then the name."""
    rank = {"unreachable": 0, "failed": 1, "not_attempted": 2, "cancelled": 2, "warnings": 3, "passed": 4}[verdict(run)]
    days = backend_days_left(run)
    return rank, float("inf") if days is None else days, run.server


def band(days: int | None) -> str:
    """The band a certificate with ``days`` left falls in (:data:`NOT_JUDGED` when verify did not judge it)."""
    if days is None:
        return NOT_JUDGED
    return [label for label, lowest in BANDS if days >= lowest][-1]


def expiry_bands(runs: Sequence[ServerRun]) -> dict[str, int]:
    """How many servers fall in each band, every band present (zero counts too), in order, not judged last."""
    counts = dict.fromkeys([*(label for label, _ in BANDS), NOT_JUDGED], 0)
    for run in runs:
        counts[band(backend_days_left(run))] += 1
    return counts


def render(runs: Sequence[ServerRun], *, mermaid: bool, redact: Redact, task: str | None = None,
           limit: int = LIMIT_BYTES) -> str:
    """The page for ``runs``: Markdown with a Mermaid chart (``mermaid``) or a text bar chart."""
    servers = servers_only(runs)  # the organization's record is a row of the table, not a server of the counts
    per_verdict = {name: sum(verdict(run) == name for run in servers) for name in VERDICTS}
    counts = ", ".join(f"{n} {'with warnings' if name == 'warnings' else name}"
                       for name, n in per_verdict.items() if n)
    head = ["## " + markdown_text(f"{title(task)}: {len(servers)} server(s), {counts or 'none'}"), ""]
    if any(run.simulated for run in runs):
        head += ["**SANDBOX**: simulated Exchange servers; nothing ran on Windows.", ""]
    chart = ["### Back-end certificate expiry", "", *(_mermaid(servers) if mermaid else _text_chart(servers)), ""]
    ordered = sorted(runs, key=severity)
    rows = [_row(run, redact) for run in ordered]
    budget = limit - len("\n".join([*head, *chart]).encode("utf-8")) - 200  # the closing line and the joins
    lines = [markdown_table(HEADERS, [])]
    size = len(lines[0].encode("utf-8"))
    for row in rows:
        line = markdown_table(HEADERS, [row], redact).splitlines()[-1] + "\n"
        size += len(line.encode("utf-8"))
        if size > budget:
            break
        lines.append(line)
    table, kept = "".join(lines), len(lines) - 1
    tail = [f"{len(rows) - kept} more server(s) not shown: the page would pass the platform's size limit; the JUnit "
            "report and the JSON run record have every server.", ""] if kept < len(rows) else []
    return "\n".join([*head, table, *tail, *chart])


def _row(run: ServerRun, redact: Redact) -> list[str]:
    """The row's raw values; :func:`exbe.markdown.markdown_table` redacts and escapes each cell (a cell composed of
    several values has each redacted on its own first)."""
    days = backend_days_left(run)
    why = run.error if run.error_kind else ""  # exbe could not work on it: the one line that says why
    return [run.server, verdict(run), "" if days is None else str(days), certificate(run, redact),
            ", ".join(findings(run, "fail")), ", ".join(findings(run, "warn")), why or ""]


def certificate(run: ServerRun, redact: Redact) -> str:
    """The back-end certificate's story in this run: ``old → new`` when the run put a new one in place, the old one
    alone when it kept it, and a certificate created but not bound (its bind failed and was rolled back) named as
    such, never as the new one. Each thumbprint is redacted on its own before they are composed."""
    old, new, unbound = (redact(value) if value else "" for value in (run.old_thumbprint, new_certificate(run),
                                                                          unbound_certificate(run)))
    if new:
        return f"{old or '(none)'} → {new}"
    if unbound:
        return f"{old or '(none)'} kept; {unbound} created, not bound"
    return old


def _mermaid(runs: Sequence[ServerRun]) -> list[str]:
    counts = {label: n for label, n in expiry_bands(runs).items() if n}
    if not counts:
        return ["No server."]
    return ["```mermaid", "pie showData", "    title Back-end certificates by days left",
            *(f'    "{label}" : {n}' for label, n in counts.items()), "```"]


def _text_chart(runs: Sequence[ServerRun]) -> list[str]:
    counts = expiry_bands(runs)
    most = max(counts.values(), default=0) or 1
    width = max(len(label) for label in counts)
    bars = [f"{label.ljust(width)}  {('#' * round(_BAR_WIDTH * n / most)).ljust(_BAR_WIDTH)}  {n}".rstrip()
            for label, n in counts.items()]
    return ["Back-end certificates by days left:", "", "```text", *bars, "```"]

"""``--html FILE``: the run as one self-contained HTML page, for a browser, a printer or an e-mail.

The fleet at a glance (each server's verdict, back-end certificate days left, thumbprint change), then per server what
needs the admin (failed and warning checks with the reason and the fix, failed steps with the server's own error, the
run-wide cause said once), then what changed. One file: the style is inline, nothing is fetched (no external CSS,
scripts, fonts or images; a Content-Security-Policy that forbids every fetch says so to the browser), so it reads the
same forwarded as an attachment or printed (print styles: no colours needed, no row split across pages).

Every text that came from a server or the configuration is masked (:mod:`exbe.redaction`), made one visible line,
and HTML-escaped: a server cannot inject markup into the page.
"""

from __future__ import annotations

import datetime
import html
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .console import outcome_line, verdict
from .findings import cause, findings, shared_causes
from .organization import servers_only
from .redaction import REDACTOR, Redact, clean
from .status import backend_days

if TYPE_CHECKING:
    from .model import ServerRun
    from .status import ServerStatus

Text = Callable[[object], str]  # a value masked, one line and HTML-escaped

#: The page forbids every fetch: it is complete as written.
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'none'; base-uri 'none'; form-action 'none'"

STYLE = """
body{font:14px/1.4 -apple-system,"Segoe UI",Helvetica,Arial,sans-serif;color:#1b1f23;margin:24px;max-width:1200px}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px;border-bottom:1px solid #d0d7de}
h3{font-size:14px;margin:16px 0 4px}
.meta{color:#57606a;margin:0 0 12px}.sandbox{background:#fff8c5;border:1px solid #d4a72c;padding:6px 10px}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #d0d7de;
vertical-align:top}th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
code{font:12px ui-monospace,Consolas,monospace;word-break:break-all}
.fail,.failed,.error{color:#cf222e;font-weight:600}.warn,.warning{color:#9a6700;font-weight:600}
.pass,.ok{color:#1a7f37}.changed{color:#9a6700}.skip,.skipped{color:#57606a}
.v-failed{background:#ffebe9}.v-warnings{background:#fff8c5}.v-unreachable{background:#ffebe9}
ul{margin:4px 0 8px 20px;padding:0}li{margin:2px 0}.details{color:#57606a}
@media print{body{margin:0;font-size:11px;max-width:none}tr,li{break-inside:avoid}h2{break-after:avoid}
.v-failed,.v-warnings,.v-unreachable,.sandbox{background:none}}
"""


def write_html(runs: Sequence[ServerRun], path: Path, *, redact: Redact | None = None, task: str,
               dry_run: bool = False, wall_time_s: float | None = None,
               statuses: Sequence[ServerStatus] | None = None) -> None:
    """Write the page for ``runs`` of ``task`` (``statuses``: `exbe status`'s rows, shown instead of the recap)."""
    path.write_text(page(runs, redact=redact, task=task, dry_run=dry_run, wall_time_s=wall_time_s,
                         statuses=statuses), encoding="utf-8")


def page(runs: Sequence[ServerRun], *, redact: Redact | None = None, task: str, dry_run: bool = False,
         wall_time_s: float | None = None, statuses: Sequence[ServerStatus] | None = None) -> str:
    redact = REDACTOR.redact if redact is None else redact

    def text(value: object) -> str:
        return html.escape(clean(str(value), redact, one_line=True))

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    title = f"exbe {task}{' (dry run)' if dry_run else ''}"
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           '<link rel="icon" href="data:,">',  # or a browser asks the page's server for /favicon.ico
           f"<title>{text(title)}: {len(servers_only(runs))} servers</title><style>{STYLE}</style></head><body>",
           f"<h1>{text(title)}</h1>",
           f'<p class="meta">{text(now)} &middot; '
           f"{text(outcome_line(runs, wall_time_s or 0.0, dry_run=dry_run)) if statuses is None else len(runs)}"
           f"{'' if statuses is None else ' servers'}</p>"]
    if any(run.simulated for run in runs):
        out.append('<p class="sandbox">SANDBOX: simulated Exchange servers (exbe.sandbox); nothing ran on '
                   "Windows.</p>")
    if statuses is not None:
        out += _status_table(statuses, text)
    else:
        out += _fleet_table(runs, text, dry_run)
    out += _findings(runs, text, redact, dry_run)
    out += _changes(runs, text)
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _fleet_table(runs: Sequence[ServerRun], text: Text, dry_run: bool) -> list[str]:
    rows = ["<h2>The fleet</h2>", "<table><thead><tr><th>server</th><th>verdict</th><th>days left</th>"
            "<th>back-end certificate</th><th>failing checks</th><th>warnings</th></tr></thead><tbody>"]
    for run in runs:
        checks = [c for step in run.steps for c in step.checks]
        failing = [c.id for c in checks if c.status == "fail"]
        warned = [c.id for c in checks if c.status == "warn"]
        left = backend_days(run)
        thumbs = " &rarr; ".join(dict.fromkeys(text(t) for t in (run.old_thumbprint, run.new_thumbprint) if t)) \
            or "-"
        kind = _verdict_class(run)
        rows.append(f'<tr class="v-{kind}"><td>{text(run.server)}</td>'
                    f'<td class="{_word_class(run)}">{text(verdict(run, dry_run=dry_run))}</td>'
                    f'<td class="num">{"-" if left is None else ("EXPIRED" if left <= 0 else left)}</td>'
                    f"<td><code>{thumbs}</code></td><td>{text(', '.join(failing)) or '-'}</td>"
                    f"<td>{text(', '.join(warned)) or '-'}</td></tr>")
    rows.append("</tbody></table>")
    return rows


def _status_table(rows: Sequence[ServerStatus], text: Text) -> list[str]:
    out = ["<h2>Status, most urgent first</h2>", "<table><thead><tr><th>server</th><th>state</th><th>days left</th>"
           "<th>not after</th><th>back-end certificate</th><th>Auth days left</th><th>444 binding</th><th>lock</th>"
           "<th>note</th></tr></thead><tbody>"]
    for row in rows:
        state = {"ok": "pass", "unknown": "fail"}.get(row.state, row.state)
        out.append(f'<tr><td>{text(row.server)}</td><td class="{state}">{text(row.state)}</td>'
                   f'<td class="num">{text("-" if row.days_left is None else row.days_left)}</td>'
                   f"<td>{text((row.not_after or '-')[:10])}</td><td><code>{text(row.thumbprint or '-')}</code></td>"
                   f'<td class="num">{text("-" if row.auth_days_left is None else row.auth_days_left)}</td>'
                   f"<td>{ {True: 'ok', False: 'BROKEN', None: '?'}[row.binding_ok] }</td>"
                   f"<td>{text(row.lock or 'free')}</td><td>{text(row.note)}</td></tr>")
    out.append("</tbody></table>")
    return out


def _findings(runs: Sequence[ServerRun], text: Text, redact: Redact, dry_run: bool) -> list[str]:
    causes = shared_causes(runs)
    said = {run.server for sharing in causes.values() for run in sharing}
    out: list[str] = []
    for kind, sharing in causes.items():
        hit = [run for run in sharing if run.error_kind == kind]
        out.append(f'<h3 class="error">{len(sharing)} of {len(servers_only(runs))} servers: {text(verdict(hit[0]))} '
                   "(one cause)</h3>")
        out.append(f"<ul><li>{text(cause(hit[0]))}</li><li class=\"details\">"
                   f"{text(', '.join(run.server for run in sharing))}</li></ul>")
    for run in runs:
        found = findings(run, redact, cause_said=run.server in said)
        if not found:
            continue
        out.append(f'<h3>{text(run.server)} <span class="{_word_class(run)}">'
                   f"{text(verdict(run, dry_run=dry_run))}</span></h3><ul>")
        for label, what, reason in found:
            if not label:  # the details line of the finding before it
                out.append(f'<li class="details">{html.escape(reason)}</li>')
                continue
            css = {"would fix": "changed", "error": "fail", "failed": "fail"}.get(label, label)
            out.append(f'<li><span class="{html.escape(css)}">{html.escape(label)}</span> '
                       f"<code>{html.escape(what)}</code> {_commands(html.escape(reason))}</li>")
        out.append("</ul>")
    return ["<h2>Findings: what to do</h2>", *out] if out else []


def _commands(escaped: str) -> str:
    """Commands in backticks (an advice's `exbe renew --server X`) as code, to copy whole: ``escaped`` is already
    HTML-escaped, and a backtick is no markup, so nothing a server sent can open an element here."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)


def _changes(runs: Sequence[ServerRun], text: Text) -> list[str]:
    out = [f"<li><b>{text(run.server)}</b> <code>{text(step.step)}</code> {text(step.message)}</li>"
           for run in runs for step in run.steps if step.status == "changed"]
    return ["<h2>What changed</h2>", "<ul>", *out, "</ul>"] if out else ["<h2>What changed</h2>", "<p>nothing</p>"]


def _verdict_class(run: ServerRun) -> str:
    from .report import verdict as kind

    return kind(run)


def _word_class(run: ServerRun) -> str:
    return {"failed": "fail", "unreachable": "fail", "warnings": "warn", "passed": "pass"}[_verdict_class(run)]

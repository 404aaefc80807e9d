"""The console: what an admin reads while a task runs and after it, at 2 a.m. as well as in a pipeline's log.

While the servers run, each server's step lines are printed together when it finishes (concurrent servers never
interleave): inside a collapsible log group on Azure Pipelines (``##[group]``) and GitHub Actions (``::group::``),
plain elsewhere; on a terminal a live count of the servers done stays on the last line of stderr. ``--verbose`` adds
each step's detail under it (before/after, warnings, every check). After the run, in this order:

* **findings**: per server that has any, each failed step, failed or warning check, and warning, with its reason and
  value (the check's message and details, e.g. the thresholds); in a dry run the findings the plan would fix say so;
* **the recap**, in Ansible's style: per server ``ok= changed= unreachable= failed= skipped=`` (steps; a server
  exbe could not connect to is ``unreachable=1``), the thumbprint change and the verdict, then the totals and the
  elapsed time;
* where the reports were written.

Every value from a server or the configuration is redacted and made one visible line (:func:`exbe.redaction.clean`)
and every line goes through the CI reporter's ``safe_line``, so no server string can issue a pipeline command or
drive the terminal. Colour (whole lines, as Ansible colours them) only on a terminal, never with ``NO_COLOR`` set,
always with ``FORCE_COLOR`` set (https://no-color.org, https://force-color.org).
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import IO, TYPE_CHECKING

from . import report, winconsole
from .findings import RUN_WIDE_KINDS, cause, findings, shared_causes, unreachable, without_server
from .organization import is_organization, servers_only
from .redaction import REDACTOR, Redact, clean
from .selection import short
from .status import ServerStatus, backend_days
from .status import table as status_table

if TYPE_CHECKING:
    from .ci import CiReporter
    from .model import ServerRun, StepResult

#: Log group markers by CI reporter name (Azure Pipelines formatting commands; GitHub Actions workflow commands).
GROUPS: dict[str, tuple[str, str]] = {"azure": ("##[group]", "##[endgroup]"), "github": ("::group::", "::endgroup::")}

DRY_RUN_BANNER = "DRY RUN: nothing is changed on any server; each step says what it would do."

#: SGR colours, as Ansible uses them: ok green, changed yellow, failed/unreachable red, skipped cyan.
_SGR = {"green": "32", "yellow": "33", "red": "31", "cyan": "36", "bold": "1"}
_STATUS_COLOUR = {"ok": "green", "changed": "yellow", "failed": "red", "skipped": "cyan", "pass": "green",
                  "warn": "yellow", "fail": "red", "skip": "cyan", "warning": "yellow", "would fix": "yellow",
                  "error": "red"}

#: ServerRun.error_kind values that are not a connection failure but still mean no work was done.
NOT_RUN_KINDS = {"not_attempted": "NOT ATTEMPTED", "cancelled": "CANCELLED"}
#: Connection failures the server did not cause: the logon (refused, or none to give) is the run's, not the host's.
LOGON_KINDS = {"auth": "AUTH FAILED", "no_credentials": "NO CREDENTIALS"}


def colour_wanted(env: Mapping[str, str], stream: IO[str]) -> bool:
    """Colour for ``stream``: never with ``NO_COLOR`` (set and not empty), always with ``FORCE_COLOR`` (set, not
    empty, not ``0``/``false``), else only on a terminal that is not ``TERM=dumb``."""
    if env.get("NO_COLOR"):
        return False
    force = env.get("FORCE_COLOR", "").strip().lower()
    if force and force not in ("0", "false", "no", "off"):
        return True
    return _isatty(stream) and env.get("TERM") != "dumb"


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty() and winconsole.ansi_ready(stream)  # a Windows console in virtual-terminal mode
    except (AttributeError, ValueError):  # a closed or unusual stream is no terminal
        return False


def verdict(run: ServerRun, *, dry_run: bool = False) -> str:
    """One server's outcome (:func:`exbe.report.verdict`) in the recap's words, which are exbe's own (never
    redacted, never from a server): a server exbe did not try says why; a dry run says whether it would change."""
    kind = report.verdict(run)
    if kind in ("unreachable", "cancelled", "not_attempted"):
        return {**NOT_RUN_KINDS, **LOGON_KINDS}.get(run.error_kind or "", "UNREACHABLE")
    if dry_run:
        if plan_blocked(run):
            return "BLOCKED"
        plan = "would change" if any(step.status == "changed" for step in run.steps) else "no change needed"
        left = sum(check.status == "fail" for step in run.steps for check in step.checks)
        if left:
            return f"{plan} ({left} finding(s) the plan does not fix)"
        return f"{plan} (with warnings)" if kind == "warnings" else plan
    if kind == "failed":
        return "FAILED"
    return "passed with warnings" if kind == "warnings" else "passed"


def plan_blocked(run: ServerRun) -> bool:
    """A dry run's verdict on one server: no plan could be made -- the server could not be worked on, or a step
    failed or the server said it would fail. Verify's findings block nothing: those a planned step fixes are marked
    so (exbe.plan.planned_fixes), the others are what the real run's verify will report again."""
    return run.error is not None or any(step.status == "failed" and not step.checks for step in run.steps)


def dry_run_exit_code(runs: Sequence[ServerRun]) -> int:
    """0 when a plan could be made for every server, 1 when something blocks one."""
    return report.EXIT_FAILED if any(plan_blocked(run) for run in runs) else report.EXIT_OK


def counts(run: ServerRun) -> dict[str, int]:
    """Ansible's recap counters for one server, counted over its steps: ``ok`` includes ``changed`` (as in Ansible);
    a server exbe could not connect to is ``unreachable=1`` rather than a failed step."""
    lost = unreachable(run)
    tally = {"ok": 0, "changed": 0, "unreachable": int(lost), "failed": 0, "skipped": 0}
    for step in run.steps:
        if lost and step.step == "connect":
            continue
        if step.status in ("ok", "changed"):
            tally["ok"] += 1
        if step.status == "changed":
            tally["changed"] += 1
        elif step.status == "failed":
            tally["failed"] += 1
        elif step.status == "skipped":
            tally["skipped"] += 1
    return tally


# -- the recap table ---------------------------------------------------------------------------------------------------
def summary_table(runs: Sequence[ServerRun], *, redact: Redact | None = None, dry_run: bool = False) -> str:
    """The recap: one line per server (``name : ok=N changed=N unreachable=N failed=N skipped=N``, the thumbprint
    change, the verdict) and a total line. Each cell is masked on its own and kept on one line, with control
    characters shown as ``\\xNN``."""
    redact = REDACTOR.redact if redact is None else redact

    def cell(text: str) -> str:
        return clean(text, redact, one_line=True)

    names = [cell(run.server) for run in runs]
    width = max([len("total"), *map(len, names)])
    tallies = [counts(run) for run in runs]
    total = {key: sum(t[key] for t in tallies) for key in ("ok", "changed", "unreachable", "failed", "skipped")}
    digits = {key: len(str(value)) for key, value in total.items()}
    thumbs = [_thumbprints(run, cell) for run in runs]
    thumb_width = max([1, *map(len, thumbs)])
    days = [_days(backend_days(run)) for run in runs]
    days_width = max([1, *map(len, days)])

    def numbers(tally: Mapping[str, int]) -> str:
        return "  ".join(f"{key}={tally[key]:<{digits[key]}}" for key in total)

    lines = [f"{name:<{width}} : {numbers(tally)}  {thumb:<{thumb_width}}  {left:>{days_width}}  "
             f"{verdict(run, dry_run=dry_run)}"
             for name, tally, thumb, left, run in zip(names, tallies, thumbs, days, runs, strict=True)]
    lines.append(f"{'total':<{width}} : {numbers(total)}")
    return "\n".join(lines)


def _thumbprints(run: ServerRun, cell: Redact) -> str:
    # masked whole before the cut to 8 characters, so the cut cannot leave a piece of a secret unmasked
    old, new = cell(run.old_thumbprint or "")[:8], cell(run.new_thumbprint or "")[:8]
    if not old and not new:
        return "-"
    if not new or new == old:
        return old or new
    return f"{old or '?'} -> {new}"


def _days(left: int | None) -> str:
    """The back-end certificate's days left as the recap shows them: ``1825d``, ``EXPIRED``, ``-`` (unknown)."""
    if left is None:
        return "-"
    return "EXPIRED" if left <= 0 else f"{left}d"


def outcome_line(runs: Sequence[ServerRun], elapsed_s: float, *, dry_run: bool = False) -> str:
    """``30 servers in 12.4 s: 20 passed, 2 passed with warnings, 6 FAILED, 1 UNREACHABLE, 1 NOT ATTEMPTED``."""
    tally: dict[str, int] = {}
    servers = servers_only(runs)
    for run in servers:
        word = verdict(run, dry_run=dry_run)
        tally[word] = tally.get(word, 0) + 1
    parts = ", ".join(f"{n} {word}" for word, n in sorted(tally.items(), key=lambda item: _verdict_order(item[0])))
    noun = "server" if len(servers) == 1 else "servers"
    organization = "".join(f"; the organization: {verdict(run, dry_run=dry_run)}" for run in runs
                           if is_organization(run))
    return f"{len(servers)} {noun} in {elapsed_s:.1f} s: {parts or 'nothing to do'}{organization}"


def _verdict_order(word: str) -> tuple[int, str]:
    order = ("passed", "no change", "would change", "FAILED", "BLOCKED", "UNREACHABLE", "AUTH FAILED", "NO CREDENTIALS",
             "NOT ATTEMPTED", "CANCELLED")
    return next((i for i, prefix in enumerate(order) if word.startswith(prefix)), len(order)), word


# -- findings ----------------------------------------------------------------------------------------------------------
def step_details(step: StepResult, redact: Redact) -> list[tuple[str, str]]:
    """``--verbose``: a step's before/after, data summary, warnings and every check, as ``(status, text)`` lines."""
    def value(data: object) -> str:
        return clean(json.dumps(data, sort_keys=True, default=str), redact, one_line=True)

    lines: list[tuple[str, str]] = []
    for key, data in (("before", step.before), ("after", step.after)):
        if data:
            lines.append(("", f"{key}: {value(data)}"))
    lines.extend(("warning", f"warning: {clean(w, redact, one_line=True)}") for w in step.warnings)
    for check in step.checks:
        message = without_server(clean(check.message, redact, one_line=True), step.server)
        lines.append((check.status, f"{check.status:<4} {check.id}: {message}"))
        if check.details:
            lines.append((check.status, f"     {clean(check.details, redact, one_line=True)}"))
    return lines


class Console:
    """The console of one task run; its ``step`` method is the flow's progress callback and ``finished`` its
    per-server callback (both thread-safe)."""

    def __init__(self, reporter: CiReporter, *, task: str, verbose: bool = False, dry_run: bool = False,
                 env: Mapping[str, str] | None = None, out: IO[str] | None = None, err: IO[str] | None = None,
                 redact: Redact | None = None) -> None:
        self.reporter = reporter
        self.task = task
        self.verbose = verbose
        self.dry_run = dry_run
        self._out = out
        self._err = err
        self._redact = REDACTOR.redact if redact is None else redact
        env = dict(env or {})
        self._colour = colour_wanted(env, self.out)
        self._live = reporter.name == "plain" and _isatty(self.err) and not env.get("CI")
        self._lock = threading.Lock()
        self._total = 0
        self._done = 0  # servers finished; of them, failed and unreachable (the live line counts, not recounts)
        self._failed = 0
        self._lost = 0
        self._last = ""
        self._started = time.monotonic()
        self._running: dict[str, tuple[str, float]] = {}  # server -> (its step under way, when the server began)
        self._causes: dict[str, str] = {}  # run-wide cause kind -> the server whose line said it in full
        self._ticking = threading.Event()
        self._noted = 0.0  # when the last "still running" line was printed (off a terminal)

    @property
    def out(self) -> IO[str]:
        return self._out or sys.stdout

    @property
    def err(self) -> IO[str]:
        return self._err or sys.stderr

    # -- while the servers run ---------------------------------------------------------------------------------------
    def start(self, servers: int, concurrency: int) -> None:
        """The opening lines: the DRY RUN banner in a dry run, then what runs where."""
        self._total = servers
        self._started = time.monotonic()
        with self._lock:
            if self.dry_run:
                self._print(self.err, DRY_RUN_BANNER, "bold")
            noun = "server" if servers == 1 else "servers"
            self._print(self.out, f"exbe {self.task}{' (dry run)' if self.dry_run else ''}: {servers} {noun}, "
                                  f"{min(concurrency, servers) or 1} at a time")
            self._status()
        self._ticking.clear()
        threading.Thread(target=self._tick, name="exbe-console", daemon=True).start()

    def began(self, server: str, step: str) -> None:
        """A step began on a server (the flow's callback): the progress names what is still running, and since when."""
        with self._lock:
            since = self._running.get(server, ("", time.monotonic()))[1]
            self._running[server] = (step, since)
            self._status()

    def running(self, now: float | None = None) -> str:
        """The servers still running, longest first, with their step and elapsed time:
        ``sim-exch03 preflight 85 s, sim-exch07 verify 2 s``."""
        now = time.monotonic() if now is None else now
        ordered = sorted(self._running.items(), key=lambda item: item[1][1])
        return ", ".join(f"{clean(name, self._redact, one_line=True)} {step} {now - since:.0f} s"
                         for name, (step, since) in ordered)

    #: Off a terminal (a CI log), a line naming the servers still running every this many seconds of silence.
    NOTE_EVERY_S = 30.0

    def _tick(self) -> None:
        """Once a second: the live line's elapsed times move; off a terminal, a slow server is named every
        :data:`NOTE_EVERY_S` seconds (a host that accepts TCP and never answers is seen, not guessed)."""
        while not self._ticking.wait(1.0):
            with self._lock:
                if self._live:
                    self._status()
                elif self._running and time.monotonic() - max(self._noted, self._started) >= self.NOTE_EVERY_S:
                    self._noted = time.monotonic()
                    self._print(self.err, f"exbe {self.task}: still running: {self.running()}")

    def step(self, server: str, step: str, status: str, message: str) -> None:
        """A step finished on a server: only the live count moves (the lines come when the server finishes)."""
        with self._lock:
            self._last = f"{server} {step} {status}"
            self._status()

    def finished(self, run: ServerRun) -> None:
        """A server finished: its step lines, together (in a log group in CI), with details when verbose."""
        with self._lock:
            self._running.pop(run.server, None)
            kind = run.error_kind or ""
            first = self._causes.setdefault(kind, run.server) if kind in RUN_WIDE_KINDS else run.server
        lines = self.server_lines(run) if first == run.server else [(
            "failed", self.reporter.progress_line(run.server, "connect", "failed",
                                                  f"{verdict(run)}: the same cause as {first} (above)"))]
        with self._lock:
            self._noted = time.monotonic()
            self._clear_status()
            group = GROUPS.get(self.reporter.name)
            if group:
                self._write(self.out, group[0] + self.reporter.safe_line(
                    f"{clean(run.server, self._redact, one_line=True)}: {verdict(run, dry_run=self.dry_run)}"))
            for status, line in lines:
                self._print(self.out, line, _STATUS_COLOUR.get(status))
            if group:
                self._write(self.out, group[1])
            self._done += 1
            self._lost += unreachable(run)
            self._failed += run.failed and not unreachable(run)
            self._status()

    def server_lines(self, run: ServerRun) -> list[tuple[str, str]]:
        """One server's block as ``(status, line)``: a line per step, and with ``--verbose`` each step's detail."""
        lines: list[tuple[str, str]] = []
        for step in run.steps:
            lines.append((step.status, self.reporter.progress_line(run.server, step.step, step.status,
                                                                   step.message)))
            lines.extend(("", f"{'':<21}kept {short(str(thumb))}: {clean(str(why), self._redact, one_line=True)}")
                         for thumb, why in step.data.get("kept") or [] if step.step == "cleanup")
            if self.verbose:
                lines.extend((status, f"{'':<21}{text}") for status, text in step_details(step, self._redact))
        if self.verbose:
            lines.extend(("warning", f"{'':<21}warning: {clean(w, self._redact, one_line=True)}")
                         for w in run.warnings)
        return lines

    # -- after the run -----------------------------------------------------------------------------------------------
    def close(self, runs: Sequence[ServerRun], reports: Sequence[tuple[str, str]] = ()) -> None:
        """Findings, the recap with totals and elapsed time, and where the reports were written."""
        elapsed = self._stop()
        with self._lock:
            self._findings(runs)
            title = "RECAP (DRY RUN)" if self.dry_run else "RECAP"
            self._print(self.out, "")
            self._print(self.out, f"{title} exbe {self.task}", "bold")
            *rows, total = summary_table(runs, redact=self._redact, dry_run=self.dry_run).splitlines()
            for run, line in zip(runs, rows, strict=True):
                self._print(self.out, line, _recap_colour(run))
            self._print(self.out, total)
            self._print(self.out, outcome_line(runs, elapsed, dry_run=self.dry_run), "bold")
            self._reports(reports)

    def close_status(self, rows: Sequence[ServerStatus], reports: Sequence[tuple[str, str]] = ()) -> None:
        """`exbe status`: one line per server, most urgent first, then the count and where reports went."""
        elapsed = self._stop()
        with self._lock:
            colours = {"fail": "red", "unknown": "red", "warn": "yellow", "ok": "green"}
            for state, line in status_table(rows, self._redact):
                self._print(self.out, line, colours.get(state, "bold"))
            tally = {state: sum(row.state == state for row in rows) for state in ("ok", "warn", "fail", "unknown")}
            parts = ", ".join(f"{n} {state}" for state, n in tally.items() if n)
            noun = "server" if len(rows) == 1 else "servers"
            self._print(self.out, f"{len(rows)} {noun} in {elapsed:.1f} s: {parts or 'none'}", "bold")
            self._reports(reports)

    def _stop(self) -> float:
        """The run is over: the ticker and the live line stop; returns the elapsed time."""
        self._ticking.set()
        with self._lock:
            self._clear_status()
            self._live = False
        return time.monotonic() - self._started

    def _reports(self, reports: Sequence[tuple[str, str]]) -> None:
        if reports:
            where = ", ".join(f"{kind} {clean(path, self._redact, one_line=True)}" for kind, path in reports)
            self._print(self.out, f"reports: {where}")

    def _findings(self, runs: Sequence[ServerRun]) -> None:
        causes = shared_causes(runs)
        said = {run.server for hit in causes.values() for run in hit}
        blocks = [(run, findings(run, self._redact, cause_said=run.server in said)) for run in runs]
        blocks = [(run, found) for run, found in blocks if found]
        if not blocks and not causes:
            return
        self._print(self.out, "")
        self._print(self.out, "FINDINGS (would fix: the plan changes it; fail/warn: the plan leaves it)"
                    if self.dry_run else "FINDINGS", "bold")
        for kind, sharing in causes.items():
            hit = [run for run in sharing if run.error_kind == kind]
            first = clean(cause(hit[0]), self._redact, one_line=True)
            self._print(self.out, f"{len(sharing)} of {len(servers_only(runs))} servers  {verdict(hit[0])} "
                                  "(one cause, said once)",
                        "red")
            self._print(self.out, f"  {'error':<10}connect  {first}", "red")
            names = ", ".join(clean(run.server, self._redact, one_line=True) for run in hit)
            self._print(self.out, f"  {'':<10}servers  {names}")
            others = [run for run in sharing if run.error_kind != kind]
            if others:
                names = ", ".join(clean(run.server, self._redact, one_line=True) for run in others)
                self._print(self.out, f"  {'':<10}not attempted, so the account does not lock out: {names}")
        for run, found in blocks:
            self._print(self.out, f"{clean(run.server, self._redact, one_line=True)}  "
                                  f"{verdict(run, dry_run=self.dry_run)}", _recap_colour(run))
            width = max(len(what) for _, what, _ in found)
            for label, what, reason in found:
                self._print(self.out, f"  {label:<10}{what:<{width}}  {reason}", _STATUS_COLOUR.get(label))

    # -- output ------------------------------------------------------------------------------------------------------
    def _print(self, stream: IO[str], text: str, colour: str | None = None) -> None:
        line = self.reporter.safe_line(text) if text else ""
        if colour and self._colour and line:
            line = f"\x1b[{_SGR[colour]}m{line}\x1b[0m"
        self._write(stream, line)

    @staticmethod
    def _write(stream: IO[str], line: str) -> None:
        stream.write(line + "\n")
        stream.flush()

    def _status(self) -> None:
        """The live count on a terminal: ``[12/30] verify: 3 failed, 1 unreachable  sim-exch13 bind ok``."""
        if not self._live or not self._total:
            return
        parts = [f"{self._failed} failed" if self._failed else "",
                 f"{self._lost} unreachable" if self._lost else ""]
        summary = ", ".join(p for p in parts if p) or "no failure yet"
        last = clean(self._last, self._redact, one_line=True)
        running = self.running()
        line = f"[{self._done}/{self._total}] {self.task}: {summary}  " + \
            (f"running: {running}" if running else last)
        width = shutil.get_terminal_size((80, 24)).columns - 1  # one screen line, or \r cannot take it back
        self.err.write("\r\x1b[K" + self.reporter.safe_line(line)[:width])
        self.err.flush()

    def _clear_status(self) -> None:
        if self._live and self._total:
            self.err.write("\r\x1b[K")
            self.err.flush()


def _recap_colour(run: ServerRun) -> str:
    if unreachable(run) or run.failed:
        return "red"
    if run.error_kind in NOT_RUN_KINDS:
        return "cyan"
    return "yellow" if any(step.status == "changed" for step in run.steps) else "green"


def sandbox_catalogue(scenarios: Mapping[str, Mapping[str, object]], mixed: Sequence[str],
                      faults: Mapping[str, tuple[type, str]]) -> list[str]:
    """``exbe sandbox --list``: each scenario with what it changes from the baseline (``*``: in the default
    ``mixed`` set), and each fault kind with its value and what it does."""
    def flat(prefix: str, value: object) -> list[str]:
        if isinstance(value, Mapping) and value:
            return [item for key, inner in value.items() for item in flat(f"{prefix}.{key}" if prefix else key, inner)]
        return [f"{prefix}={json.dumps(value)}"]

    width = max(map(len, scenarios), default=0)
    lines = ["scenarios (EXBE_SANDBOX_SCENARIOS, --scenarios; * = in 'mixed', the default):"]
    for name, overrides in scenarios.items():
        changes = ", ".join(flat("", overrides)) if overrides else "the baseline: a healthy server"
        lines.append(f"  {name:<{width}} {'*' if name in mixed else ' '} {changes}")
    lines += ["", "fault kinds (EXBE_SANDBOX_FAULTS, --faults: 'sim-exch02:kind[=value],...;*:kind'):"]
    width = max((len(kind) + len(_fault_value(typ)) for kind, (typ, _) in faults.items()), default=0)
    for kind, (typ, what) in faults.items():
        lines.append(f"  {kind + _fault_value(typ):<{width}}  {what}")
    return lines


def _fault_value(typ: type) -> str:
    return {bool: "", int: "=N", str: "=NAME"}.get(typ, "=VALUE")

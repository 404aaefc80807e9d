"""What every task does around the flow: settings from config and flags (exbe.config, exbe.settings), server
selection (exbe.inventory), the embedded sandbox, reports, CI annotations, the exit code. Tasks in ``exbe.tasks``
only forward their flags here; everything they give is checked before the first server is contacted."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invoke.exceptions import Exit

from .errors import ConfigError, ExbeError
from .redaction import REDACTOR
from .safe_write import WriteRefused, check_writable
from .signals import EXIT_CANCELLED, cancel_on_signals

if TYPE_CHECKING:
    from .fleet import Cancel
    from .model import ServerRun
    from .settings import Defaults

SANDBOX_BANNER = ("SANDBOX: --sandbox: exbe runs against simulated Exchange servers on this machine (exbe.sandbox). "
                  "Nothing runs on Windows; the configured inventory, if any, is not used.")
NO_INVENTORY = ("no inventory is configured (looked for {looked}): configure exbe.inventory for your servers "
                "(docs/configuration.md), or try exbe on simulated servers with --sandbox")


@dataclasses.dataclass
class TaskOptions:
    """Flags common to the tasks (None = the setting applies). Flags that override a setting arrive as Invoke parses
    them (``--days`` as text) and are checked by exbe.settings like any other source."""

    server: list[str] = dataclasses.field(default_factory=list)
    all: bool = False
    group: str | None = None
    shard: str | None = None
    days: int | None = None
    force: bool = False
    dry_run: bool = False
    no_trust: bool = False
    smtp: str | None = None
    #: ``--restart-iis`` (True: when needed) or ``--restart-iis=VALUE`` (see :func:`parse_restart_iis`)
    restart_iis: bool | str | None = False
    cleanup: bool = False
    min_age: int | None = None
    thumbprint: str | None = None
    junit: str | None = None
    json: str | None = None
    metrics: str | None = None  # --metrics: the Prometheus textfile (exbe.metrics)
    html: str | None = None  # --html: one self-contained page for a browser, a printer or a mail (exbe.html_report)
    sandbox: bool = False
    keep_going: bool = False
    verbose: bool = False  # the console shows each step's detail (exbe.console)
    run: str | None = None  # `exbe unlock --run R`: remove only that run's lock
    yes: bool = False  # `exbe unlock --yes`: remove whatever lock is there
    output: str | None = None  # `exbe render --output F`: the hand-run script's file
    jobs: Any = None  # `exbe auth` / `exbe federation`: their own flags (exbe.jobs.JobFlags)


def _write_metrics(runs: Any, path: Any, **kwargs: Any) -> None:
    """exbe.metrics imports prometheus_client, a sixth of a task's start-up: only when --metrics is given."""
    from .metrics import write_metrics

    write_metrics(runs, path, **kwargs)


def run_task(c: Any, task: str, options: TaskOptions) -> None:
    """Run ``task`` with ``options`` on the selected servers; raises invoke's Exit with the exit code.

    Everything the operator gave (flags, settings, report paths, the inventory, credentials) is checked before the
    first server is contacted: a bad value is one line and exit code 2, with nothing attempted.
    """
    from .ci import detect
    from .config import Credentials, load
    from .console import Console, dry_run_exit_code
    from .fleet import Cancel, RunOptions, cancel_grace
    from .html_report import write_html
    from .inventory import select_servers, servers
    from .jobs import job_runner, run_job
    from .locations import inventory_locations
    from .model import Settings
    from .redaction import install_log_filter
    from .report import exit_code, verdict, write_json, write_junit
    from .transport import check_auth_available

    install_log_filter()
    reporter = detect(os.environ)
    cancel = Cancel()
    try:
        refuse_flag_controls(options)
        restart_always = parse_restart_iis(options.restart_iis)
        loaded = load(c.config, os.environ, flag_values(options))
        for warning in loaded.warnings:
            print(f"exbe: warning: {warning}", file=sys.stderr)
            reporter.warning(warning)
        defaults = loaded.defaults
        settings = Settings.of(defaults, force=options.force, dry_run=options.dry_run)
        refuse_disagreeing_days(defaults)
        thumbprint = parse_thumbprint(options.thumbprint)
        if options.shard:
            from .shard import parse_shard

            parse_shard(options.shard)
        junit = writable_report("--junit", options.junit)
        record = None if options.json == "-" else writable_report("--json", options.json)
        html = writable_report("--html", options.html, example="exbe.html")
        metrics = writable_report("--metrics", options.metrics)
        if defaults.template_dir:
            from .render import check_template_dir

            check_template_dir(defaults.template_dir)
        if not options.sandbox and not loaded.inventory:
            raise ConfigError(NO_INVENTORY.format(looked=looked_for(c.config)))
        with _inventory(loaded.inventory, defaults, sandbox=options.sandbox) as (inventory, credentials, sandbox):
            if credentials is None:
                credentials = Credentials.from_env(os.environ)
            if credentials.password is not None:
                reporter.mask(credentials.password.reveal())
            chosen = select_servers(servers(inventory, defaults), options.server, options.all, options.group,
                                    options.shard)
            credentials.check(chosen)
            check_auth_available(chosen)
            locations = {} if sandbox else inventory_locations(c.config)  # where annotations may point
            if sandbox:
                print(SANDBOX_BANNER, file=sys.stderr)
            run_options = RunOptions(template_dir=template_dir(defaults), thumbprint=thumbprint,
                                     cleanup=options.cleanup, keep_going=options.keep_going,
                                     restart_always=restart_always, cancel=cancel, unlock_run=options.run,
                                     unlock_any=options.yes)
            console = Console(reporter, task=task, verbose=options.verbose, dry_run=settings.dry_run, env=os.environ)
            run_options = dataclasses.replace(run_options, finished=None if task == "status" and not options.verbose
                                              else console.finished,
                                              began=console.began)
            console.start(len(chosen), defaults.concurrency)
            progress = console.step
            started = time.monotonic()
            with cancel_on_signals(cancel, cancel_grace(chosen)):
                runs = job_runner(task, options.jobs, defaults, run_job)(
                    chosen, JOB_OF.get(task, task), credentials, settings, run_options, progress, defaults.concurrency)
            wall_time_s = time.monotonic() - started
            for run in runs:
                run.simulated = sandbox
    except ExbeError as exc:
        reporter.error(REDACTOR.redact(str(exc)))
        raise Exit(REDACTOR.redact(f"exbe: {exc}"), code=exc.exit_code) from None

    redact = REDACTOR.redact
    unwritten = []
    written: list[tuple[str, str]] = []
    if task == "status":
        _status_end(runs, settings, console, record, html, sandbox=sandbox, json_stdout=options.json == "-")
        return
    for kind, path, write in (("JUnit", junit, functools.partial(write_junit, task=task, wall_time_s=wall_time_s,
                                                                 locations=locations)),
                              ("JSON", record, write_json),
                              ("metrics", metrics, functools.partial(_write_metrics, task=task,
                                                                     wall_time_s=wall_time_s, shard=options.shard)),
                              ("HTML", html, functools.partial(write_html, task=task, dry_run=settings.dry_run,
                                                               wall_time_s=wall_time_s))):
        if path is not None:
            try:
                write(runs, path, redact=redact)
                written.append((kind, str(path)))
            except OSError as exc:  # checked before the run; the path can still vanish or fill up meanwhile
                unwritten.append(f"exbe: cannot write {path}: {exc.strerror or exc}")
    console.close(runs, written)
    for line in error_lines(runs):
        print(f"exbe: {redact(line)}", file=sys.stderr)
    if credentials.uses_logon and any(_logon_failure(run.error) for run in runs):
        print(f"exbe: {NO_CREDENTIALS}", file=sys.stderr)
    for line in unwritten:
        print(redact(line), file=sys.stderr)
    if any(run.simulated for run in runs):
        print("SANDBOX: these were simulated servers; nothing ran on Windows.", file=sys.stderr)
    reporter.publish(runs, task=task, locations=locations)
    code = max(dry_run_exit_code(runs) if settings.dry_run else exit_code(runs), 1 if unwritten else 0)
    if cancel.requested:
        print(f"exbe: {cancelled_line(runs, cancel)}", file=sys.stderr)
        code = EXIT_CANCELLED
    reporter.finish("failed" if code else ("warnings" if any(verdict(run) == "warnings" for run in runs)
                                            else "succeeded"))
    if cancel.abandoned:
        # steps still run in worker threads, which the interpreter would wait for at exit: the reports are
        # written and closed, so end now
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    if code:
        raise Exit(code=code)


#: The job each exbe task runs (exbe.jobs.JOBS): `exbe status` is preflight's read, judged and shown by exbe.status.
JOB_OF = {"status": "preflight"}


def error_lines(runs: list[ServerRun]) -> list[str]:
    """The servers' errors for stderr after the run: a run-wide cause once for all the servers that share it, the
    others one line each (the cancelled ones are counted in one line of their own)."""
    from .findings import cause, shared_causes

    causes = shared_causes(runs)
    said = {run.server for sharing in causes.values() for run in sharing}
    lines = []
    for kind, sharing in causes.items():
        hit = [run for run in sharing if run.error_kind == kind]
        lines.append(f"{len(hit)} servers ({', '.join(run.server for run in hit)}): {cause(hit[0])}"
                     + (f"; {len(sharing) - len(hit)} more not attempted" if len(sharing) > len(hit) else ""))
    lines += [run.error for run in runs
              if run.error and run.error_kind != "cancelled" and run.server not in said]
    return lines


def _status_end(runs: list[ServerRun], settings: Any, console: Any, record: Path | None, html: Path | None, *,
                sandbox: bool, json_stdout: bool) -> None:
    """`exbe status`: the table (most urgent first), ``--json`` (a file, or ``-`` for standard output), ``--html``;
    exit 1 when a server could not be read or would fail verify's binding or days check."""
    from . import status
    from .console import verdict
    from .html_report import write_html

    rows = status.statuses(runs, settings, {run.server: verdict(run) for run in runs})
    redact = REDACTOR.redact
    written = []
    if record is not None:
        record.write_text(status.document(rows, simulated=sandbox, redact=redact), encoding="utf-8")
        written.append(("JSON", str(record)))
    if html is not None:
        write_html(runs, html, redact=redact, task="status", statuses=rows)
        written.append(("HTML", str(html)))
    console.close_status(rows, written)
    if json_stdout:
        sys.stdout.write(status.document(rows, simulated=sandbox, redact=redact))
    if sandbox:
        print("SANDBOX: these were simulated servers; nothing ran on Windows.", file=sys.stderr)
    code = status.exit_code(rows)
    if code:
        raise Exit(code=code)


def cancelled_line(runs: list[ServerRun], cancel: Cancel) -> str:
    """The one line a cancelled run ends with: how many servers finished, stopped between steps, were left running
    and did not start."""
    cancelled = [run for run in runs if run.error_kind == "cancelled"]
    unstarted = sum(1 for run in cancelled if [step.step for step in run.steps] == ["connect"])
    running = sum(1 for run in cancelled if "stopped waiting" in (run.error or ""))
    parts = [f"{len(runs) - len(cancelled)} of {len(runs)} server(s) finished",
             f"{len(cancelled) - unstarted - running} stopped before their next step"]
    if running:
        parts.append(f"{running} left running (outcome unknown)")
    parts.append(f"{unstarted} did not start")
    return f"cancelled ({cancel.reason}): {', '.join(parts)}; the reports mark each cancelled server"


def parse_restart_iis(value: bool | str | None) -> bool:
    """``--restart-iis`` as given: whether the renew chain restarts IIS always (``=always``) rather than when needed
    (the bare flag, or ``=needed``); any other value is a usage error."""
    if value is None or isinstance(value, bool):
        return False
    wanted = value.strip().lower()
    if wanted not in ("needed", "always"):
        raise ConfigError(f"--restart-iis takes no value (restart IIS when this run changed a binding or W3SVC/WAS "
                          f"are not running) or =always (restart every time), got {value!r}")
    return wanted == "always"


#: Said once after the failures when no credentials were given and a server refused the logon or the handshake.
NO_CREDENTIALS = ("no credentials were given (EXBE_USERNAME and EXBE_PASSWORD are not set), so exbe used this "
                  "agent's own logon; set both to connect as a named account")


def _logon_failure(error: str | None) -> bool:
    """A connection failure that missing credentials can cause (authentication, or a handshake that never started:
    spnego without credentials fails before anything is sent)."""
    from .errors import CONNECTION_KINDS

    return bool(error) and any(CONNECTION_KINDS[kind][0] in str(error) for kind in ("auth", "no_credentials"))


def refuse_disagreeing_days(defaults: Defaults) -> None:
    """``days`` below ``warn_days`` would make verify warn (or fail) about a certificate that renew calls healthy and
    will not renew: the advice `exbe renew` would fix nothing. Refused in one line, before anything runs."""
    if defaults.days < defaults.warn_days:
        raise ConfigError(f"days ({defaults.days}) is below warn_days ({defaults.warn_days}): verify would warn about "
                          "a certificate that renew leaves alone; set days (--days, EXBE_DAYS, exbe.defaults.days) to "
                          f"at least {defaults.warn_days}, or lower warn_days (and fail_days) to days or below")


def looked_for(config: Any) -> str:
    """Where the entry point that made ``config`` looked for configuration files, as the no-inventory error names
    them: the ``exbe`` command reads exbe.yaml and EXBE_RUNTIME_CONFIG, plain ``invoke`` its own invoke.yaml
    (beside tasks.py) and INVOKE_RUNTIME_CONFIG."""
    from .config import ExbeConfig

    name, variable = ("exbe", "EXBE_RUNTIME_CONFIG") if isinstance(config, ExbeConfig) else \
        ("invoke", "INVOKE_RUNTIME_CONFIG")
    project = getattr(config, "_project_prefix", None)
    where = [f"{name}.yaml, {name}.yml, {name}.json in {Path(project) if project else os.getcwd()}",
             f"/etc/{name}.yaml", f"~/.{name}.yaml"]
    runtime = getattr(config, "_runtime_path", None)
    where.append(f"the -f file {runtime}" if runtime else f"the -f file and {variable} (neither given)")
    return ", ".join(where)


def flag_values(options: TaskOptions) -> dict[str, Any]:
    """The flags of ``options`` that override a setting and were given (``{"--days": "45", "--no-trust": True}``)."""
    from .settings import BY_FLAG

    given: dict[str, Any] = {}
    for flag in BY_FLAG:
        value = getattr(options, flag.lstrip("-").replace("-", "_"))
        if value is not None and value is not False:
            given[flag] = value
    return given


def refuse_flag_controls(options: TaskOptions) -> None:
    """Control characters in any text flag (``--server``, ``--group``, ``--junit``...) are a usage error, as in every
    setting (:func:`exbe.settings.refuse_controls`)."""
    from .settings import refuse_controls

    for field in dataclasses.fields(options):
        value = getattr(options, field.name)
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str):
                refuse_controls(text, "--" + field.name.replace("_", "-"))


def parse_thumbprint(value: str | None) -> str | None:
    """``--thumbprint`` as 40 upper-case hex digits (spaces, as certmgr shows them, allowed), or a usage error."""
    if value is None:
        return None
    wanted = value.replace(" ", "").upper()
    if not re.fullmatch(r"[0-9A-F]{40}", wanted):
        raise ConfigError(f"--thumbprint must be 40 hexadecimal digits, got {value!r}")
    return wanted


def writable_report(flag: str, value: str | None, example: str = "exbe.xml") -> Path | None:
    """The report path of ``flag``, made sure to be writable before anything runs: its directory is created when
    missing, and a path that cannot be written is a usage error (the run would change servers, then lose the
    record). ``example`` is the file name suggested when ``value`` is a directory."""
    if not value:
        return None
    path = Path(value)
    if path.is_dir():
        raise ConfigError(f"{flag} {value!r} is a directory; give a file name, such as {path / example}")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"{flag} {value!r} cannot be written: {ancestor} is a file, not a directory; choose "
                          "another path")
    try:
        check_writable(path, flag)
    except WriteRefused:
        raise
    except OSError as exc:
        raise ConfigError(f"{flag} {value!r} cannot be written ({exc.strerror or exc}); choose a path this agent "
                          "can write") from None
    return path


def template_dir(defaults: Defaults) -> Path | None:
    """The site's template override directory (``exbe.defaults.template_dir``), if any."""
    return Path(defaults.template_dir) if defaults.template_dir else None


@contextlib.contextmanager
def _inventory(entries: list[Any], defaults: Defaults, *, sandbox: bool) -> Iterator[tuple[list[Any], Any, bool]]:
    """The configured inventory, or with ``--sandbox`` an embedded sandbox fleet in a state directory of its own
    (never the foreground ``exbe sandbox``'s)."""
    if not sandbox:
        yield entries, None, False
        return
    from .config import Credentials
    from .redaction import Secret

    try:
        from .sandbox.faults import parse_fleet_faults
        from .sandbox.fleet import Fleet, plan_hosts
    except ImportError as exc:  # a production install: the sandbox is the exbe[sandbox] extra
        raise ConfigError(f"--sandbox needs the sandbox, which is not installed ({exc.name} is missing): "
                          "`pip install 'exbe[sandbox]'`") from None

    sandbox_settings = defaults.sandbox
    try:
        hosts = plan_hosts(sandbox_settings.hosts, sandbox_settings.scenarios)
    except ValueError as exc:
        raise ConfigError(f"{exc} (exbe.defaults.sandbox.scenarios or EXBE_SANDBOX_SCENARIOS)") from None
    try:
        faults = parse_fleet_faults(sandbox_settings.faults)
    except ValueError as exc:
        raise ConfigError(f"{exc} (exbe.defaults.sandbox.faults or EXBE_SANDBOX_FAULTS)") from None
    state_dir = Path(sandbox_settings.state_dir) if sandbox_settings.state_dir else None  # None: removed at the end
    fleet = Fleet(state_dir, hosts, faults=faults, latency_ms=sandbox_settings.latency_ms,
                  fresh=sandbox_settings.fresh)
    with fleet:
        REDACTOR.add(fleet.password)
        yield fleet.inventory(), Credentials(username=fleet.username, password=Secret(fleet.password)), True


"""The exbe tasks. Each one only gathers its flags and hands them to ``exbe.cli.run_task``; the runbook itself reads
top-down in ``exbe.jobs.backend``: preflight -> renew -> trust -> bind -> (restart) -> verify -> (cleanup)."""

from __future__ import annotations

import inspect
import sys
import typing
from collections.abc import Callable
from typing import Any

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import Task, task

from . import yaml_only
from .cli import (
    TaskOptions,
    flag_values,
    parse_thumbprint,
    refuse_disagreeing_days,
    refuse_flag_controls,
    run_task,
    template_dir,
    writable_report,
)
from .config import collection_config
from .settings import BY_FLAG, SandboxDefaults, flag_help

SELECT_HELP = {
    "server": "server to act on: inventory name or host name (repeatable)",
    "all": "every server in the inventory",
    "group": "every server of this inventory group",
    "shard": "i/n: only the i-th of n stable shards of the selected servers (parallel pipeline jobs)",
    "junit": "write JUnit XML here (a testsuite per server)",
    "json": "write the JSON run record here",
    "metrics": "write the run as Prometheus metrics here (node_exporter's textfile collector: a .prom file)",
    "html": "write the run as one self-contained HTML page here (to open, print or forward by mail)",
    "dry-run": "change nothing; show what would change",
    "keep-going": "try every server even after one refused the credentials (each try is a bad logon: lockout risk)",
    "sandbox": "run on simulated Exchange servers on this machine (exbe's sandbox; nothing runs on Windows)",
    "verbose": "show each step's detail on the console: before/after, warnings, every check with its details",
}


#: The help of the flags that override a setting comes from the setting's declaration (exbe.settings).
SETTING_HELP = {flag.lstrip("-"): flag_help(flag) for flag in BY_FLAG}

#: A task's body: the Context, then its flags; it reports through exceptions (Exit), not a return value.
#: Invoke takes a flag's kind from its default, never from these annotations. ``--days`` and ``--min-age`` default to
#: None (not given: the setting applies), so from the command line they arrive as text, which exbe.settings parses
#: and checks like an environment variable's; they are annotated as TaskOptions declares them.
TaskBody = Callable[..., None]

#: What a flag takes, as ``exbe <task> --help`` shows it; flags annotated ``int`` show INT.
METAVARS = {"server": "NAME", "group": "NAME", "shard": "I/N", "junit": "FILE", "json": "FILE", "metrics": "FILE",
            "html": "FILE", "output": "FILE", "run": "RUN_ID", "smtp": "keep|move", "thumbprint": "THUMBPRINT",
            "restart-iis": "always", "scenarios": "mixed|LIST", "faults": "SPEC", "state-dir": "DIR",
            "inventory": "FILE", "cer": "FILE", "domain": "DOMAIN"}


class ExbeTask(Task[TaskBody]):
    """Invoke's Task, plus what each flag takes (``metavars``) for help: Invoke shows every value as STRING."""

    def __init__(self, body: TaskBody, *args: Any, **kwargs: Any) -> None:
        super().__init__(body, *args, **kwargs)
        self.metavars = metavars(body)


def metavars(body: TaskBody) -> dict[str, str]:
    """``{flag: metavar}`` for ``body``'s flags: :data:`METAVARS`, else INT for a flag annotated ``int``."""
    found = {}
    for name, hint in typing.get_type_hints(body).items():
        flag = name.replace("_", "-").strip("-")
        if flag in METAVARS:
            found[flag] = METAVARS[flag]
        elif int in (typing.get_args(hint) or (hint,)):
            found[flag] = "INT"
    return found


def exbe_task(*, optional: tuple[str, ...] = (), **extra_help: str) -> Callable[[TaskBody], Task[TaskBody]]:
    """``@task`` with the shared flag help, limited to the flags the task has (Invoke refuses help for others);
    ``optional``: flags that may be given with or without a value (Invoke: True when bare)."""
    def decorate(fn: TaskBody) -> Task[TaskBody]:
        names = {p.replace("_", "-").rstrip("-") for p in inspect.signature(fn).parameters}
        given = {**SELECT_HELP, **SETTING_HELP, **{k.replace("_", "-"): v for k, v in extra_help.items()}}
        help_ = {k: v for k, v in given.items() if k in names}
        # what task(fn, **options) returns, typed (invoke.tasks.task is declared to return a bare Callable)
        return ExbeTask(fn, iterable=["server"], optional=list(optional), help=help_, auto_shortflags=False)
    return decorate


@exbe_task()
def preflight(c: Context, server: list[str] | None = None, all_: bool = False, group: str | None = None,
              shard: str | None = None, junit: str | None = None, json_: str | None = None, metrics: str | None = None,
        html: str | None = None,
        sandbox: bool = False, keep_going: bool = False, verbose: bool = False) -> None:
    """Read both endpoints and select the back-end certificate; change nothing."""
    run_task(c, "preflight", TaskOptions(server=server or [], all=all_, group=group, shard=shard, junit=junit,
                                         json=json_, metrics=metrics,
        html=html, sandbox=sandbox,
        keep_going=keep_going, verbose=verbose))


@exbe_task(force="renew even when the certificate is healthy", cleanup="remove superseded certificates when verify "
           "passes and they are --min-age days old", optional=("restart_iis",),
           restart_iis=f"{SETTING_HELP['restart-iis']}; --restart-iis=always restarts every time")
def renew(c: Context, server: list[str] | None = None, all_: bool = False, group: str | None = None,
          shard: str | None = None, days: int | None = None, force: bool = False, dry_run: bool = False,
          no_trust: bool = False, smtp: str | None = None, restart_iis: str | None = None, cleanup: bool = False,
          min_age: int | None = None, junit: str | None = None, json_: str | None = None, metrics: str | None = None,
        html: str | None = None,
        sandbox: bool = False, keep_going: bool = False, verbose: bool = False) -> None:
    """Renew the back-end certificate where needed, trust it, bind it to 444, verify (the whole chain)."""
    run_task(c, "renew", TaskOptions(server=server or [], all=all_, group=group, shard=shard, days=days, force=force,
                                     dry_run=dry_run, no_trust=no_trust, smtp=smtp, restart_iis=restart_iis,
                                     cleanup=cleanup, min_age=min_age, junit=junit, json=json_, metrics=metrics,
        html=html,
                                     sandbox=sandbox,
        keep_going=keep_going, verbose=verbose))


@exbe_task(thumbprint="trust this certificate instead of the selected one")
def trust(c: Context, server: list[str] | None = None, all_: bool = False, group: str | None = None,
          shard: str | None = None, thumbprint: str | None = None, dry_run: bool = False, junit: str | None = None,
          json_: str | None = None, metrics: str | None = None,
        html: str | None = None,
        sandbox: bool = False, keep_going: bool = False, verbose: bool = False) -> None:
    """Put the back-end certificate's public part in LocalMachine\\Root when it is absent."""
    run_task(c, "trust", TaskOptions(server=server or [], all=all_, group=group, shard=shard, thumbprint=thumbprint,
                                     dry_run=dry_run, junit=junit, json=json_, metrics=metrics,
        html=html, sandbox=sandbox,
        keep_going=keep_going, verbose=verbose))


@exbe_task(thumbprint="bind this certificate (from LocalMachine\\My) instead of the "
                                               "selected one")
def bind(c: Context, server: list[str] | None = None, all_: bool = False, group: str | None = None,
         shard: str | None = None, thumbprint: str | None = None, dry_run: bool = False, junit: str | None = None,
         json_: str | None = None, metrics: str | None = None,
        html: str | None = None,
        sandbox: bool = False, keep_going: bool = False, verbose: bool = False) -> None:
    """Bind the back-end certificate to Exchange Back End *:444: (and 127.0.0.1:443 where it was)."""
    run_task(c, "bind", TaskOptions(server=server or [], all=all_, group=group, shard=shard, thumbprint=thumbprint,
                                    dry_run=dry_run, junit=junit, json=json_, metrics=metrics,
        html=html, sandbox=sandbox,
        keep_going=keep_going, verbose=verbose))


@exbe_task()
def restart(c: Context, server: list[str] | None = None, all_: bool = False, group: str | None = None,
            shard: str | None = None, dry_run: bool = False, junit: str | None = None,
            json_: str | None = None, metrics: str | None = None,
        html: str | None = None,
        sandbox: bool = False, keep_going: bool = False, verbose: bool = False) -> None:
    """iisreset, one server at a time, waiting for W3SVC to come back."""
    run_task(c, "restart", TaskOptions(server=server or [], all=all_, group=group, shard=shard, dry_run=dry_run,
                                       junit=junit, json=json_, metrics=metrics,
        html=html, sandbox=sandbox,
        keep_going=keep_going, verbose=verbose))


@exbe_task()
def verify(c: Context, server: list[str] | None = None, all_: bool = False, group: str | None = None,
           shard: str | None = None, junit: str | None = None, json_: str | None = None, metrics: str | None = None,
        html: str | None = None,
        sandbox: bool = False, keep_going: bool = False, verbose: bool = False) -> None:
    """Check the back end as HealthChecker would, plus a TLS and HTTP probe of port 444 from this agent."""
    run_task(c, "verify", TaskOptions(server=server or [], all=all_, group=group, shard=shard, junit=junit,
                                      json=json_, metrics=metrics,
        html=html, sandbox=sandbox,
        keep_going=keep_going, verbose=verbose))


@exbe_task()
def cleanup(c: Context, server: list[str] | None = None, all_: bool = False, group: str | None = None,
            shard: str | None = None, min_age: int | None = None, dry_run: bool = False, junit: str | None = None,
            json_: str | None = None, metrics: str | None = None,
        html: str | None = None,
        sandbox: bool = False, keep_going: bool = False, verbose: bool = False) -> None:
    """Remove superseded self-signed back-end certificates (and Root copies) that nothing uses, after verify."""
    run_task(c, "cleanup", TaskOptions(server=server or [], all=all_, group=group, shard=shard, min_age=min_age,
                                       dry_run=dry_run, junit=junit, json=json_, metrics=metrics,
        html=html, sandbox=sandbox,
        keep_going=keep_going, verbose=verbose))


@exbe_task(json="write the status lines as JSON here (- for standard output)")
def status(c: Context, server: list[str] | None = None, all_: bool = False, group: str | None = None,
           shard: str | None = None, json_: str | None = None, html: str | None = None, sandbox: bool = False,
           keep_going: bool = False, verbose: bool = False) -> None:
    """When does what expire: one line per server, most urgent first (read-only; preflight's read).

    Each line: the certificate bound to Exchange Back End *:444:, its NotAfter and days left, the Auth certificate's
    days left, whether the 444 binding is sound, and whether an exbe run holds the server's lock. Exit code 1 when a
    server could not be read or would fail verify's binding or days check."""
    run_task(c, "status", TaskOptions(server=server or [], all=all_, group=group, shard=shard, json=json_, html=html,
                                      sandbox=sandbox, keep_going=keep_going, verbose=verbose))


@exbe_task(run="remove the lock only when this run holds it (its id is in the lock step of that run's report)",
           yes="remove whatever lock is there, after showing it (the run holding it may still be at work)")
def unlock(c: Context, server: list[str] | None = None, all_: bool = False, group: str | None = None,
           shard: str | None = None, run: str | None = None, yes: bool = False, junit: str | None = None,
           json_: str | None = None, sandbox: bool = False, verbose: bool = False) -> None:
    """Show exbe's lock on each server, then remove it: an expired one always, a held one with --run or --yes.

    A pipeline that was cancelled or killed removes its own lock with `exbe unlock --server X --run R`; that never
    removes another run's lock. The removed record stays on the server as last-run.json, so the next run reports
    the interrupted run and converges from the facts."""
    run_task(c, "unlock", TaskOptions(server=server or [], all=all_, group=group, shard=shard, run=run, yes=yes,
                                      junit=junit, json=json_, sandbox=sandbox, verbose=verbose))


#: The scripts `exbe render` writes (the manual path's tasks).
RENDERABLE = ("renew", "verify", "trust", "bind", "cleanup")


@exbe_task(hybrid="acknowledge a hybrid organization: stage anyway, write the next certificate's public part (.cer) "
                  "and print what to do in Entra before its effective date",
           ignore_unreachable="act although a selected server could not be read (MEAC's IgnoreUnreachableServers)",
           cer="with --hybrid: write the next Auth certificate's public part here (default auth-next-<thumb>.cer)")
def auth(c: Context, server: list[str] | None = None, all_: bool = False, group: str | None = None,
         shard: str | None = None, dry_run: bool = False, hybrid: bool = False, ignore_unreachable: bool = False,
         cer: str | None = None, junit: str | None = None, json_: str | None = None, metrics: str | None = None,
         sandbox: bool = False, keep_going: bool = False, verbose: bool = False) -> None:
    """The organization's Auth certificate: read it once, then stage, replace or publish as MEAC's rule says.

    The first selected server reads and changes the organization (Set-AuthConfig is organization-wide); every
    selected server is locked meanwhile and checked for the current and next certificates."""
    from .jobs.flags import JobFlags

    run_task(c, "auth", TaskOptions(server=server or [], all=all_, group=group, shard=shard, dry_run=dry_run,
                                    junit=junit, json=json_, metrics=metrics, sandbox=sandbox, keep_going=keep_going,
                                    verbose=verbose, jobs=JobFlags(hybrid=hybrid, ignore_unreachable=ignore_unreachable,
                                                                   cer=cer)))


@exbe_task(publish="publish the staged next certificate once every server has it (Set-FederationTrust "
                   "-PublishFederationCertificate)", domain="the federated domain whose DNS TXT proof is printed")
def federation(c: Context, server: list[str] | None = None, all_: bool = False, group: str | None = None,
               shard: str | None = None, dry_run: bool = False, publish: bool = False, domain: str | None = None,
               junit: str | None = None, json_: str | None = None, metrics: str | None = None,
               sandbox: bool = False, keep_going: bool = False, verbose: bool = False) -> None:
    """The Federation trust's certificate before it expires: stage a next one, print its DNS proof, publish it.

    An expired one is refused with Microsoft's procedure (the trust is removed and created again by a human)."""
    from .jobs.flags import JobFlags

    run_task(c, "federation", TaskOptions(server=server or [], all=all_, group=group, shard=shard, dry_run=dry_run,
                                          junit=junit, json=json_, metrics=metrics, sandbox=sandbox,
                                          keep_going=keep_going, verbose=verbose,
                                          jobs=JobFlags(publish=publish, domain=domain)))


@task(klass=ExbeTask, positional=["task_name"], iterable=["server"], auto_shortflags=False, help={
    "task-name": f"the script to write: {', '.join(RENDERABLE)}", "days": flag_help("--days"),
    "force": "renew even when healthy", "smtp": flag_help("--smtp"), "no-trust": flag_help("--no-trust"),
    "thumbprint": "act on this certificate of LocalMachine\\My instead of the selected one",
    "output": "write here (UTF-8 with BOM) instead of standard output",
    "server": "accepted for symmetry; the script runs on the server"})
def render(c: Context, task_name: str | None = None, server: list[str] | None = None, days: int | None = None,
           force: bool = False, smtp: str | None = None, no_trust: bool = False, thumbprint: str | None = None,
           output: str | None = None) -> None:
    """Print one script (renew, verify, trust, bind or cleanup) to run by hand in the Exchange Management Shell.

    For servers without WinRM access: `exbe render renew > renew.ps1`, then run it in an elevated EMS (Windows
    PowerShell 5.1) on the server; -WhatIf shows what it would change. The script judges by the same settings and
    rules as the pipeline: they travel in its input document."""
    import os

    from .config import load
    from .errors import ExbeError
    from .model import Settings
    from .render import manual_input, render_manual, to_file_bytes
    from .safe_write import write_atomically

    if not task_name:
        raise Exit(f"exbe: which script? `exbe render renew` (or {', '.join(RENDERABLE[1:])})", code=2)
    try:
        options = TaskOptions(server=server or [], days=days, force=force, smtp=smtp, no_trust=no_trust,
                              thumbprint=thumbprint, output=output)
        refuse_flag_controls(options)
        wanted = parse_thumbprint(thumbprint)
        script = writable_report("--output", output, example=f"{task_name}.ps1")
        loaded = load(c.config, os.environ, flag_values(options))
        for warning in loaded.warnings:
            print(f"exbe: warning: {warning}", file=sys.stderr)
        defaults = loaded.defaults
        refuse_disagreeing_days(defaults)
        settings = Settings.of(defaults, force=force)
        text = render_manual(task_name, manual_input(settings, thumbprint=wanted), override_dir=template_dir(defaults))
    except (ExbeError, ValueError) as exc:
        raise Exit(f"exbe: {exc}", code=2) from None
    if script:
        written = to_file_bytes(text)
        write_atomically(script, written, "--output")
        print(f"exbe: wrote {script}: the {task_name} script, {len(written):,} bytes, {text.count(chr(10)):,} lines, "
              "UTF-8 with BOM (what Windows PowerShell 5.1 reads); its header says how to run it", file=sys.stderr)
    else:
        sys.stdout.write(text)


#: The foreground fleet's flags start from the embedded sandbox's declared settings, except its state directory,
#: which is its own.
SANDBOX = SandboxDefaults()
FOREGROUND_STATE_DIR = ".exbe-sandbox"


@task(klass=ExbeTask, auto_shortflags=False, help={
            "hosts": f"number of hosts sim-exch01..sim-exchNN (default {SANDBOX.hosts})",
            "scenarios": "'mixed' or a comma list cycled over the hosts (see exbe.sandbox.state.scenario_names)",
            "faults": "per-host faults, e.g. 'sim-exch02:bind_com_error;*:latency_ms=50'",
            "latency-ms": "added latency per request on every host", "state-dir": "where host state lives",
            "inventory": "write the exbe configuration (exbe.yaml) for this fleet here", "https": "inventory uses "
            "Basic over HTTPS (sandbox CA) instead of NTLM over HTTP", "keep": "reuse existing host state",
            "list": "print the scenarios and fault kinds, and start nothing"})
def sandbox(c: Context, hosts: int = SANDBOX.hosts, scenarios: str = SANDBOX.scenarios, faults: str = SANDBOX.faults,
            latency_ms: int = SANDBOX.latency_ms, state_dir: str = FOREGROUND_STATE_DIR,
            inventory: str = "sandbox-inventory.yaml", https: bool = False, keep: bool = False,
            list_: bool = False) -> None:
    """Run a sandbox fleet in the foreground until Ctrl-C (simulated Exchange servers; nothing runs on Windows)."""
    if list_:
        from .console import sandbox_catalogue

        try:
            from .sandbox.faults import FAULT_KINDS
            from .sandbox.fleet import MIXED_SCENARIOS
            from .sandbox.state import scenario_overrides
        except ImportError as exc:
            raise Exit(f"exbe: the sandbox is not installed ({exc.name} is missing): `pip install 'exbe[sandbox]'`",
                       code=2) from None

        for line in sandbox_catalogue(scenario_overrides(), MIXED_SCENARIOS, FAULT_KINDS):
            print(line)
        return
    from .errors import ExbeError
    from .settings import Field, fields_of, refuse_controls

    try:
        from .sandbox.cli import serve
        from .sandbox.faults import parse_fleet_faults
        from .sandbox.fleet import plan_hosts
    except ImportError as exc:  # a production install: the sandbox is the exbe[sandbox] extra
        raise Exit(f"exbe: the sandbox is not installed ({exc.name} is missing): `pip install 'exbe[sandbox]'`",
                   code=2) from None

    # Every flag is checked before a host starts: a bad one is one line and exit 2, as in every other task.
    declared = {field.name: field for field in fields_of(SandboxDefaults) if isinstance(field, Field)}
    try:
        for name, value in (("hosts", hosts), ("scenarios", scenarios), ("faults", faults),
                            ("latency_ms", latency_ms), ("state_dir", state_dir)):
            flag = "--" + name.replace("_", "-")
            declared[name].checked(declared[name].typed(value, flag), flag)
        refuse_controls(inventory, "--inventory")
        plan_hosts(int(hosts), scenarios)
        parse_fleet_faults(faults)
        writable_report("--inventory", inventory, example="sandbox-inventory.yaml")
    except (ExbeError, ValueError) as exc:
        raise Exit(f"exbe: {exc}", code=2) from None
    serve(hosts=int(hosts), scenarios=scenarios, faults=faults, latency_ms=int(latency_ms), state_dir=state_dir,
          inventory=inventory, https=https, keep=keep)


yaml_only.install()  # plain `invoke` loads tasks.py, then the project's and -f's files: never as Python

#: The task table: a new task is one function above and one entry here.
ns = Collection(preflight, renew, trust, bind, restart, verify, cleanup, status, unlock, auth, federation, render,
                sandbox)
ns.configure(collection_config())

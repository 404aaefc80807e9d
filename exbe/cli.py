"""What every task does around the flow: settings from config and flags, server selection, the embedded sandbox,
reports, CI annotations, the exit code. Tasks in ``exbe.tasks`` only forward their flags here."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from invoke.exceptions import Exit

from .errors import ConfigError, ExbeError
from .redaction import REDACTOR

if TYPE_CHECKING:
    from .model import Settings

SANDBOX_BANNER = ("SANDBOX: no inventory is configured, so exbe runs against simulated Exchange servers on this "
                  "machine (exbe.sandbox). Nothing runs on Windows. Configure exbe.inventory for real servers.")


@dataclasses.dataclass
class TaskOptions:
    """Flags common to the tasks (None = take the configured default)."""

    server: list[str] = dataclasses.field(default_factory=list)
    all: bool = False
    group: str | None = None
    shard: str | None = None
    days: int | None = None
    force: bool = False
    dry_run: bool = False
    no_trust: bool = False
    smtp: str | None = None
    restart_iis: bool = False
    cleanup: bool = False
    min_age: int | None = None
    thumbprint: str | None = None
    junit: str | None = None
    json: str | None = None


def run_task(c: Any, task: str, options: TaskOptions) -> None:
    """Run ``task`` with ``options`` on the selected servers; raises invoke's Exit with the exit code."""
    from .ci import detect
    from .config import Credentials, defaults_dict, load_inventory, select_servers
    from .flow import RunOptions, run_fleet
    from .redaction import install_log_filter
    from .report import exit_code, summary_table, write_json, write_junit

    install_log_filter()
    reporter = detect(os.environ)
    try:
        cfg = c.config.exbe
        defaults = defaults_dict(cfg)
        settings = _settings(defaults, options)
        with _inventory(cfg, defaults) as (inventory, credentials, sandbox):
            if credentials is None:
                credentials = Credentials.from_env(os.environ)
            if credentials.password is not None:
                reporter.mask(credentials.password.reveal())
            servers = select_servers(load_inventory({**dict(cfg), "inventory": inventory}), options.server,
                                     options.all, options.group, options.shard)
            credentials.check(servers)
            if sandbox:
                print(SANDBOX_BANNER, file=sys.stderr)
            run_options = RunOptions(
                template_dir=template_dir(defaults),
                thumbprint=options.thumbprint.upper() if options.thumbprint else None,
                cleanup=options.cleanup,
            )
            progress = _Progress(reporter)
            runs = run_fleet(servers, task, credentials, settings, run_options, progress,
                             int(defaults["concurrency"]))
    except ExbeError as exc:
        reporter.error(REDACTOR.redact(str(exc)))
        raise Exit(REDACTOR.redact(f"exbe: {exc}"), code=exc.exit_code) from None

    redact = REDACTOR.redact
    if options.junit:
        write_junit(runs, Path(options.junit), redact=redact)
    if options.json:
        write_json(runs, Path(options.json), redact=redact)
    for line in summary_table(runs, redact=redact).splitlines():
        print(reporter.safe_line(line))
    for run in runs:
        if run.error:
            print(f"exbe: {redact(run.error)}", file=sys.stderr)
    _annotate(reporter, runs)
    code = exit_code(runs)
    reporter.finish("failed" if code else ("warnings" if _has_warnings(runs) else "succeeded"))
    if code:
        raise Exit(code=code)


def template_dir(defaults: dict[str, Any]) -> Path | None:
    """The site's template override directory (``exbe.defaults.template_dir``), if any."""
    return Path(defaults["template_dir"]) if defaults.get("template_dir") else None


def _settings(defaults: dict[str, Any], options: TaskOptions) -> Settings:
    from .model import Settings

    smtp = options.smtp or defaults["smtp"]
    if smtp not in ("keep", "move"):
        raise ConfigError(f"--smtp must be 'keep' or 'move', not {smtp!r}")
    smtp = cast(Literal["keep", "move"], smtp)
    return Settings(
        days=int(options.days if options.days is not None else defaults["days"]),
        force=options.force,
        smtp=smtp,
        trust=bool(defaults["trust"]) and not options.no_trust,
        dry_run=options.dry_run,
        min_age_days=int(options.min_age if options.min_age is not None else defaults["min_age_days"]),
        restart_iis=options.restart_iis or bool(defaults["restart_iis"]),
        backend_site=defaults["backend_site"],
        frontend_site=defaults["frontend_site"],
        friendly_name=defaults["friendly_name"],
        warn_days=int(defaults["warn_days"]),
        fail_days=int(defaults["fail_days"]),
    )


@contextlib.contextmanager
def _inventory(cfg: Any, defaults: dict[str, Any]) -> Iterator[tuple[list[dict[str, Any]], Any, bool]]:
    """The configured inventory, or, when there is none, an embedded sandbox fleet (the new user's default)."""
    inventory = list(cfg.get("inventory") or [])
    if inventory:
        yield inventory, None, False
        return
    from .config import Credentials
    from .redaction import Secret

    try:
        from .sandbox.faults import parse_fleet_faults
        from .sandbox.fleet import Fleet, plan_hosts
    except ImportError as exc:  # a production install: the sandbox is the exbe[sandbox] extra
        raise ConfigError(f"no inventory is configured and the sandbox is not installed ({exc.name} is missing): "
                          "configure exbe.inventory for real servers, or `pip install 'exbe[sandbox]'` to try exbe on "
                          "simulated ones") from None

    sandbox = defaults["sandbox"]
    state_dir = Path(sandbox["state_dir"] or tempfile.mkdtemp(prefix="exbe-sandbox-"))
    fleet = Fleet(state_dir, plan_hosts(int(sandbox["hosts"]), sandbox["scenarios"]),
                  faults=parse_fleet_faults(sandbox["faults"]), latency_ms=int(sandbox["latency_ms"]),
                  fresh=bool(sandbox.get("fresh", True)))
    with fleet:
        REDACTOR.add(fleet.password)
        yield fleet.inventory(), Credentials(username=fleet.username, password=Secret(fleet.password)), True


class _Progress:
    """One line per server and step, as they finish (thread-safe)."""

    def __init__(self, reporter: Any) -> None:
        self._reporter = reporter
        self._lock = threading.Lock()

    def __call__(self, server: str, step: str, status: str, message: str) -> None:
        line = self._reporter.safe_line(REDACTOR.redact(f"{server:<10} {step:<9} {status:<8} {message}"))
        with self._lock:
            print(line, flush=True)


def _annotate(reporter: Any, runs: list[Any]) -> None:
    for run in runs:
        for step in run.steps:
            if step.status == "failed":
                reporter.error(REDACTOR.redact(f"{run.server} {step.step}: {step.message}"), server=run.server)
            for check in step.checks:
                if check.status == "fail":
                    reporter.error(REDACTOR.redact(f"{run.server} {check.id}: {check.message}"), server=run.server)
                elif check.status == "warn":
                    reporter.warning(REDACTOR.redact(f"{run.server} {check.id}: {check.message}"), server=run.server)
        if run.new_thumbprint and run.new_thumbprint != run.old_thumbprint:
            reporter.set_output(f"{run.server}_new_thumbprint", run.new_thumbprint)
    reporter.summary([[run.server, "failed" if run.failed else "ok", run.old_thumbprint or "",
                       run.new_thumbprint or ""] for run in runs])


def _has_warnings(runs: list[Any]) -> bool:
    return any(c.status == "warn" for run in runs for step in run.steps for c in step.checks)

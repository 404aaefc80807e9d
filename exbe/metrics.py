"""``--metrics FILE``: the run in the Prometheus text exposition format, for node_exporter's textfile collector.

Point the collector at a directory (``--collector.textfile.directory``) and write the file there with a ``.prom``
name; node_exporter serves it with its own metrics, and the file's age tells when exbe last ran. The series, each
label value passed through the redactor:

* ``exbe_backend_certificate_days_left{server}``: days the bound back-end certificate had left when verify judged
  it, for every server verify judged (a server it did not judge has no sample: absent, not zero);
* ``exbe_check_status{server,check,exbe_check_status}``: one series per check status (pass, warn, fail, skip), 1 for
  the status the check had, 0 for the others (prometheus_client's Enum, an OpenMetrics state set);
* ``exbe_server_verdict{server,exbe_server_verdict}``: the same for each server's verdict (passed, warnings, failed,
  unreachable);
* ``exbe_run_duration_seconds{task}``, ``exbe_run_success{task}`` (1 when exbe exits 0), ``exbe_run_timestamp_seconds
  {task}`` (when the run ended), ``exbe_run_servers{task,verdict}`` and ``exbe_run_info{task,version,simulated}``.

An alert on ``exbe_backend_certificate_days_left < 30`` or on ``time() - exbe_run_timestamp_seconds > 2 * 86400``
covers both a certificate running out and a nightly run that stopped running. The file is rendered by
prometheus_client and written atomically (:func:`exbe.report.write_atomically`), so the collector never reads half
of it.
"""

from __future__ import annotations

import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Enum, Gauge, generate_latest

from . import __version__
from .model import ServerRun
from .redaction import REDACTOR, Redact
from .report import EXIT_OK, VERDICTS, backend_days_left, checks, exit_code, verdict, write_atomically

CHECK_STATES = ["pass", "warn", "fail", "skip"]


def render_metrics(runs: list[ServerRun], *, task: str, wall_time_s: float, redact: Redact | None = None,
                   finished_at: float | None = None) -> str:
    """The text exposition of ``runs`` (see the module doc); ``finished_at`` is a Unix time (None: now)."""
    redact = REDACTOR.redact if redact is None else redact
    registry = CollectorRegistry(auto_describe=True)
    days = Gauge("exbe_backend_certificate_days_left", "Days the bound Exchange back-end certificate had left when "
                 "exbe verified it", ["server"], registry=registry)
    status = Enum("exbe_check_status", "Status of each exbe verify check per server", ["server", "check"],
                  states=CHECK_STATES, registry=registry)
    verdicts = Enum("exbe_server_verdict", "What exbe's run came to on each server", ["server"],
                    states=list(VERDICTS), registry=registry)
    for run in runs:
        server = redact(run.server)
        verdicts.labels(server=server).state(verdict(run))
        left = backend_days_left(run)
        if left is not None:
            days.labels(server=server).set(left)
        for check in checks(run):
            status.labels(server=server, check=check.id).state(check.status)
    run_labels = {"task": task}
    Gauge("exbe_run_duration_seconds", "Wall time of the exbe run", ["task"], registry=registry).labels(
        **run_labels).set(wall_time_s)
    Gauge("exbe_run_success", "1 when the exbe run passed (exit code 0), else 0", ["task"], registry=registry).labels(
        **run_labels).set(1 if exit_code(runs) == EXIT_OK else 0)
    Gauge("exbe_run_timestamp_seconds", "When the exbe run ended (Unix time)", ["task"], registry=registry).labels(
        **run_labels).set(time.time() if finished_at is None else finished_at)
    servers = Gauge("exbe_run_servers", "Servers of the exbe run per verdict", ["task", "verdict"], registry=registry)
    for name in VERDICTS:
        servers.labels(task=task, verdict=name).set(sum(verdict(run) == name for run in runs))
    Gauge("exbe_run_info", "The exbe run: its task, exbe's version and whether the servers were simulated",
          ["task", "version", "simulated"], registry=registry).labels(
        task=task, version=__version__, simulated="true" if any(run.simulated for run in runs) else "false").set(1)
    return generate_latest(registry).decode("utf-8")


def write_metrics(runs: list[ServerRun], path: Path, *, task: str, wall_time_s: float,
                  redact: Redact | None = None) -> None:
    """Write :func:`render_metrics` to ``path`` atomically. Raises :class:`exbe.report.ReportWriteError`."""
    write_atomically(Path(path), render_metrics(runs, task=task, wall_time_s=wall_time_s, redact=redact), "metrics")

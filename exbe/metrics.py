"""``--metrics FILE``: the run in the Prometheus text exposition format, for node_exporter's textfile collector.

Point the collector at a directory (``--collector.textfile.directory``) and write the file there with a ``.prom``
name; node_exporter serves it with its own metrics. Several exbe files may share that directory -- the shards of a
nightly run, a renew, a verify -- because the collector merges them into one exposition: a family that two files
declare must have the same HELP and TYPE in both (it does: one definition here), and no two files may hold the same
series, or node_exporter drops the second ("collected before with the same name and label values") while the
scrape still answers 200. So every series carries the labels ``task`` and ``shard`` (``1/4``; ``all`` for a run
without ``--shard``), which differ between the files of different runs. The series, each label value passed through
the redactor:

* ``exbe_backend_certificate_not_after_timestamp_seconds{server}``: when the bound back-end certificate expires
  (its NotAfter, Unix time), for every server verify judged (a server it did not judge has no sample: absent, not
  zero). Days left are computed at query time, so they never freeze between runs:
  ``(exbe_backend_certificate_not_after_timestamp_seconds - time()) / 86400``;
* ``exbe_check_status{server,check,exbe_check_status}``: one series per check status (pass, warn, fail, skip), 1 for
  the status the check had, 0 for the others (prometheus_client's Enum, an OpenMetrics state set); the organization's
  checks (``auth_organization``, :mod:`exbe.checks_org`) under ``server="organization"``, which no other series
  counts as a server;
* ``exbe_server_verdict{server,exbe_server_verdict}``: the same for each server's verdict (passed, warnings, failed,
  unreachable);
* ``exbe_run_duration_seconds``, ``exbe_run_success`` (1 when exbe exits 0), ``exbe_run_timestamp_seconds`` (when
  the run ended), ``exbe_run_servers{verdict}`` and ``exbe_run_info{version,simulated}``.

docs/pipelines.md shows the PromQL for days left and alert rules (a certificate running out, a nightly run that
stopped running). The file is rendered by prometheus_client and written atomically
(:func:`exbe.report.write_atomically`), so the collector never reads half of it.
"""

from __future__ import annotations

import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Enum, Gauge, generate_latest

from . import __version__
from .model import ServerRun
from .organization import is_organization, servers_only
from .redaction import REDACTOR, Redact
from .report import EXIT_OK, VERDICTS, backend_not_after, checks, exit_code, verdict, write_atomically

CHECK_STATES = ["pass", "warn", "fail", "skip"]
#: The ``shard`` label of a run that was not sharded (it covers all its selected servers).
ALL_SHARDS = "all"
#: Labels on every series: which run wrote it, so files of different runs never hold the same series.
RUN_LABELS = ("task", "shard")


def render_metrics(runs: list[ServerRun], *, task: str, wall_time_s: float, redact: Redact | None = None,
                   finished_at: float | None = None, shard: str | None = None) -> str:
    """The text exposition of ``runs`` (see the module doc); ``finished_at`` is a Unix time (None: now), ``shard``
    the run's ``--shard`` (None: :data:`ALL_SHARDS`)."""
    redact = REDACTOR.redact if redact is None else redact
    run = {"task": task, "shard": shard or ALL_SHARDS}
    registry = CollectorRegistry(auto_describe=True)
    not_after = Gauge("exbe_backend_certificate_not_after_timestamp_seconds", "When the bound Exchange back-end "
                      "certificate expires (its NotAfter, Unix time), as exbe verified it",
                      ["server", *RUN_LABELS], registry=registry)
    status = Enum("exbe_check_status", "Status of each exbe verify check per server", ["server", "check", *RUN_LABELS],
                  states=CHECK_STATES, registry=registry)
    verdicts = Enum("exbe_server_verdict", "What exbe's run came to on each server", ["server", *RUN_LABELS],
                    states=list(VERDICTS), registry=registry)
    for server_run in runs:
        server = redact(server_run.server)
        if not is_organization(server_run):  # a server's verdict; the organization has its check's status
            verdicts.labels(server=server, **run).state(verdict(server_run))
        expires = backend_not_after(server_run)
        if expires is not None:
            not_after.labels(server=server, **run).set(expires.timestamp())
        for check in checks(server_run):
            status.labels(server=server, check=check.id, **run).state(check.status)
    Gauge("exbe_run_duration_seconds", "Wall time of the exbe run", RUN_LABELS, registry=registry).labels(
        **run).set(wall_time_s)
    Gauge("exbe_run_success", "1 when the exbe run passed (exit code 0), else 0", RUN_LABELS,
          registry=registry).labels(**run).set(1 if exit_code(runs) == EXIT_OK else 0)
    Gauge("exbe_run_timestamp_seconds", "When the exbe run ended (Unix time)", RUN_LABELS, registry=registry).labels(
        **run).set(time.time() if finished_at is None else finished_at)
    servers = Gauge("exbe_run_servers", "Servers of the exbe run per verdict", [*RUN_LABELS, "verdict"],
                    registry=registry)
    for name in VERDICTS:
        servers.labels(verdict=name, **run).set(sum(verdict(server_run) == name for server_run in servers_only(runs)))
    Gauge("exbe_run_info", "The exbe run: exbe's version and whether the servers were simulated",
          [*RUN_LABELS, "version", "simulated"], registry=registry).labels(
        version=__version__, simulated="true" if any(r.simulated for r in runs) else "false", **run).set(1)
    return generate_latest(registry).decode("utf-8")


def write_metrics(runs: list[ServerRun], path: Path, *, task: str, wall_time_s: float,
                  redact: Redact | None = None, shard: str | None = None) -> None:
    """Write :func:`render_metrics` to ``path`` atomically. Raises :class:`exbe.report.ReportWriteError`."""
    write_atomically(Path(path), render_metrics(runs, task=task, wall_time_s=wall_time_s, redact=redact, shard=shard),
                     "metrics")

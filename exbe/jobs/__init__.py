"""The jobs exbe runs on servers, one module each, and the task names that start them.

A job is a :class:`exbe.server_run.ServerJob` subclass (its docstring says how one is written); the fleet
(:func:`exbe.fleet.run_fleet`) runs it on every selected server. Adding one: a module here and its tasks in
:data:`JOBS` (and a task shim in :mod:`exbe.tasks` for the command line).

The organization's certificates (`exbe auth`, :mod:`exbe.jobs.auth`; `exbe federation`, :mod:`exbe.jobs.federation`)
are organization jobs: one server reads and changes the organization once while every selected server is locked, so
they run the servers' :class:`ServerJob` parts themselves (:func:`job_runner`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..auth_rule import Thresholds
from ..errors import ConfigError
from ..fleet import Fleetwide, Progress, RunOptions, run_fleet
from ..model import ServerRun, Settings
from ..server_run import ServerJob
from ..settings import Defaults
from . import backend
from .flags import JobFlags
from .unlock import UnlockJob

if TYPE_CHECKING:
    from ..config import Credentials
    from ..inventory import Server

#: task -> the job that runs it
JOBS: dict[str, type[ServerJob]] = {**{task: backend.BackendJob for task in backend.TASKS}, "unlock": UnlockJob}
TASKS = tuple(JOBS)


def run_job(servers: list[Server], task: str, credentials: Credentials, settings: Settings, options: RunOptions,
            progress: Progress, concurrency: int) -> list[ServerRun]:
    """Run ``task``'s job on every server (:func:`exbe.fleet.run_fleet`); one record per server, in their order."""
    if task not in JOBS:
        raise ConfigError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
    job = JOBS[task]

    def start(server: Server, fleetwide: Fleetwide) -> ServerJob:
        return job(server, task, credentials, settings, options, progress, fleetwide)

    return run_fleet(servers, start, options, progress, concurrency)


#: run_job's signature: servers, task, credentials, settings, run options, progress, concurrency.
Runner = Callable[..., list[ServerRun]]


def job_runner(task: str, given: JobFlags | None, defaults: Defaults, default: Runner) -> Runner:
    """The function that runs ``task``: an organization job's (with its flags and
    ``exbe.defaults.auth_certificate``), else ``default`` (:func:`run_job`)."""
    flags = dataclasses.replace(given or JobFlags(),
                                thresholds=Thresholds(**dataclasses.asdict(defaults.auth_certificate)))
    if task == "auth":
        from .auth import run_auth

        def auth(*args: Any) -> list[ServerRun]:
            return run_auth(*args, flags=flags)
        return auth
    if task == "federation":
        from .federation import run_federation

        def federation(*args: Any) -> list[ServerRun]:
            return run_federation(*args, flags=flags)
        return federation
    if task == "verify":
        from ..checks_org import with_organization

        return with_organization(default, flags.thresholds)
    return default

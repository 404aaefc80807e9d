"""The jobs exbe runs on servers, one module each, and the task names that start them.

A job is a :class:`exbe.server_run.ServerJob` subclass (its docstring says how one is written); the fleet
(:func:`exbe.fleet.run_fleet`) runs it on every selected server. Adding one: a module here and its tasks in
:data:`JOBS` (and a task shim in :mod:`exbe.tasks` for the command line).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..fleet import Progress, RunOptions, run_fleet
from ..model import ServerRun, Settings
from ..server_run import ServerJob
from . import backend
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

    def start(server: Server, restart_gate: threading.Lock) -> ServerJob:
        return job(server, task, credentials, settings, options, progress, restart_gate)

    return run_fleet(servers, start, options, progress, concurrency)

"""Jobs beside the back-end chain: the organization's Auth certificate (:mod:`exbe.jobs.auth`) and Federation
certificate (:mod:`exbe.jobs.federation`). A job runs with the same inputs and answers the same per-server records
as :func:`exbe.flow.run_fleet`, so the reports, the console and the exit code treat it like every task."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from ..auth_rule import Thresholds
from ..model import ServerRun
from ..settings import Defaults

#: run_fleet's signature: servers, task, credentials, settings, run options, progress, concurrency.
Runner = Callable[..., list[ServerRun]]
JOB_TASKS = ("auth", "federation")


@dataclasses.dataclass(frozen=True)
class JobFlags:
    """The flags only the jobs take."""

    hybrid: bool = False  # `exbe auth --hybrid`: the admin acknowledges the hybrid steps
    ignore_unreachable: bool = False  # `--ignore-unreachable`: act although a server could not be read
    cer: str | None = None  # `exbe auth --cer FILE`: where the next certificate's public part goes (hybrid)
    publish: bool = False  # `exbe federation --publish`
    domain: str | None = None  # `exbe federation --domain`: the domain whose TXT proof is printed
    thresholds: Thresholds = Thresholds()  # exbe.defaults.auth_certificate


def job_runner(task: str, given: JobFlags | None, defaults: Defaults, default: Runner) -> Runner:
    """The function that runs ``task``: a job's (with its flags and ``exbe.defaults.auth_certificate``), else
    ``default`` (the back-end chain's fleet)."""
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
    return default

"""The organization's record among the servers' records of a run.

Some findings are about the organization, not a server (verify's ``auth_organization``, :mod:`exbe.checks_org`):
they travel in one :class:`~exbe.model.ServerRun` named :data:`ORGANIZATION`, without a host, after the servers'.
The writers show it as its own record (a JUnit suite, the JSON record's ``organization``, a metrics label, a console
line) and never count it as a server.
"""

from __future__ import annotations

from collections.abc import Sequence

from .model import ServerRun

#: The name of the organization's record in every report (a JUnit suite, a JSON key, a metrics label).
ORGANIZATION = "organization"


def is_organization(run: ServerRun) -> bool:
    """The organization's record (it has no host; every server's run has one)."""
    return run.server == ORGANIZATION and not run.host


def servers_only(runs: Sequence[ServerRun]) -> list[ServerRun]:
    """The servers' records of ``runs``, without the organization's."""
    return [run for run in runs if not is_organization(run)]

"""`exbe unlock`: show the server's lock, then remove it when it is the named run's (``--run``), expired, or with
``--yes`` whatever holds it (:meth:`exbe.lock.ServerLock.removed`). One pipeline, no facts read."""

from __future__ import annotations

from ..server_run import ServerJob


class UnlockJob(ServerJob):
    """The lock's own task; it never takes the lock."""

    def steps(self) -> None:
        self.begin("unlock")
        envelope = self.scripts([self.lock.removal(self.options.unlock_run, self.options.unlock_any)])[0]
        self.record(self.lock.removed(envelope))

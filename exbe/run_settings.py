"""What one run decides with: the settings with the task's flags applied.

Apart from :mod:`exbe.model` because the steps plan with it while the model reads the steps' registry
(:meth:`exbe.model.StepResult.from_envelope`): both import this module, neither the other's dependents.
"""

from __future__ import annotations

import dataclasses

from .settings import Defaults, SmtpMode


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the operator asked for: the settings (:class:`exbe.settings.Defaults`, where each one is declared with
    its default) with the task's flags applied, plus the two flags that are not settings (``force``, ``dry_run``)."""

    days: int = Defaults.days
    force: bool = False
    smtp: SmtpMode = Defaults.smtp
    trust: bool = Defaults.trust
    dry_run: bool = False
    min_age_days: int = Defaults.min_age_days
    restart_iis: bool = Defaults.restart_iis
    backend_site: str = Defaults.backend_site
    frontend_site: str = Defaults.frontend_site
    friendly_name: str = Defaults.friendly_name
    warn_days: int = Defaults.warn_days
    fail_days: int = Defaults.fail_days

    @classmethod
    def of(cls, defaults: Defaults, *, force: bool = False, dry_run: bool = False) -> Settings:
        """The run's Settings from resolved settings (every field but ``force``/``dry_run`` is a setting)."""
        shared = {field.name: getattr(defaults, field.name) for field in dataclasses.fields(cls)
                  if field.name not in ("force", "dry_run")}
        return cls(force=force, dry_run=dry_run, **shared)

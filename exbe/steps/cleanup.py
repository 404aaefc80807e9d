"""``cleanup``: remove superseded self-signed back-end certificates (and Root copies) that nothing uses any more,
chosen by exbe from the facts of both endpoints; the script re-checks every https binding of both sites just before
removing and refuses a bound certificate."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any

from ..contract import ListOf
from ..facts import Certificate, ExchangeFacts, HostFacts
from ..run_settings import Settings
from ..selection import AUTH_SUBJECT, assignments_unknown, backend_binding, self_signed_exchange_certs

NAME = "cleanup"
SUMMARY = "remove superseded back-end certificates and Root copies that nothing uses"
INPUTS = {"thumbprints": (ListOf(str),), "backend_site": (str,), "frontend_site": (str,), "dry_run": (bool,)}
RESULT = {"removed_my": (ListOf(str),), "removed_root": (ListOf(str),), "refused": (ListOf(dict),)}


def step_input(remove: list[str], settings: Settings) -> dict[str, Any]:
    return {"thumbprints": list(remove), "backend_site": settings.backend_site,
            "frontend_site": settings.frontend_site, "dry_run": settings.dry_run}


@dataclasses.dataclass(frozen=True)
class CleanupPlan:
    """``refused``: cleanup must not run on this server (a failure); ``waiting``: not yet (min age), not a failure."""

    remove: list[str]  # thumbprints; the cleanup step removes them from My and Root
    kept: list[tuple[str, str]]  # (thumbprint, why it stays)
    refused: str | None = None
    waiting: str | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)


def plan(facts: HostFacts, exchange: ExchangeFacts | None, settings: Settings, *,
                       switched_at: datetime.datetime | None) -> CleanupPlan:
    """Superseded self-signed back-end certificates (and Root copies) that nothing uses any more.

    Kept: anything bound (any https binding of either site), assigned to an Exchange service, the internal
    transport certificate, the current or next Auth certificate, anything whose assignments are unknown (the
    Exchange endpoint unavailable, blinded, or refusing the projection that reads them), and anything not older than
    the bound certificate (a staged replacement). Nothing is removed before ``min_age_days`` have passed since the
    switch (``switched_at``, this run's switch; default the bound certificate's NotBefore).
    """
    binding = backend_binding(facts, settings)
    bound = facts.certificate(binding.certificate_hash if binding else None)
    if bound is None:
        return CleanupPlan([], [], refused=f"{settings.backend_site} carries no certificate of LocalMachine\\My on "
                                            "its 444 binding; bind one before cleaning up")
    if bound.thumbprint not in {c.thumbprint for c in self_signed_exchange_certs(facts, settings.friendly_name)}:
        return CleanupPlan([], [], refused=(
            f"{settings.backend_site} 444 carries {bound.thumbprint}, which is not a self-signed "
            f"'{settings.friendly_name}' certificate, so nothing of that kind is superseded"))
    if switched_at is not None and (facts.now - switched_at) < datetime.timedelta(days=settings.min_age_days):
        return CleanupPlan([], [], waiting=(
            f"this run switched to {bound.thumbprint}; its predecessors are removed by a cleanup run at least "
            f"{settings.min_age_days} days from now (--min-age)"))
    age = (facts.now - (switched_at or bound.not_before)).days
    if age < settings.min_age_days:
        return CleanupPlan([], [], waiting=f"the switch to {bound.thumbprint} was {age} day(s) ago; cleanup waits "
                                           f"{settings.min_age_days} days (--min-age)")

    unknown = assignments_unknown(facts, exchange)
    protected: dict[str | None, str] = {}
    if exchange is not None:
        protected = {exchange.internal_transport: "internal transport certificate",
                     exchange.auth.current: "current Auth certificate", exchange.auth.next: "next Auth certificate"}
    remove: list[str] = []
    kept: list[tuple[str, str]] = []
    for cert in self_signed_exchange_certs(facts, settings.friendly_name):
        if cert.thumbprint == bound.thumbprint:
            continue
        reason = _keep_reason(facts, cert, bound, exchange, protected, unknown)
        if reason:
            kept.append((cert.thumbprint, reason))
        else:
            remove.append(cert.thumbprint)
    in_my = {c.thumbprint for c in facts.certificates}
    for root in facts.root:  # Root copies left behind by certificates already gone from My: no service uses them
        if (root.thumbprint not in in_my and root.subject == bound.subject and root.thumbprint not in protected
                and not facts.bindings_of(root.thumbprint) and root.not_after < bound.not_after
                and root.subject.upper() != AUTH_SUBJECT.upper()):
            remove.append(root.thumbprint)
    warnings = [f"service assignments unknown ({unknown}): superseded certificates are kept"] \
        if unknown and kept else []
    return CleanupPlan(remove=remove, kept=kept, warnings=warnings)


def _keep_reason(facts: HostFacts, cert: Certificate, bound: Certificate, exchange: ExchangeFacts | None,
                 protected: dict[str | None, str], unknown: str) -> str | None:
    where = facts.bindings_of(cert.thumbprint)
    if where:
        return f"bound to {', '.join(b.label for b in where)}"
    if cert.thumbprint in protected:
        return protected[cert.thumbprint]
    if unknown:
        return f"its service assignment is unknown: {unknown}"
    listed = exchange.certificate(cert.thumbprint) if exchange else None
    if listed is None:
        return "Exchange did not report it, so its service assignment is unknown"
    if listed.services is None:
        return "its service assignment is unknown"
    if listed.services:
        return f"assigned to {', '.join(listed.services)}"
    if cert.not_after >= bound.not_after:
        return f"not superseded: expires after the bound certificate {bound.thumbprint}"
    return None


def describe(data: Mapping[str, Any], changed: bool, dry_run: bool) -> str:
    removed_my, removed_root = list(data.get("removed_my") or []), list(data.get("removed_root") or [])
    if not (removed_my or removed_root):
        return "nothing to remove"
    return (f"{'would remove' if dry_run else 'removed'} {len(removed_my)} certificate(s) from LocalMachine\\My and "
            f"{len(removed_root)} from LocalMachine\\Root: {', '.join(dict.fromkeys(removed_my + removed_root))}")


def before_after(data: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    removed = {"my": list(data.get("removed_my") or []), "root": list(data.get("removed_root") or [])}
    return removed, {"my": [], "root": []}

"""``bind``: put the certificate on Exchange Back End's all-unassigned https 444 binding (``*:444:``, created only
when there is none), and on the Default Web Site's loopback binding ``127.0.0.1:443:`` when that carried the old
back-end certificate or another self-signed back-end-like one (a split binding). The script acts on the exact binding
texts Python found by meaning; it refuses (nothing changed) a certificate that is not in My, has no private key, a CNG
key or a key that cannot be opened; it records the previous hashes and restores them when a change fails; the 444
binding is never left empty, the public 443 binding is never touched, and an IP-specific 444 binding is never created.
NETWORK SERVICE key access is not needed here (http.sys/schannel open the key as SYSTEM); it matters for SMTP only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..contract import ListOf
from ..facts import HostFacts, normalise_thumbprint
from ..run_settings import Settings
from ..selection import (
    SelectionError,
    backend_binding,
    ip_specific_444,
    loopback_binding,
    remove_binding_command,
    select_backend,
    split_loopback,
)

NAME = "bind"
SUMMARY = "bind the certificate to Exchange Back End 444 (and the loopback 443 binding that carried the old one)"
INPUTS = {"thumbprint": (str,), "backend_site": (str,), "frontend_site": (str,),
          "backend_binding": (str, type(None)), "loopback_binding": (str, type(None)),
          "loopback_from": (str, type(None)), "after_trust": (bool,), "dry_run": (bool,)}
RESULT = {"thumbprint": (str,), "before": (dict,), "after": (dict,), "created_backend_binding": (bool,),
          "restored": (bool,), "ip_specific_444": (ListOf(str),)}
_ROLES = {"backend": "the back-end 444 binding", "loopback": "the loopback 127.0.0.1:443: binding"}


def plan(facts: HostFacts, new_thumbprint: str, settings: Settings, *, after_trust: bool = False) -> dict[str, Any]:
    """The input: the exact binding texts found by meaning. ``after_trust``: a trust statement runs before this one
    in the same pipeline; PowerShell runs the next statement of a batch even when one fails (real-server-shapes.md
    §4), so the bind itself refuses, changing nothing, when the certificate did not reach LocalMachine\\Root.
    The loopback binding moves only when it carries the old back-end certificate, or another self-signed
    back-end-like one (a split binding, :func:`exbe.selection.split_loopback`); the Default Web Site's public 443
    binding is never part of it, nor a CA-issued certificate on the loopback."""
    old = _old_backend(facts, settings)
    backend = backend_binding(facts, settings)
    loopback = loopback_binding(facts, settings)
    new = normalise_thumbprint(new_thumbprint)
    moves_loopback = loopback is not None and loopback.certificate_hash is not None \
        and loopback.certificate_hash != new \
        and (loopback.certificate_hash == old or split_loopback(facts, settings, new) is not None)
    return {
        "thumbprint": new,
        "backend_site": settings.backend_site,
        "frontend_site": settings.frontend_site,
        "backend_binding": backend.information if backend else None,
        "loopback_binding": loopback.information if loopback and moves_loopback else None,
        "loopback_from": loopback.certificate_hash if loopback and moves_loopback else None,
        "after_trust": after_trust and not settings.dry_run,
        "dry_run": settings.dry_run,
    }


def blockers(facts: HostFacts) -> list[str]:
    """Reasons to stop before binding anything. An IP-specific 444 binding fails under Extended Protection
    (SEC_E_BAD_BINDINGS); exbe does not remove it by itself, it says how."""
    return [
        f"IP-specific 444 binding {b.information} on {b.site} (HealthChecker flags it; with Extended Protection it "
        f"fails with SEC_E_BAD_BINDINGS); remove it first: {remove_binding_command(b)}"
        for b in ip_specific_444(facts)]


def unconverged(facts: HostFacts, thumbprint: str, settings: Settings, *, trust: bool, bind: bool) -> list[str]:
    """What is still to do after trust/bind, read from fresh facts: empty when the server converged (the plan after
    apply is empty), else each difference in words."""
    left = []
    wanted = normalise_thumbprint(thumbprint)
    if trust and not facts.in_root(wanted):
        left.append(f"{wanted} is not in LocalMachine\\Root")
    if bind:
        binding = backend_binding(facts, settings)
        carried = binding.certificate_hash if binding else None
        if carried != wanted:
            left.append(f"{settings.backend_site} 444 carries {carried or 'no certificate'}, not {wanted}")
    return left


def finish_interrupted(facts: HostFacts, bind_input: dict[str, Any], begun: Mapping[str, Any] | None,
                       settings: Settings) -> tuple[dict[str, Any], str | None]:
    """An interrupted run stopped inside its bind (``begun``: that bind's journal entry): the back end may carry its
    certificate while the loopback 127.0.0.1:443: binding still carries the one that bind was replacing (a split
    binding the facts alone do not show). Finish it: the loopback follows when it still carries what the journal
    says that bind replaced. Returns the bind's input and, when it finishes that bind, the warning saying so."""
    replaced = (begun.get("replaces") or {}).get("loopback") if begun is not None else None
    loopback = loopback_binding(facts, settings)
    if (not replaced or bind_input["loopback_binding"] is not None or loopback is None
            or loopback.certificate_hash != str(replaced).upper()
            or loopback.certificate_hash == bind_input["thumbprint"]):
        return bind_input, None
    return ({**bind_input, "loopback_binding": loopback.information, "loopback_from": loopback.certificate_hash},
            f"finishing the interrupted run's bind: {loopback.information} still carries "
            f"{loopback.certificate_hash}, which that bind was replacing")


def _old_backend(facts: HostFacts, settings: Settings) -> str | None:
    """The certificate being replaced: the one on the 444 binding (even when My lacks it), else the selected one."""
    binding = backend_binding(facts, settings)
    if binding and binding.certificate_hash:
        return binding.certificate_hash
    try:
        return select_backend(facts, settings).thumbprint
    except SelectionError:
        return None


def describe(data: Mapping[str, Any], changed: bool, dry_run: bool) -> str:
    thumb = data.get("thumbprint")
    before, after = data.get("before") or {}, data.get("after") or {}
    moved = [what for role, what in _ROLES.items() if before.get(role) != after.get(role)]
    if changed:
        return f"{'would bind' if dry_run else 'bound'} {thumb} on {' and '.join(moved) or _ROLES['backend']}"
    return f"{thumb} is already bound on {_ROLES['backend']}"


def before_after(data: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    return dict(data.get("before") or {}), dict(data.get("after") or {})

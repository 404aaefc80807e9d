"""What the live suite compares before and after a command: the host's certificates and IIS bindings, as exbe's own
facts reader (:class:`exbe.facts.HostFacts`) parses them from a preflight."""

from __future__ import annotations

from typing import Any

from exbe.facts import HostFacts
from exbe.model import Settings
from exbe.selection import backend_binding

from .target import ExbeRun


def facts_of(preflight: ExbeRun) -> HostFacts:
    """The facts a successful preflight read (its step's data carries the facts document)."""
    assert preflight.code == 0, preflight.explain()
    data = preflight.step("preflight")["data"]
    assert data.get("facts"), f"the preflight found no back-end certificate: {preflight.explain()}"
    return HostFacts.parse(data["facts"])


def snapshot(facts: HostFacts) -> dict[str, Any]:
    """Everything exbe may change: certificates in My (with their keys' state) and Root, https bindings, services."""
    return {
        "my": sorted((c.thumbprint, c.has_private_key, c.key_accessible) for c in facts.certificates),
        "root": sorted(c.thumbprint for c in facts.root),
        "bindings": sorted((b.site, b.information, b.certificate_hash or "") for b in facts.bindings),
        "services": dict(facts.services),
    }


def bound_on_444(facts: HostFacts) -> str | None:
    """The thumbprint Exchange Back End's all-unassigned 444 binding carries (exbe's default site names)."""
    binding = backend_binding(facts, Settings())
    return binding.certificate_hash if binding else None

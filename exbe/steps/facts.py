"""``facts``: read LocalMachine\\My and Root, the https bindings and the sites of both IIS sites, W3SVC/WAS, and the
MSExchange OWA ``AllowInternalUntrustedCerts`` value. Read only; preflight and verify. The data is what
:class:`exbe.facts.HostFacts` parses (certificate, binding and site shapes are documented there)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..contract import ListOf
from ..run_settings import Settings

NAME = "facts"
SUMMARY = "read the certificate stores, IIS bindings and sites, and the web services' states"
MUTATING = False
INPUTS = {"backend_site": (str,), "frontend_site": (str,), "friendly_name": (str,)}
RESULT = {"now": (str,), "computer": (dict,), "powershell_version": (str,), "certificates": (ListOf(dict),),
          "root": (ListOf(dict),), "bindings": (ListOf(dict),), "sites": (dict,), "services": (dict,),
          "allow_internal_untrusted_certs": (int, type(None))}


def plan(settings: Settings) -> dict[str, Any]:
    return {"backend_site": settings.backend_site, "frontend_site": settings.frontend_site,
            "friendly_name": settings.friendly_name}


def describe(data: Mapping[str, Any], changed: bool, dry_run: bool) -> str:
    return (f"read {len(data.get('certificates') or [])} certificate(s) and {len(data.get('bindings') or [])} "
            "https binding(s)")

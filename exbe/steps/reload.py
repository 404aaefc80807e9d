"""``reload``: after the Auth certificate changed, what Microsoft says makes a server load it now
(``../shared/auth-certificate.md`` §3, "Replace now"; KB 2617816): restart the MSExchangeServiceHost service, then
recycle the OWA and ECP application pools (``Restart-WebAppPool``). None of it is needed for the certificate to
work eventually, so a failure is a warning of the step, never its failure: the envelope stays ok and lists what
did not happen. Unlike ``restart`` it leaves W3SVC, and so the Exchange endpoint's runspace pools, alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..contract import ListOf

NAME = "reload"
SUMMARY = "restart MSExchangeServiceHost, recycle the OWA and ECP app pools (failures are warnings)"
SERVICE = "MSExchangeServiceHost"
APP_POOLS = ("MSExchangeOWAAppPool", "MSExchangeECPAppPool")
#: How long the script waits for the service to be Running again.
TIMEOUT_SECONDS = 120
INPUTS = {"service": (str,), "app_pools": (ListOf(str),), "timeout_seconds": (int,), "dry_run": (bool,)}
RESULT = {"service": (str,), "service_before": (str,), "service_after": (str,), "recycled": (ListOf(str),),
          "not_done": (ListOf(str),)}


def plan(*, dry_run: bool) -> dict[str, Any]:
    return {"service": SERVICE, "app_pools": list(APP_POOLS), "timeout_seconds": TIMEOUT_SECONDS,
            "dry_run": dry_run}


def describe(data: Mapping[str, Any], changed: bool, dry_run: bool) -> str:
    pools = ", ".join(data.get("app_pools") or data.get("recycled") or APP_POOLS)
    if dry_run:
        return f"would restart {data.get('service')} and recycle {pools}"
    missed = list(data.get("not_done") or [])
    done = f"restarted {data.get('service')} ({data.get('service_before')} -> {data.get('service_after')}), " \
           f"recycled {', '.join(data.get('recycled') or []) or 'no app pool'}"
    return done + (f"; not done: {', '.join(missed)} (see the warnings)" if missed else "")


def before_after(data: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    return {str(data.get("service")): data.get("service_before")}, {str(data.get("service")): data.get("service_after")}

"""``restart`` (opt-in): ``iisreset`` (or W3SVC and WAS restarted as services), waiting for W3SVC; ok only when W3SVC
runs at the end. It ends every runspace pool of the Exchange endpoint (an IIS application)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

NAME = "restart"
SUMMARY = "iisreset and wait for W3SVC"
#: How long the script waits for W3SVC: iisreset's own wait is 60 s per service, and W3SVC and WAS both restart.
TIMEOUT_SECONDS = 120
INPUTS = {"method": (str,), "timeout_seconds": (int,), "dry_run": (bool,)}
CHOICES = {"method": ("iisreset", "services")}
RESULT = {"method": (str,), "w3svc_before": (str, type(None)), "w3svc_after": (str, type(None)),
          "was_after": (str, type(None))}


def plan(*, dry_run: bool, method: str = "iisreset") -> dict[str, Any]:
    return {"method": method, "timeout_seconds": TIMEOUT_SECONDS, "dry_run": dry_run}


def describe(data: Mapping[str, Any], changed: bool, dry_run: bool) -> str:
    return (f"{'would run' if dry_run else 'ran'} {data.get('method')}: W3SVC {data.get('w3svc_before')} -> "
            f"{data.get('w3svc_after')}")


def before_after(data: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    return {"W3SVC": data.get("w3svc_before")}, {"W3SVC": data.get("w3svc_after"), "WAS": data.get("was_after")}

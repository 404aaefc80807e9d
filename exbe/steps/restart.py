"""``restart`` (opt-in): ``iisreset`` (or W3SVC and WAS restarted as services), waiting for W3SVC; then one start
attempt for each of WAS and W3SVC the restart left stopped; ok only when W3SVC runs at the end. It ends every runspace
pool of the Exchange endpoint (an IIS application).

The renew chain restarts only when :func:`needed` says so (this run changed a binding, or W3SVC/WAS are not
running); ``exbe restart`` always does, the admin asked for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..contract import ListOf

if TYPE_CHECKING:
    from ..facts import HostFacts

NAME = "restart"
SUMMARY = "iisreset, wait for W3SVC, start W3SVC/WAS once if they stayed stopped"
#: How long the script waits for W3SVC: iisreset's own wait is 60 s per service, and W3SVC and WAS both restart.
#: The same bound applies to each start attempt afterwards.
TIMEOUT_SECONDS = 120
#: The services an IIS restart must leave running, in the order they are started (W3SVC depends on WAS).
SERVICES = ("WAS", "W3SVC")
#: Why the renew chain's restart is skipped.
NOT_NEEDED = "nothing bound changed and W3SVC/WAS run"
INPUTS = {"method": (str,), "timeout_seconds": (int,), "dry_run": (bool,)}
CHOICES = {"method": ("iisreset", "services")}
#: ``stopped_after_restart``: the services not running once the restart command and the wait for W3SVC ended;
#: ``started``: those of them the one start attempt brought to Running; ``w3svc_after``/``was_after``: the final states.
RESULT = {"method": (str,), "w3svc_before": (str, type(None)), "w3svc_after": (str, type(None)),
          "was_after": (str, type(None)), "stopped_after_restart": (ListOf(str),), "started": (ListOf(str),)}


def plan(*, dry_run: bool, method: str = "iisreset") -> dict[str, Any]:
    return {"method": method, "timeout_seconds": TIMEOUT_SECONDS, "dry_run": dry_run}


def needed(facts: HostFacts, *, bind_changed: bool) -> str | None:
    """Why the renew chain restarts IIS (None: it need not). ``facts``: read after the bind."""
    reasons = ["this run changed a binding"] if bind_changed else []
    down = [f"{name} is {facts.services.get(name) or 'not reported'}" for name in SERVICES
            if facts.services.get(name) != "Running"]
    reasons.extend(down)
    return "; ".join(reasons) or None


def describe(data: Mapping[str, Any], changed: bool, dry_run: bool) -> str:
    if dry_run:
        return f"would run {data.get('method')} (W3SVC is {data.get('w3svc_before')} now)"
    started = list(data.get("started") or [])
    after = f" (started {', '.join(started)} after it)" if started else ""
    return f"ran {data.get('method')}: W3SVC {data.get('w3svc_before')} -> {data.get('w3svc_after')}{after}"


def before_after(data: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    return {"W3SVC": data.get("w3svc_before")}, {"W3SVC": data.get("w3svc_after"), "WAS": data.get("was_after")}

"""`exbe auth`'s import where missing (MEAC's rows 4 and 5): which server exports, which servers import, and doing it.

``../shared/auth-certificate.md`` §3: the certificate is exported with its key as PFX from a server that has it
(over WinRM there: the ``export`` step, ``X509Certificate2.Export(Pfx, SecureString)``), then imported with
``Import-ExchangeCertificate -Server <server> -FileData <bytes> -Password <SecureString> -PrivateKeyExportable
$true`` on the Exchange endpoint, on one lacking server per AD site (``Get-ExchangeServer``'s ``Site``): the
certificate servicelet carries it to the rest of the site, which takes time (KB 2617816: up to an hour; MEAC waits
24 h across AD sites).

The PFX password is random, made here, held as a :class:`~exbe.redaction.Secret` (registered with the redactor), and
leaves this process only as a SecureString encrypted with each pool's PSRP session key (``exbe.transport``): never
in a script text, an input document, a file, a log line or a report. The PFX bytes live in memory only, for the
length of one certificate's import.
"""

from __future__ import annotations

import base64
import dataclasses
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import auth_exchange, contract, steps
from .auth_rule import Decision, OrgAuthState
from .redaction import REDACTOR, Secret
from .render import render_step
from .steps import export as export_step

if TYPE_CHECKING:
    from .auth_exchange import Presence
    from .jobs.auth import AuthServer

REPLICATION_NOTE = ("replication takes time: the certificate servicelet copies it to the other servers of each AD "
                    "site (KB 2617816: up to an hour; MEAC waits 24 h across AD sites)")
#: Bytes of randomness in the PFX password (URL-safe Base64: 43 characters).
PASSWORD_BYTES = 32


@dataclasses.dataclass
class ImportPlan:
    """One certificate to import: from which server, onto which (one per AD site), and who waits for their site."""

    thumbprint: str
    role: str  # "current" or "next"
    source: AuthServer | None
    targets: list[str]
    waiting: list[str]
    sites: dict[str, str]

    @property
    def source_name(self) -> str | None:
        return self.source.server.name if self.source is not None else None

    def as_data(self) -> dict[str, Any]:
        return {"thumbprint": self.thumbprint, "role": self.role, "source": self.source_name,
                "targets": list(self.targets), "waiting_for_replication": list(self.waiting),
                "sites": {name: self.sites[name] for name in [*self.targets, *self.waiting]}}

    def line(self) -> str:
        where = ", ".join(f"{name} (site {self.sites[name]})" for name in self.targets)
        rest = f", and leave {', '.join(self.waiting)} to their site's replication" if self.waiting else ""
        return (f"export the {self.role} Auth certificate {self.thumbprint} from {self.source_name} and import it on "
                f"{where}{rest}")

    def no_source(self) -> str:
        return (f"the {self.role} Auth certificate {self.thumbprint} is on no reachable server exbe holds a session "
                f"to ({', '.join(self.targets + self.waiting)} lack it), so there is nothing to export it from; make "
                "such a server reachable, or replace the certificate (`exbe auth` once it has expired)")


def plan(decision: Decision, state: OrgAuthState, presence: dict[str, dict[str, Presence]],
         flows: Sequence[AuthServer], sites: dict[str, str]) -> list[ImportPlan]:
    """What to import where: for the current and the next certificate the decision names lacking servers for."""
    plans = []
    for role, thumb, lacking in (("current", state.current, decision.import_current_to),
                                 ("next", state.next, decision.import_next_to)):
        if not thumb or not lacking:
            continue
        source = next((f for f in flows if f.locked and f.run.error is None
                       and presence.get(f.server.name, {}).get(thumb) is not None
                       and presence[f.server.name][thumb].state == "present"), None)
        placed = {name: site_of(name, sites) for name in lacking}
        targets: dict[str, str] = {}
        for name in lacking:
            targets.setdefault(placed[name], name)
        chosen = list(targets.values())
        plans.append(ImportPlan(thumb, role, source, chosen, [n for n in lacking if n not in chosen], placed))
    return plans


def site_of(server: str, sites: dict[str, str]) -> str:
    """A server's AD site from ``Get-ExchangeServer`` (by name or FQDN); one of its own when unknown, so that a
    server whose site exbe cannot tell is never left to another's replication."""
    name = server.lower()
    found = sites.get(name) or sites.get(name.partition(".")[0])
    return found if found else f"unknown ({server})"


def carry_out(plans: list[ImportPlan], home: AuthServer, flows: Sequence[AuthServer]) -> tuple[list[str], list[str]]:
    """Export and import each plan's certificate with one random password; each import journaled in the home
    server's lock. ``(what was imported, what failed)``; the first failure ends it."""
    password = Secret(secrets.token_urlsafe(PASSWORD_BYTES))
    REDACTOR.add(password)
    done: list[str] = []
    for item in plans:
        assert item.source is not None
        pfx, error = export(item.source, item.thumbprint, password)
        if pfx is None:
            return done, [f"exporting the {item.role} Auth certificate {item.thumbprint} from {item.source_name} "
                          f"failed: {error}; nothing was imported"]
        home.begin("auth")
        answers = auth_exchange.import_pfx(home.session, item.targets, pfx, password)
        del pfx
        failed = []
        for server, (thumb, text) in answers.items():
            ok = thumb == item.thumbprint
            home.note("auth", f"Import-ExchangeCertificate {item.thumbprint} on {server}", None,
                      item.thumbprint if ok else None, None if ok else text or f"imported {thumb}, not the one asked")
            if ok:
                done.append(f"{item.thumbprint} ({item.role}) on {server}")
            else:
                failed.append(f"importing the {item.role} Auth certificate {item.thumbprint} on {server} failed: "
                              f"{text or f'the answer named {thumb}'}")
        if failed:
            return done, failed
    return done, []


def export(flow: AuthServer, thumbprint: str, password: Secret) -> tuple[bytes | None, str]:
    """The ``export`` step on ``flow``'s server (WinRM): the PFX bytes, or None and why."""
    flow.begin("auth")
    script = render_step(export_step.NAME, export_step.plan(thumbprint), override_dir=flow.options.template_dir)
    result = flow.session.run_scripts([script], repeatable=True, arguments=(password,))
    try:
        envelope = contract.one_result(export_step.NAME, contract.envelopes(result.output))
        steps.get(export_step.NAME).check_result(envelope)
    except contract.ContractError as exc:
        return None, result.failed or "; ".join(result.errors) or str(exc)
    if not envelope["ok"]:
        return None, str(envelope.get("error") or "the export step failed")
    return base64.b64decode(envelope["data"]["pfx"]), ""


def listing(done: list[str]) -> str:
    return ", ".join(done)

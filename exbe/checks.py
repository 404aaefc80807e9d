"""verify: one result per check, judged from facts collected once (the HealthChecker way: collect, then analyse).

Thresholds follow CSS-Exchange HealthChecker: days left >= warn_days pass, fail_days..warn_days-1 warn, below
fail_days fail, <= 0 expired; SHA-1/MD5 signature warn; RSA key < 2048 fail; anything but ``*:444:`` on port 444
fail; HSTS on the back end fail; a binding whose certificate is missing or expired fail; Auth certificate missing or
expired fail; serialization signing disabled warn. A check that cannot run is ``skip`` with the reason, never
``pass``.

``exchange`` is None when the Exchange endpoint could not be used; ``probe`` is ``exbe.probe.probe_backend``'s
answer (``tls``/``http`` None when not run, the reason in ``unreachable``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from .checks_auth import auth_next, auth_previous, federation_cert
from .facts import Binding, Certificate, ExchangeFacts, HostFacts, iso
from .model import CheckResult, CheckStatus, Settings
from .selection import (
    BACKEND_LABEL,
    MIN_KEY_SIZE,
    backend_binding,
    exchange_blinded,
    frontend_binding,
    ip_specific_444,
    loopback_binding,
    remove_binding_command,
    self_signed_exchange_certs,
    short,
    split_loopback,
    weak_signature,
)
from .steps.lock import LockFacts, interrupted_message, leftovers

Check = Callable[["_Context"], CheckResult]


class _Context:
    """What every check reads, worked out once."""

    def __init__(self, facts: HostFacts, exchange: ExchangeFacts | None, probe: dict[str, Any] | None,
                 settings: Settings) -> None:
        self.facts = facts
        self.exchange = exchange
        self.probe = probe or {}
        self.settings = settings
        self.server = facts.computer_name
        self.backend_binding = backend_binding(facts, settings)
        self.bound = self.backend_binding.certificate_hash if self.backend_binding else None
        self.cert = facts.certificate(self.bound)
        self.lock: LockFacts | None = None

    def days(self, cert: Certificate) -> int:
        return self.facts.days_left(cert)

    @property
    def bind_advice(self) -> str:
        """What puts a usable back-end certificate on *:444:: `exbe bind` when LocalMachine\\My holds a self-signed
        back-end certificate to bind, else `exbe renew`, which creates one (KB 2779694) and binds it."""
        usable = [c for c in self_signed_exchange_certs(self.facts, self.settings.friendly_name)
                  if c.has_private_key and c.key_accessible is not False and self.days(c) > 0]
        return "bind one with `exbe bind`" if usable else "create and bind one with `exbe renew`"

    def no_backend_cert(self, check_id: str) -> CheckResult:
        return CheckResult(check_id, "skip", f"{self.server}: no certificate of LocalMachine\\My on "
                                             f"{self.settings.backend_site} {BACKEND_LABEL} to judge "
                                             "(see backend_binding_present)")

    def no_exchange(self, check_id: str, what: str) -> CheckResult | None:
        if self.exchange is None:
            return CheckResult(check_id, "skip", f"{self.server}: {what} was not checked: the Exchange endpoint was "
                                                 "not available")
        return None


def run_checks(facts: HostFacts, exchange: ExchangeFacts | None, probe: dict[str, Any] | None,
               settings: Settings, *, lock: LockFacts | None = None) -> list[CheckResult]:
    """``lock``: what the run's first pipeline found of exbe's lock (None: not read)."""
    ctx = _Context(facts, exchange, probe, settings)
    ctx.lock = lock
    return [check(ctx) for check in CHECKS]


def backend_binding_present(ctx: _Context) -> CheckResult:
    site, server = ctx.settings.backend_site, ctx.server
    if ctx.backend_binding is None:
        return _fail("backend_binding_present", f"{server}: {site} has no https {BACKEND_LABEL} binding; "
                                                f"OWA/ECP/EMS proxying fails; {ctx.bind_advice}")
    if not ctx.bound:
        return _fail("backend_binding_present", f"{server}: {site} {BACKEND_LABEL} has no certificate; "
                                                f"{ctx.bind_advice}")
    if ctx.cert is None:
        return _fail("backend_binding_present",
                     f"{server}: {site} {BACKEND_LABEL} carries {ctx.bound}, which is not in LocalMachine\\My "
                     f"(HttpEvent 15021); {ctx.bind_advice}", value=ctx.bound)
    if not ctx.cert.has_private_key:
        return _fail("backend_binding_present", f"{server}: back-end certificate {short(ctx.bound)} has no private "
                                                "key; renew with `exbe renew --force`", value=ctx.bound)
    if ctx.cert.key_accessible is False:
        return _fail("backend_binding_present",
                     f"{server}: the private key of back-end certificate {short(ctx.bound)} cannot be opened "
                     "(0x80070520); renew with `exbe renew --force`", value=ctx.bound)
    return CheckResult("backend_binding_present", "pass",
                       f"{server}: {site} {BACKEND_LABEL} carries {short(ctx.bound)}, in LocalMachine\\My with "
                       "an accessible private key", details=ctx.bound, value=ctx.bound)


def backend_days_left(ctx: _Context) -> CheckResult:
    if ctx.cert is None:
        return ctx.no_backend_cert("backend_days_left")
    days, date = ctx.days(ctx.cert), ctx.cert.not_after.date()
    what = f"{ctx.server} back-end certificate {short(ctx.bound)}"
    if days <= 0:  # HealthChecker counts the last day as expired too
        expired = ctx.cert.not_after <= ctx.facts.now
        when = f"expired on {date}" if expired else f"expires today ({date})"
        return _fail("backend_days_left", f"{what} {when}; renew with `exbe renew`",
                     details=f"NotAfter {iso(ctx.cert.not_after)}", value=days)
    status: CheckStatus = ("pass" if days >= ctx.settings.warn_days
                           else "warn" if days >= ctx.settings.fail_days else "fail")
    advice = "" if status == "pass" else "; renew with `exbe renew`"
    return CheckResult("backend_days_left", status, f"{what} expires in {days} days ({date}){advice}",
                       details=f"NotAfter {iso(ctx.cert.not_after)}; warn below {ctx.settings.warn_days} days, fail "
                               f"below {ctx.settings.fail_days}", value=days)


def backend_signature(ctx: _Context) -> CheckResult:
    if ctx.cert is None:
        return ctx.no_backend_cert("backend_signature")
    algorithm = ctx.cert.signature_algorithm
    if weak_signature(ctx.cert):
        return CheckResult("backend_signature", "warn", f"{ctx.server} back-end certificate {short(ctx.bound)} is "
                                                        f"signed with {algorithm}; renew with `exbe renew`",
                           value=algorithm)
    return CheckResult("backend_signature", "pass", f"{ctx.server} back-end certificate signature {algorithm}",
                       value=algorithm)


def backend_key_size(ctx: _Context) -> CheckResult:
    if ctx.cert is None:
        return ctx.no_backend_cert("backend_key_size")
    size = ctx.cert.key_size
    if size < MIN_KEY_SIZE:
        return _fail("backend_key_size", f"{ctx.server} back-end certificate {short(ctx.bound)} has a {size}-bit key "
                                         f"(< {MIN_KEY_SIZE}); renew with `exbe renew`", value=size)
    return CheckResult("backend_key_size", "pass", f"{ctx.server} back-end certificate key {size} bits", value=size)


def backend_key_provider(ctx: _Context) -> CheckResult:
    if ctx.cert is None:
        return ctx.no_backend_cert("backend_key_provider")
    provider, kind = ctx.cert.provider, ctx.cert.provider_type
    if kind is None:
        return CheckResult("backend_key_provider", "skip",
                           f"{ctx.server} back-end certificate {short(ctx.bound)} has no private key, so no key "
                           "provider (see backend_binding_present)")
    if kind == "CNG":
        return _fail("backend_key_provider",
                     f"{ctx.server} back-end certificate {short(ctx.bound)} has a CNG key ({provider}); Exchange "
                     "needs a legacy CSP (KB 3032024); renew with `exbe renew`", value=provider)
    # A CSP key that does not open has no provider name to read (its kind comes from the key's provider type).
    where = provider or "its provider name is unknown: the key does not open"
    return CheckResult("backend_key_provider", "pass", f"{ctx.server} back-end key in a CSP ({where})",
                       value=provider)


def no_ip_specific_444(ctx: _Context) -> CheckResult:
    found = ip_specific_444(ctx.facts)
    if found:
        first = found[0]
        return _fail("no_ip_specific_444",
                     f"{ctx.server}: IP-specific 444 binding(s) {', '.join(b.label for b in found)} "
                     f"(SEC_E_BAD_BINDINGS with Extended Protection); remove: {remove_binding_command(first)}",
                     value=[b.information for b in found])
    return CheckResult("no_ip_specific_444", "pass", f"{ctx.server}: port 444 bound only as {BACKEND_LABEL}",
                       value=[])


def backend_no_hsts(ctx: _Context) -> CheckResult:
    name = ctx.settings.backend_site
    site = ctx.facts.sites.get(name)
    if site is None or not site.exists:
        return CheckResult("backend_no_hsts", "skip", f"{ctx.server}: IIS site {name} does not exist")
    how = [what for what, on in (("the site's hsts element", site.hsts_enabled),
                                 ("a Strict-Transport-Security custom header", site.hsts_header)) if on]
    if how:
        return _fail("backend_no_hsts", f"{ctx.server}: HSTS is enabled on {name} ({' and '.join(how)}), which "
                                        "Exchange does not support; remove it there", value=True)
    return CheckResult("backend_no_hsts", "pass", f"{ctx.server}: no HSTS on {name}", value=False)


def root_copy(ctx: _Context) -> CheckResult:
    if ctx.cert is None:
        return ctx.no_backend_cert("root_copy")
    if ctx.facts.in_root(ctx.bound):
        return CheckResult("root_copy", "pass", f"{ctx.server}: back-end certificate {short(ctx.bound)} is in "
                                                "LocalMachine\\Root", value=True)
    allow = ctx.facts.allow_internal_untrusted_certs
    if allow == 0:
        return _fail("root_copy", f"{ctx.server}: back-end certificate {short(ctx.bound)} is not in "
                                  "LocalMachine\\Root and AllowInternalUntrustedCerts is 0, so proxying to it fails; "
                                  "run `exbe trust`", value=False)
    return CheckResult("root_copy", "warn", f"{ctx.server}: back-end certificate {short(ctx.bound)} is not in "
                                            "LocalMachine\\Root (as Exchange setup puts it); run `exbe trust`",
                       value=False)


def loopback_443(ctx: _Context) -> CheckResult:
    site = ctx.settings.frontend_site
    binding = loopback_binding(ctx.facts, ctx.settings)
    if binding is None:
        return CheckResult("loopback_443", "skip", f"{ctx.server}: {site} has no https 127.0.0.1:443: binding")
    if split_loopback(ctx.facts, ctx.settings, ctx.bound) is not None:
        return _fail("loopback_443", f"{ctx.server}: {binding.label} carries the self-signed "
                                     f"{binding.certificate_hash}, not the back-end certificate {ctx.bound} of "
                                     f"{ctx.settings.backend_site} {BACKEND_LABEL} (a split binding: a superseded or "
                                     f"duplicate back-end certificate); `exbe bind` moves it to {ctx.bound}",
                     value=binding.certificate_hash)
    result = _binding_valid("loopback_443", ctx, binding)
    if result.status == "fail":
        # Exchange setup binds the back-end certificate here, and exbe's bind moves it along with *:444:; a
        # CA-issued certificate here is the admin's choice, which exbe never re-points.
        if binding.certificate_hash in (None, ctx.bound) or ctx.cert is None:
            advice = ("renew with `exbe renew` (the renewed certificate is bound here too)" if ctx.cert is not None
                      else ctx.bind_advice + " (the back-end certificate is bound here too)")
        else:
            advice = "assign a valid certificate to this binding in IIS Manager (exbe never re-points it)"
        result = dataclasses.replace(result, message=f"{result.message}; {advice}")
    return result


def default_site_not_self_signed(ctx: _Context) -> CheckResult:
    site = ctx.settings.frontend_site
    binding = frontend_binding(ctx.facts, ctx.settings)
    if binding is None:
        return CheckResult("default_site_not_self_signed", "skip",
                           f"{ctx.server}: {site} has no https binding on all addresses, port 443")
    result = _binding_valid("default_site_not_self_signed", ctx, binding)
    cert = ctx.facts.certificate(binding.certificate_hash)
    if result.status == "pass" and cert and cert.self_signed:
        # Clients warn; exbe never re-points the public binding itself, the admin assigns a CA-issued certificate.
        return CheckResult("default_site_not_self_signed", "warn",
                           f"{ctx.server}: {binding.label} carries the self-signed {short(cert.thumbprint)} "
                           f"({cert.friendly_name}); assign a CA-issued certificate to IIS", value=cert.thumbprint)
    return result


def internal_transport_cert(ctx: _Context) -> CheckResult:
    skipped = ctx.no_exchange("internal_transport_cert", "the internal transport certificate")
    if skipped:
        return skipped
    assert ctx.exchange is not None
    thumb = ctx.exchange.internal_transport
    if not thumb:
        return CheckResult("internal_transport_cert", "warn", f"{ctx.server}: no internal transport certificate is "
                                                              "configured (Get-TransportService); put SMTP on the "
                                                              "back-end certificate with `exbe renew --smtp move`")
    cert = ctx.facts.certificate(thumb)
    if cert is None:
        return _fail("internal_transport_cert", f"{ctx.server}: internal transport certificate {short(thumb)} is not "
                                                "in LocalMachine\\My; move SMTP to a certificate that is: "
                                                "`exbe renew --smtp move`", value=thumb)
    days = ctx.days(cert)
    if days <= 0:
        # exbe leaves SMTP where it is unless asked, so this is the admin's call, not a failed renewal.
        return CheckResult("internal_transport_cert", "warn",
                           f"{ctx.server}: internal transport certificate {short(thumb)} expired on "
                           f"{cert.not_after.date()}; move SMTP to the back-end certificate with "
                           "`exbe renew --smtp move`", value=days)
    return CheckResult("internal_transport_cert", "pass", f"{ctx.server}: internal transport certificate "
                                                          f"{short(thumb)} expires in {days} days", value=days)


def auth_cert(ctx: _Context) -> CheckResult:
    skipped = ctx.no_exchange("auth_cert", "the Auth certificate")
    if skipped:
        return skipped
    assert ctx.exchange is not None
    auth = ctx.exchange.auth
    thumb = auth.current
    if not thumb:
        return _fail("auth_cert", f"{ctx.server}: Get-AuthConfig names no current Auth certificate; create one "
                                  "with `exbe auth`")
    cert = ctx.facts.certificate(thumb)
    if cert is None:
        return _fail("auth_cert", f"{ctx.server}: the current Auth certificate {short(thumb)} is not in "
                                  "LocalMachine\\My; `exbe auth` imports or replaces it", value=thumb)
    days = ctx.days(cert)
    if days <= 0:
        return _fail("auth_cert", f"{ctx.server}: the Auth certificate {short(thumb)} expired on "
                                  f"{cert.not_after.date()} (OWA/ECP redirect loops, Event 1003); replace it "
                                  "with `exbe auth`", value=days)
    staged = ctx.facts.certificate(auth.next)
    if days < ctx.settings.warn_days and not (staged and ctx.days(staged) > 0):
        return CheckResult("auth_cert", "warn", f"{ctx.server}: the Auth certificate {short(thumb)} expires in {days} "
                                                "days and no next certificate is staged; stage one "
                                                "with `exbe auth`", value=days)
    return CheckResult("auth_cert", "pass", f"{ctx.server}: the Auth certificate {short(thumb)} expires in {days} "
                                            "days", value=days)


def serialization_signing(ctx: _Context) -> CheckResult:
    skipped = ctx.no_exchange("serialization_signing", "serialization signing")
    if skipped:
        return skipped
    assert ctx.exchange is not None
    if ctx.exchange.serialization_signing is None:
        return CheckResult("serialization_signing", "warn", f"{ctx.server}: the serialization payload signing state "
                                                            f"is unknown: {ctx.exchange.signing_why}", value=None)
    if not ctx.exchange.serialization_signing:
        return CheckResult("serialization_signing", "warn", f"{ctx.server}: serialization payload signing is off "
                                                            f"({ctx.exchange.signing_why or 'a setting override'}); "
                                                            "enable it", value=False)
    blinded = exchange_blinded(ctx.facts, ctx.exchange)
    note = f" ({blinded})" if blinded else ""
    return CheckResult("serialization_signing", "pass", f"{ctx.server}: serialization payload signing is "
                                                        f"enabled{note}", value=True)


def w3svc_running(ctx: _Context) -> CheckResult:
    state = ctx.facts.services.get("W3SVC")
    if state is None:
        return CheckResult("w3svc_running", "skip", f"{ctx.server}: the W3SVC state was not reported")
    if state != "Running":
        return _fail("w3svc_running", f"{ctx.server}: W3SVC is {state}; the web sites are down; start it "
                                      "(`exbe restart`)", value=state)
    return CheckResult("w3svc_running", "pass", f"{ctx.server}: W3SVC is Running", value=state)


def tls_444_serves_bound(ctx: _Context) -> CheckResult:
    tls = ctx.probe.get("tls")
    if tls is None:
        return CheckResult("tls_444_serves_bound", "skip", f"{ctx.server}: TLS probe of port 444 not run: "
                                                           f"{ctx.probe.get('unreachable') or 'no probe'}")
    if not tls.get("ok"):
        advice = ctx.bind_advice if ctx.cert is None else \
            "restart IIS with `exbe restart`, then check `netsh http show sslcert ipport=0.0.0.0:444` on the server"
        return _fail("tls_444_serves_bound", f"{ctx.server}: port 444 {tls.get('error') or 'TLS handshake failed'}; "
                                             f"{advice}")
    served = (tls.get("thumbprint") or "").upper() or None
    if served != ctx.bound:
        return _fail("tls_444_serves_bound",
                     f"{ctx.server}: port 444 serves {short(served)} but {BACKEND_LABEL} carries {short(ctx.bound)}"
                     "; http.sys has not picked up the binding (restart IIS with `exbe restart`)",
                     details=f"served {served}, bound {ctx.bound}", value=served)
    return CheckResult("tls_444_serves_bound", "pass", f"{ctx.server}: port 444 serves the bound certificate "
                                                       f"{short(served)}", value=served)


def backend_http_401(ctx: _Context) -> CheckResult:
    http = ctx.probe.get("http")
    if http is None:
        reason = ctx.probe.get("unreachable") or ("no TLS connection" if ctx.probe.get("tls") else "no probe")
        return CheckResult("backend_http_401", "skip", f"{ctx.server}: HTTP request to the back end not sent: {reason}")
    status = http.get("status")
    if status == 401:
        return CheckResult("backend_http_401", "pass", f"{ctx.server}: the back end answers 401 (IIS is serving)",
                           value=status)
    if status is None:
        return _fail("backend_http_401", f"{ctx.server}: the back end gave no HTTP answer: {http.get('error')}")
    advice = ("start them with `exbe restart`" if status == 503 else
              "check the MSExchange app pools (Get-WebAppPoolState) and the Application event log on the server")
    return _fail("backend_http_401", f"{ctx.server}: the back end answers {status}, not 401; check W3SVC and the "
                                     f"MSExchange app pools: {advice}", value=status)


def interrupted_run(ctx: _Context) -> CheckResult:
    """An exbe run that ended without releasing its lock (killed, cancelled, a lost connection): its journal is
    an expired lock record, or a last run whose lock `exbe unlock` removed; the run after it reports it and
    converges. Warn, naming the run, its task and last step, and what it left: certificates created since it took
    the lock that nothing binds (the next `exbe renew` reuses such a staged certificate; `exbe cleanup` removes
    what stays superseded). A lock held now, unexpired, is another run at work: warn too."""
    if ctx.lock is None:
        return CheckResult("interrupted_run", "skip", f"{ctx.server}: exbe's lock record was not read")
    record = ctx.lock.interrupted()
    if record is not None:
        bound = {b.certificate_hash for b in ctx.facts.bindings if b.certificate_hash}
        left = leftovers(record, {c.thumbprint for c in ctx.facts.certificates}, bound)
        what = (f"; it left {', '.join(left)} in LocalMachine\\My, not bound (the next `exbe renew` reuses a staged "
                "certificate, `exbe cleanup` removes superseded ones)" if left else "; it left no new certificate")
        return CheckResult("interrupted_run", "warn", f"{ctx.server}: {interrupted_message(record)}{what}",
                           details=str(dict(record.journal[-1])) if record.journal else "", value=record.run_id)
    held = ctx.lock.held
    if held is not None and not held.expired(ctx.lock.now) and not ctx.lock.acquired:
        return CheckResult("interrupted_run", "warn", f"{ctx.server}: {held.held_by_another(ctx.server)}",
                           value=held.run_id)
    last = ctx.lock.last_run
    ended = f"; the last run ({last.run_id}, {last.task}) released its lock" if last and last.run_id else ""
    return CheckResult("interrupted_run", "pass", f"{ctx.server}: no interrupted exbe run{ended}")


CHECKS: tuple[Check, ...] = (
    backend_binding_present, backend_days_left, backend_signature, backend_key_size, backend_key_provider,
    no_ip_specific_444, backend_no_hsts, root_copy, loopback_443, default_site_not_self_signed,
    internal_transport_cert, auth_cert, auth_next, auth_previous, federation_cert, serialization_signing,
    w3svc_running,
    tls_444_serves_bound, backend_http_401, interrupted_run,
)


def _binding_valid(check_id: str, ctx: _Context, binding: Binding) -> CheckResult:
    """A binding's certificate exists in My and is unexpired (HealthChecker's "certificate binding issue")."""
    thumb, where = binding.certificate_hash, binding.label
    if not thumb:
        return _fail(check_id, f"{ctx.server}: {where} has no certificate")
    cert = ctx.facts.certificate(thumb)
    if cert is None:
        return _fail(check_id, f"{ctx.server}: {where} carries {short(thumb)}, which is not in LocalMachine\\My",
                     value=thumb)
    days = ctx.days(cert)
    if days <= 0:
        return _fail(check_id, f"{ctx.server}: {where} carries {short(thumb)}, expired on {cert.not_after.date()}",
                     value=thumb)
    return CheckResult(check_id, "pass", f"{ctx.server}: {where} carries {short(thumb)}, valid for {days} days",
                       value=thumb)


def _fail(check_id: str, message: str, *, details: str = "", value: Any = None) -> CheckResult:
    return CheckResult(check_id, "fail", message, details=details, value=value)

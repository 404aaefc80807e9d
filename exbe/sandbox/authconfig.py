"""The organization the simulated servers share: its Auth configuration, hybrid state and Federation trust.

Real Exchange keeps ``AuthConfig`` once per organization, in Active Directory; every Mailbox/Client Access server
reads the same object, and the certificate servicelet of MSExchangeServiceHost on each server (1) copies the Auth
certificates it names into ``LocalMachine\\My`` and (2) makes the next certificate current at its effective date.
An :class:`Organization` models that over a fleet's hosts:

* one AuthConfig (current, next, previous, effective date) mirrored into every member's
  :class:`~exbe.sandbox.state.ExchangeConfig`, so each member's ``Get-AuthConfig`` answers the same object (its wire
  shape is the capture's, ``exbe.sandbox.exchange._get_auth_config``);
* the servicelet, run by :meth:`Organization.tick` on every Exchange cmdlet of a member and when a test moves the
  clock (:meth:`Organization.advance`): next becomes current at its effective date (Microsoft: "usually within 12
  hours" of it; the model takes the date itself), and a staged or published Auth certificate reaches the other
  members ``replication_delay`` after it was configured (KB 2617816: "may take an hour"; the default here) unless a
  member is unreachable or does not replicate (the case MEAC's import exists for);
* hybrid on or off (``Get-HybridConfiguration`` answers an object, or nothing: MEAC tests ``$null``);
* a member that is unreachable from the others: ``Get-ExchangeCertificate -Server`` naming it fails with an error
  whose reason is not ``InvalidOperationException`` (MEAC's test for "unreachable"), a certificate missing on a
  reachable member fails with ``InvalidOperationException`` (MEAC's test for "missing": its Pester scenarios 4-5);
* the Federation trust (``Get-FederationTrust``, ``Set-FederationTrust``, ``Get-FederatedDomainProof``,
  ``Test-FederationTrustCertificate``).

Sources of each shape and text:

* ``Set-AuthConfig``'s parameter sets: Microsoft's cmdlet reference (learn.microsoft.com ... /set-authconfig);
  ``-PublishCertificate`` "immediately rolls over the certificate configured as the next certificate and makes it the
  current certificate" (same page); the refusal of a date in the past: "The new certificate effective date is
  invalid. The effective date must be greater than the current time." (the real text, quoted in CSS-Exchange PR
  #1888). **Belief**: the exception type of that refusal, the text and type for a thumbprint that is not in the
  server's store, and for ``-PublishCertificate`` with no next certificate (no capture of either).
* ``Get-ExchangeCertificate -Server X -Thumbprint T``: missing -> ``InvalidOperationException`` (MEAC's rule and its
  Pester mocks); the message text, and the unreachable error's text and type, are **belief**.
* ``Import-ExchangeCertificate -Server -FileData -Password -PrivateKeyExportable``: Microsoft's cmdlet reference
  (``-Password`` is a SecureString; MEAC's ``Import-ExchangeAuthCertificateToServers.ps1`` passes one it made in
  memory). A plain string for ``-Password`` fails parameter binding as PowerShell does for any string given to a
  SecureString parameter (no conversion exists: ``ParameterArgumentTransformationError``). The texts for a wrong
  password and for a thumbprint already in the store are **belief** (no capture or documentation found): the wrong
  password carries Windows' own text for a PFX that does not open ("The specified network password is not
  correct.", ERROR_INVALID_PASSWORD, what ``X509Certificate2.Import`` raises), both as terminating errors.
* AD sites: each server's ``Get-ExchangeServer`` ``Site`` (the capture's shape, :meth:`exbe.sandbox.exchange.
  _Directory.site`); the organization places members in sites (``sites``: computer name -> site, default
  ``Default-First-Site-Name``). An imported Auth certificate seeds its site: members of that site whose servicelet
  copies nothing otherwise (``not_replicating``) get it ``replication_delay`` after the import (MEAC: "one server
  per AD site is enough"; the mechanism -- each site's servicelet copying from a server of its site -- is **belief**).
* ``Get-HybridConfiguration``: the type name and properties are **belief** (no capture); only "an object or
  nothing" is what MEAC and exbe rely on.
* Federation: the property names of ``Get-FederationTrust`` (``OrgCertificate``, ``OrgNextCertificate``,
  ``OrgPrevCertificate``, ``OrgPrivCertificate``, ``OrgNextPrivCertificate``, ``OrgPrevPrivCertificate``) and of
  ``Get-FederatedDomainProof`` (``DomainName``, ``Thumbprint``, ``Proof``, ``DnsRecord``) and the flow are
  Microsoft's documentation (../shared/auth-certificate.md §5); the certificate properties cross the wire as X509
  objects, ``RawData`` only (real-server-shapes.md §2); ``Test-FederationTrustCertificate``'s ``State`` values,
  the proof's algorithm and every error text there are **belief**.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.serialization import pkcs12

from . import certs, clock
from .records import ErrorInfo, Outcome, SandboxObject, TerminatingError
from .state import AUTH_SUBJECT, CSP_PROVIDER, HostState, StoredCert, utcnow

if TYPE_CHECKING:
    from .exchange import _Exchange
    from .fleet import Fleet

HYBRID_TYPE = "Microsoft.Exchange.Management.Hybrid.HybridConfiguration"  # belief: no capture
FEDERATION_TRUST_TYPE = "Microsoft.Exchange.Data.Directory.Management.FederationTrust"  # belief: no capture
DOMAIN_PROOF_TYPE = "Microsoft.Exchange.Management.SystemConfigurationTasks.FederatedDomainProof"  # belief
TRUST_TEST_TYPE = "Microsoft.Exchange.Management.SystemConfigurationTasks.FederationTrustCertificateState"  # belief
X509_TYPES = ["System.Security.Cryptography.X509Certificates.X509Certificate2",
              "System.Security.Cryptography.X509Certificates.X509Certificate", "System.Object"]
FEDERATION_TRUST_NAME = "Microsoft Federation Gateway"
SITE = "Default-First-Site-Name"
#: What the servicelet needs before a configured certificate reaches the other servers (KB 2617816: up to an hour).
REPLICATION_DELAY = datetime.timedelta(hours=1)
#: Belief (no capture): what Import-ExchangeCertificate says when the PFX's password is wrong -- Windows' text for
#: ERROR_INVALID_PASSWORD, which X509Certificate2's PFX import raises.
WRONG_PASSWORD = "The specified network password is not correct."
DATE_IN_THE_PAST = ("The new certificate effective date is invalid. The effective date must be greater than the "
                    "current time.")


@dataclasses.dataclass
class Member:
    """One server of the organization: its state, the lock its cmdlets and steps hold, and how to persist it."""

    state: HostState
    lock: Any = dataclasses.field(default_factory=threading.RLock)
    save: Callable[[], None] = lambda: None

    @property
    def name(self) -> str:
        return self.state.computer_name

    def answers_to(self, identity: Any) -> bool:
        text = str(identity or "").strip().lower()
        return text in {self.state.computer_name.lower(), self.state.fqdn.lower(), self.state.host.lower()}


@dataclasses.dataclass
class FederationTrust:
    """The organization's trust with the Microsoft Federation Gateway: its certificates by thumbprint."""

    current: str | None = None
    next: str | None = None
    previous: str | None = None


@dataclasses.dataclass
class _Configured:
    """An Auth or Federation certificate the organization names, with its key (what the servicelet copies)."""

    cert: StoredCert
    since: datetime.datetime


class Organization:
    """The organization of a set of simulated servers (see the module docstring)."""

    def __init__(self, members: list[Member], *, replication_delay: datetime.timedelta = REPLICATION_DELAY,
                 hybrid: bool = False) -> None:
        if not members:
            raise ValueError("an organization needs at least one server")
        self.members = members
        self.replication_delay = replication_delay
        self.hybrid = hybrid
        self.unreachable: set[str] = set()  # computer names the other servers cannot reach
        self.not_replicating: set[str] = set()  # computer names whose servicelet copies nothing
        self.sites: dict[str, str] = {}  # server name (any of its names) -> AD site (SITE when absent)
        self.seeded: dict[tuple[str, str], datetime.datetime] = {}  # (site, thumbprint) -> when it was imported
        self.lock = threading.RLock()
        self.configured: dict[str, _Configured] = {}
        self.federation: FederationTrust | None = None
        first = members[0].state.exchange
        self.current, self.next = first.auth_current, first.auth_next
        self.previous = first.auth_previous
        self.next_effective = certs.parse_iso(first.auth_next_effective) if first.auth_next_effective else None
        # One Auth certificate for the organization: the first server's, on every server (as after setup and
        # replication), in place of the one each server's scenario made for itself.
        home = members[0].state.find("My", self.current)
        if home is not None:
            self.configured[home.thumbprint] = _Configured(home, utcnow() - replication_delay)
            for member in members[1:]:
                with self._holding(member):
                    own = member.state.find("My", member.state.exchange.auth_current)
                    if own is not None and own.thumbprint != home.thumbprint:
                        member.state.my.remove(own)
                    self._copy(member, home)
        self._sync()
        for member in members:
            _ORGANIZATIONS[id(member.state)] = (weakref.ref(member.state), self)

    @classmethod
    def of_fleet(cls, fleet: Fleet, **options: Any) -> Organization:
        """The organization of a running sandbox fleet's hosts (in the fleet's order)."""
        return cls([Member(host.state, host.lock, host.save) for host in fleet.hosts.values()], **options)

    # -- queries -----------------------------------------------------------------------------------------------------
    def member(self, identity: Any) -> Member | None:
        return next((m for m in self.members if m.answers_to(identity)), None)

    def reachable(self, member: Member) -> bool:
        return member.name not in self.unreachable

    def site(self, member: Member) -> str:
        return next((site for name, site in self.sites.items() if member.answers_to(name)), SITE)

    # -- the servicelet ----------------------------------------------------------------------------------------------
    def tick(self, *, wait: bool = False) -> None:
        """What the certificate servicelets have done by now: next becomes current at its effective date, configured
        certificates reach the reachable, replicating servers once ``replication_delay`` has passed. A server busy
        with a request of its own is caught up on a later tick (``wait``: wait for it), so two servers' ticks never
        wait for each other."""
        now = utcnow()
        with self.lock:
            if self.next and self.next_effective is not None and now >= self.next_effective:
                self.previous, self.current, self.next, self.next_effective = self.current, self.next, None, None
            wanted = [t for t in (self.current, self.next) if t]
            if self.federation is not None:
                wanted += [t for t in (self.federation.current, self.federation.next) if t]
            due = [self.configured[t].cert for t in wanted
                   if t in self.configured and now >= self.configured[t].since + self.replication_delay]
            for member in self.members:
                if not member.lock.acquire(timeout=10 if wait else 0):
                    continue
                try:
                    if self.reachable(member) and member.name not in self.not_replicating:
                        for cert in due:
                            self._copy(member, cert)
                    elif self.reachable(member):  # an import in its site seeds it (module docstring)
                        for cert in due:
                            seeded = self.seeded.get((self.site(member), cert.thumbprint))
                            if seeded is not None and now >= seeded + self.replication_delay:
                                self._copy(member, cert)
                    self._sync_one(member)
                finally:
                    member.lock.release()

    def advance(self, delta: datetime.timedelta) -> None:
        """Move the simulated clock by ``delta`` and let the servicelets catch up."""
        clock.advance(delta)
        self.tick(wait=True)

    def leave(self) -> None:
        """Forget the organization (the servers answer as stand-alone ones again)."""
        for member in self.members:
            _ORGANIZATIONS.pop(id(member.state), None)

    # -- changes the cmdlets make ------------------------------------------------------------------------------------
    def configure(self, cert: StoredCert) -> None:
        """A certificate the organization now names: the servicelets start copying it."""
        self.configured.setdefault(cert.thumbprint, _Configured(_with_key(cert), utcnow()))

    def deploy(self, thumb: str) -> None:
        """Copy a configured certificate to every reachable server now (``-PublishCertificate``)."""
        configured = self.configured.get(thumb)
        if configured is None:
            return
        for member in self.members:
            if self.reachable(member):
                with self._holding(member):
                    self._copy(member, configured.cert)

    def set_auth(self, current_days: int | None, *, next_days: int | None = None,
                 next_effective_in: datetime.timedelta | None = None, days_total: int = 1826) -> dict[str, str]:
        """Give the organization Auth certificates with these days left, on every server, configured long ago (a
        scenario's starting point): ``current_days`` None configures no current one; ``next_days`` stages a next
        one effective ``next_effective_in`` from now. Returns ``{"current": thumbprint, "next": thumbprint}``."""
        made: dict[str, str] = {}
        now = utcnow()
        with self.lock:
            for role, days, index in (("current", current_days, 11), ("next", next_days, 12)):
                if days is None:
                    continue
                not_after = now + datetime.timedelta(days=days)
                pem, key = certs.make_self_signed(AUTH_SUBJECT, [], not_after - datetime.timedelta(days=days_total),
                                                  not_after, key_index=index)
                cert = StoredCert(pem=pem, key_pem=key, friendly_name=AUTH_SUBJECT, provider=CSP_PROVIDER,
                                  key_accessible=True, network_service_read=True, exportable=True)
                self.configured[cert.thumbprint] = _Configured(cert, now - self.replication_delay)
                self.deploy(cert.thumbprint)
                made[role] = cert.thumbprint
            self.current = made.get("current")
            self.next = made.get("next")
            self.next_effective = (now + (next_effective_in or datetime.timedelta(days=30))).replace(microsecond=0) \
                if self.next else None
            self.previous = None
            self._sync()
        return made

    def create_federation_trust(self, days_left: int = 900, days_total: int = 1825) -> str:
        """A Federation trust whose certificate (subject ``CN=Federation``) is on every server; its thumbprint."""
        now = utcnow()
        not_after = now + datetime.timedelta(days=days_left)
        pem, key = certs.make_self_signed("Federation", ["Federation"], not_after - datetime.timedelta(days=days_total),
                                          not_after, key_index=7)
        cert = StoredCert(pem=pem, key_pem=key, friendly_name="Exchange Delegation Federation", provider=CSP_PROVIDER,
                          key_accessible=True, exportable=True)
        with self.lock:
            self.configured[cert.thumbprint] = _Configured(cert, now - self.replication_delay)
            self.federation = FederationTrust(current=cert.thumbprint)
            self.deploy(cert.thumbprint)
        return cert.thumbprint

    # -- internals ---------------------------------------------------------------------------------------------------
    def _sync(self) -> None:
        """Every member's view of the one AuthConfig."""
        for member in self.members:
            with self._holding(member):
                self._sync_one(member)

    def _sync_one(self, member: Member) -> None:
        effective = certs.iso(self.next_effective) if self.next_effective else None
        config = member.state.exchange
        after = (self.current, self.next, self.previous, effective)
        if (config.auth_current, config.auth_next, config.auth_previous, config.auth_next_effective) != after:
            config.auth_current, config.auth_next, config.auth_previous, config.auth_next_effective = after
            member.save()

    @staticmethod
    def _copy(member: Member, cert: StoredCert) -> None:
        if member.state.find("My", cert.thumbprint) is None:
            member.state.my.append(_with_key(cert))
            member.save()

    @staticmethod
    @contextlib.contextmanager
    def _holding(member: Member) -> Iterator[None]:
        """Another server's lock, never waited for long: two servers changing each other at once would deadlock."""
        if not member.lock.acquire(timeout=10):
            raise TerminatingError(_rpc_unavailable(member.name))
        try:
            yield
        finally:
            member.lock.release()


#: id(HostState) -> (a weak reference to it, its organization): a server belongs to at most one organization.
_ORGANIZATIONS: dict[int, tuple[weakref.ref[HostState], Organization]] = {}


def organization_of(state: HostState) -> Organization:
    """The server's organization; a server of no organization is one of its own."""
    entry = _ORGANIZATIONS.get(id(state))
    if entry is not None and entry[0]() is state:
        return entry[1]
    return Organization([Member(state)])


def _with_key(cert: StoredCert) -> StoredCert:
    """A copy as the servicelet or an import puts it: key exportable, in a legacy CSP, readable by the machine."""
    return StoredCert(pem=cert.pem, key_pem=cert.key_pem, friendly_name=cert.friendly_name or AUTH_SUBJECT,
                      provider=cert.provider or CSP_PROVIDER, key_accessible=cert.key_pem is not None,
                      network_service_read=True, exportable=True)


# -- error records ---------------------------------------------------------------------------------------------------
def _rpc_unavailable(server: str) -> ErrorInfo:
    """Belief: the text and type of a certificate cmdlet's failure to reach another server."""
    return ErrorInfo(f"A special Rpc error occurs on server {server}: The RPC server is unavailable.",
                     error_id="RpcClientException", category="ResourceUnavailable",
                     exception_type="Microsoft.Exchange.Management.SystemConfigurationTasks.RpcClientException",
                     target=server)


def _missing(thumb: str, server: str) -> ErrorInfo:
    """MEAC: a certificate not on the server is an ``InvalidOperationException`` (the text is a belief)."""
    return ErrorInfo(f"The certificate with thumbprint {thumb} was not found on server {server}.",
                     error_id="CertificateNotFound", category="InvalidOperation",
                     exception_type="System.InvalidOperationException", target=thumb)


def _invalid(message: str, cmdlet: str) -> TerminatingError:
    return TerminatingError(ErrorInfo(message, error_id=f"InvalidOperation,{cmdlet}", category="InvalidOperation",
                                      exception_type="System.InvalidOperationException"))


def _thumb(value: Any) -> str:
    return str(value or "").replace(" ", "").upper()


def _date(value: Any) -> datetime.datetime | None:
    """A DateTime parameter as PowerShell binds it: a DateTime, or text converted with the invariant culture (ISO
    8601 parses; a time zone designator is honoured, none means the server's local time, UTC here)."""
    if isinstance(value, datetime.datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise TerminatingError(ErrorInfo(
                f"Cannot process argument transformation on parameter 'NewCertificateEffectiveDate'. Cannot convert "
                f"value \"{value}\" to type \"System.DateTime\".", error_id="ParameterArgumentTransformationError",
                category="InvalidData",
                exception_type="System.Management.Automation.ParameterBindingException")) from None
    return None


def _switch(params: dict[str, Any], name: str) -> bool:
    return name in params and (params[name] is None or bool(params[name]))


def _target(org: Organization, ex: _Exchange, params: dict[str, Any]) -> Member:
    """The member ``-Server`` names (the executing server without it); unreachable or unknown ones fail."""
    if "Server" not in params:
        here = org.member(ex.state.computer_name)
        assert here is not None
        return here
    member = org.member(params["Server"])
    if member is None:
        raise TerminatingError(ex.not_found(params["Server"]))
    if not org.reachable(member) and not member.answers_to(ex.state.computer_name):
        raise TerminatingError(_rpc_unavailable(member.state.fqdn))
    return member


# -- the cmdlets -----------------------------------------------------------------------------------------------------
def _get_auth_config(original: Callable[[_Exchange, dict[str, Any]], Outcome]) -> Callable[..., Outcome]:
    def run(ex: _Exchange, params: dict[str, Any]) -> Outcome:
        organization_of(ex.state).tick()
        return original(ex, params)
    return run


def site_of(state: HostState) -> str:
    """The AD site of a server (``Get-ExchangeServer``'s ``Site``), as its organization places it."""
    org = organization_of(state)
    member = org.member(state.computer_name)
    return org.site(member) if member is not None else SITE


def _get_exchange_server(original: Callable[[_Exchange, dict[str, Any]], Outcome]) -> Callable[..., Outcome]:
    """Org-aware: without ``-Identity`` every server of the organization (Microsoft's reference: "returns summary
    information about all Exchange servers in the organization"), with it the server named."""
    def run(ex: _Exchange, params: dict[str, Any]) -> Outcome:
        org = organization_of(ex.state)
        if "Identity" not in params:
            output = []
            for each in org.members:
                output.extend(original(ex if each.state is ex.state else _view(each), params).output)
            return Outcome(output=output)
        named = org.member(params["Identity"])
        if named is None or named.state is ex.state:
            return original(ex, params)
        return original(_view(named), {**params, "Identity": named.state.computer_name})
    return run


def _get_exchange_certificate(original: Callable[[_Exchange, dict[str, Any]], Outcome]) -> Callable[..., Outcome]:
    """Org-aware: ``-Server`` may name any server of the organization (Exchange asks that server)."""
    def run(ex: _Exchange, params: dict[str, Any]) -> Outcome:
        org = organization_of(ex.state)
        org.tick()
        if "Server" not in params:
            return original(ex, params)
        member = org.member(params["Server"])
        if member is None:
            return original(ex, params)  # no such server: the cmdlet's own refusal
        if not org.reachable(member) and not member.answers_to(ex.state.computer_name):
            return Outcome(errors=[_rpc_unavailable(member.state.fqdn)])  # an error record; a batch goes on
        with org._holding(member):
            there = _view(member)
            thumb = ex.thumbprint_param(params)
            if thumb and member.state.find("My", thumb) is None:
                return Outcome(errors=[_missing(thumb, member.state.fqdn)])
            return original(there, params)
    return run


def _set_auth_config(ex: _Exchange, params: dict[str, Any]) -> Outcome:
    org = organization_of(ex.state)
    org.tick()
    with org.lock:
        if "NewCertificateThumbprint" in params:
            thumb = _thumb(params["NewCertificateThumbprint"])
            member = _target(org, ex, params)
            cert = member.state.find("My", thumb)
            if cert is None or cert.key_pem is None:
                raise _invalid(f"The certificate with thumbprint {thumb} couldn't be found on server "
                               f"{member.state.fqdn}, or it has no private key.", "Set-AuthConfig")  # text: belief
            effective = _date(params.get("NewCertificateEffectiveDate"))
            if effective is None:
                raise _invalid("NewCertificateEffectiveDate must be specified with NewCertificateThumbprint.",
                               "Set-AuthConfig")  # belief
            effective = effective if effective.tzinfo else effective.replace(tzinfo=datetime.timezone.utc)
            if effective <= utcnow():
                raise TerminatingError(ErrorInfo(DATE_IN_THE_PAST, error_id="InvalidOperation,Set-AuthConfig",
                                                 category="InvalidOperation",
                                                 exception_type="System.InvalidOperationException"))
            org.configure(cert)
            org.next, org.next_effective = thumb, effective.astimezone(datetime.timezone.utc).replace(microsecond=0)
        if _switch(params, "PublishCertificate"):
            if not org.next:
                raise _invalid("There is no next certificate to publish: set one with -NewCertificateThumbprint "
                               "first.", "Set-AuthConfig")  # belief
            org.previous, org.current, org.next, org.next_effective = org.current, org.next, None, None
            assert org.current is not None
            org.deploy(org.current)
        if _switch(params, "ClearPreviousCertificate"):
            org.previous = None
        org._sync()
    return Outcome()


def _get_hybrid_configuration(ex: _Exchange, params: dict[str, Any]) -> Outcome:
    from .exchange import Live

    if not organization_of(ex.state).hybrid:
        return Outcome()
    return Outcome(output=[Live([HYBRID_TYPE, "System.Object"], {
        "Name": "Hybrid Configuration", "Features": ["FreeBusy", "MoveMailbox", "Mailtips", "MessageTracking",
                                                     "OwaRedirection", "OnlineArchive", "SecureMail", "Photos"],
    }, "Hybrid Configuration")])


def _import_exchange_certificate(ex: _Exchange, params: dict[str, Any]) -> Outcome:
    from .psrp import SecureText

    org = organization_of(ex.state)
    member = _target(org, ex, params)
    data = params.get("FileData")
    password = params.get("Password")
    if not isinstance(data, (bytes, bytearray)):
        raise _invalid("FileData must be the bytes of a PFX file.", "Import-ExchangeCertificate")
    if password is not None and not isinstance(password, SecureText):
        kind = "System.String" if isinstance(password, str) else type(password).__name__
        raise TerminatingError(ErrorInfo(  # PowerShell's binder echoes the value: a plain password leaks here
            f"Cannot process argument transformation on parameter 'Password'. Cannot convert the \"{password}\" "
            f"value of type \"{kind}\" to type \"System.Security.SecureString\".",
            error_id="ParameterArgumentTransformationError,Import-ExchangeCertificate", category="InvalidData",
            exception_type="System.Management.Automation.ParameterBindingException"))
    secret = password.value if isinstance(password, SecureText) else ""
    try:
        key, cert, _ = pkcs12.load_key_and_certificates(bytes(data), secret.encode("utf-8"))
    except ValueError:
        raise TerminatingError(ErrorInfo(WRONG_PASSWORD, error_id="InvalidOperation,Import-ExchangeCertificate",
                                         category="InvalidOperation",
                                         exception_type="System.Security.Cryptography.CryptographicException")) \
            from None  # text and type: belief (module docstring)
    if cert is None:
        raise _invalid("The PFX file holds no certificate.", "Import-ExchangeCertificate")
    pem = cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
    key_text = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()).decode("ascii") if key is not None else None
    stored = StoredCert(pem=pem, key_pem=key_text, friendly_name=AUTH_SUBJECT, provider=CSP_PROVIDER,
                        key_accessible=key is not None, network_service_read=True,
                        exportable=_switch(params, "PrivateKeyExportable"))
    with org._holding(member):
        if member.state.find("My", stored.thumbprint) is not None:
            raise _invalid(f"Cannot import certificate. A certificate with the thumbprint {stored.thumbprint} already "
                           "exists.", "Import-ExchangeCertificate")  # belief
        member.state.my.append(stored)
        member.save()
        org.seeded.setdefault((org.site(member), stored.thumbprint), utcnow())
        return Outcome(output=[_view(member).certificate(stored)])


def _view(member: Member) -> _Exchange:
    """The cmdlets' view of another server of the organization."""
    from .exchange import _Exchange as Exchange

    return Exchange(member.state)


# -- the Federation trust --------------------------------------------------------------------------------------------
def _x509(org: Organization, thumb: str | None) -> SandboxObject | None:
    configured = org.configured.get(thumb or "")
    if configured is None:
        return None
    der = certs.load_cert(configured.cert.pem).public_bytes(serialization.Encoding.DER)
    return SandboxObject(list(X509_TYPES), adapted={"RawData": der}, to_string="[Subject]\r\n  CN=Federation\r\n")


def _trust(org: Organization, ex: _Exchange, params: dict[str, Any]) -> FederationTrust:
    identity = params.get("Identity")
    if org.federation is None or (identity is not None and str(identity).lower() != FEDERATION_TRUST_NAME.lower()):
        raise TerminatingError(ex.not_found(identity or FEDERATION_TRUST_NAME))
    return org.federation


def _get_federation_trust(ex: _Exchange, params: dict[str, Any]) -> Outcome:
    from .exchange import Live

    org = organization_of(ex.state)
    org.tick()
    if org.federation is None:
        return Outcome()
    trust = _trust(org, ex, params)
    return Outcome(output=[Live([FEDERATION_TRUST_TYPE, "System.Object"], {
        "Name": FEDERATION_TRUST_NAME,
        "OrgCertificate": _x509(org, trust.current),
        "OrgNextCertificate": _x509(org, trust.next),
        "OrgPrevCertificate": _x509(org, trust.previous),
        "OrgPrivCertificate": trust.current or "",
        "OrgNextPrivCertificate": trust.next or "",
        "OrgPrevPrivCertificate": trust.previous or "",
    }, FEDERATION_TRUST_NAME)])


def _set_federation_trust(ex: _Exchange, params: dict[str, Any]) -> Outcome:
    org = organization_of(ex.state)
    org.tick()
    with org.lock:
        trust = _trust(org, ex, params)
        if "Thumbprint" in params:
            thumb = _thumb(params["Thumbprint"])
            here = org.member(ex.state.computer_name)
            cert = ex.state.find("My", thumb)
            if cert is None or cert.key_pem is None or here is None:
                raise _invalid(f"The certificate with thumbprint {thumb} wasn't found on this server or has no "
                               "private key.", "Set-FederationTrust")  # belief
            if cert.not_after <= utcnow():
                raise _invalid(f"The certificate with thumbprint {thumb} has expired.", "Set-FederationTrust")
            org.configure(cert)
            trust.next = thumb
        if _switch(params, "PublishFederationCertificate"):
            if not trust.next:
                raise _invalid("There is no next federation certificate to publish.", "Set-FederationTrust")
            lacking = [m.state.fqdn for m in org.members if m.state.find("My", trust.next) is None]
            if lacking:
                raise _invalid(f"The next federation certificate {trust.next} isn't installed on every server yet: "
                               f"{', '.join(lacking)}. Run Test-FederationTrustCertificate.",
                               "Set-FederationTrust")  # belief
            trust.previous, trust.current, trust.next = trust.current, trust.next, None
    return Outcome()


def _get_federated_domain_proof(ex: _Exchange, params: dict[str, Any]) -> Outcome:
    from .exchange import Live

    org = organization_of(ex.state)
    domain = str(params.get("DomainName") or "")
    if org.federation is None or not domain:
        raise _invalid("The federation trust is not configured, or no domain name was given.",
                       "Get-FederatedDomainProof")
    proofs = []
    for thumb in (org.federation.current, org.federation.next):
        configured = org.configured.get(thumb or "")
        if configured is None or configured.cert.key_pem is None:
            continue
        signature = certs.load_key(configured.cert.key_pem).sign(domain.lower().encode("utf-8"), padding.PKCS1v15(),
                                                                 hashes.SHA256())
        proof = base64.b64encode(signature).decode("ascii")
        proofs.append(Live([DOMAIN_PROOF_TYPE, "System.Object"], {
            "DomainName": domain, "Name": domain, "Thumbprint": thumb, "Proof": proof,
            "DnsRecord": f"{domain} IN TXT {proof}"}, domain))
    return Outcome(output=proofs)


def _test_federation_trust_certificate(ex: _Exchange, params: dict[str, Any]) -> Outcome:
    from .exchange import Live

    org = organization_of(ex.state)
    org.tick()
    if org.federation is None:
        return Outcome()
    rows = []
    for thumb in (t for t in (org.federation.current, org.federation.next) if t):
        for member in org.members:
            if not org.reachable(member):
                state = "Unreachable"
            else:
                state = "Installed" if member.state.find("My", thumb) else "NotInstalled"
            rows.append(Live([TRUST_TEST_TYPE, "System.Object"], {
                "Site": SITE, "Server": member.state.fqdn, "State": state, "Thumbprint": thumb}, member.state.fqdn))
    return Outcome(output=rows)


#: cmdlet -> parameters the model accepts (besides the common ones), and parameters it refuses as not modelled.
PARAMETERS: dict[str, tuple[str, ...]] = {
    "Set-AuthConfig": ("NewCertificateThumbprint", "NewCertificateEffectiveDate", "PublishCertificate",
                       "ClearPreviousCertificate", "Server", "Force", "Confirm", "DomainController"),
    "Get-HybridConfiguration": ("DomainController",),
    "Import-ExchangeCertificate": ("Server", "FileData", "Password", "PrivateKeyExportable", "DomainController"),
    "Get-FederationTrust": ("Identity", "DomainController"),
    "Set-FederationTrust": ("Identity", "Thumbprint", "PublishFederationCertificate", "Force", "Confirm",
                            "DomainController"),
    "Get-FederatedDomainProof": ("DomainName", "DomainController"),
    "Test-FederationTrustCertificate": ("DomainController",),
}
UNMODELLED: dict[str, tuple[str, ...]] = {
    "Set-AuthConfig": ("CertificateThumbprint", "SkipImmediateCertificateDeployment", "Realm", "ServiceName",
                       "WhatIf"),
    "Import-ExchangeCertificate": ("Instance", "FileName", "WhatIf"),
    "Set-FederationTrust": ("ApplicationUri", "MetadataUrl", "RefreshMetadata", "Name", "WhatIf"),
    "Get-FederatedDomainProof": ("Thumbprint",),
}
CMDLETS: dict[str, Callable[[Any, dict[str, Any]], Outcome]] = {
    "Set-AuthConfig": _set_auth_config,
    "Get-HybridConfiguration": _get_hybrid_configuration,
    "Import-ExchangeCertificate": _import_exchange_certificate,
    "Get-FederationTrust": _get_federation_trust,
    "Set-FederationTrust": _set_federation_trust,
    "Get-FederatedDomainProof": _get_federated_domain_proof,
    "Test-FederationTrustCertificate": _test_federation_trust_certificate,
}


def register(parameters: list[dict[str, tuple[str, ...]]], unmodelled: dict[str, tuple[str, ...]],
             cmdlets: dict[str, Callable[[Any, dict[str, Any]], Outcome]]) -> None:
    """Add the organization's cmdlets to the Exchange endpoint's model (exbe.sandbox.exchange calls this once: its
    tables of parameters, of parameters not modelled and of cmdlets) and make Get-AuthConfig and
    Get-ExchangeCertificate organization-aware."""
    for table in parameters:
        table.update(PARAMETERS)
        # Microsoft's Federation renewal gives the new certificate a new subject key identifier; the model accepts
        # the parameter (a certificate's key identifier changes nothing it models)
        table["New-ExchangeCertificate"] = (*table["New-ExchangeCertificate"], "SubjectKeyIdentifier")
    unmodelled["New-ExchangeCertificate"] = tuple(p for p in unmodelled["New-ExchangeCertificate"]
                                                  if p != "SubjectKeyIdentifier")
    unmodelled.update(UNMODELLED)
    cmdlets["Get-AuthConfig"] = _get_auth_config(cmdlets["Get-AuthConfig"])
    cmdlets["Get-ExchangeCertificate"] = _get_exchange_certificate(cmdlets["Get-ExchangeCertificate"])
    cmdlets["Get-ExchangeServer"] = _get_exchange_server(cmdlets["Get-ExchangeServer"])
    cmdlets.update(CMDLETS)



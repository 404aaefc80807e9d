"""The sandbox's organization: one AuthConfig shared by every server, the servicelet on a clock the tests move,
replication after a delay, hybrid, an unreachable server, the cmdlets' refusals, and the Federation trust."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from exbe.sandbox import certs
from exbe.sandbox.authconfig import DATE_IN_THE_PAST, REPLICATION_DELAY, WRONG_PASSWORD, Member, Organization
from exbe.sandbox.exchange import run_cmdlet
from exbe.sandbox.faults import Faults
from exbe.sandbox.psrp import SecureText
from exbe.sandbox.records import TerminatingError
from exbe.sandbox.state import HostState, utcnow

from .auth_org import real_time  # noqa: F401 - fixture

RUNSPACE = uuid.UUID(int=7)


@pytest.fixture
def org() -> Iterator[Organization]:
    states = [HostState.from_scenario(f"exch0{i}", "healthy") for i in (1, 2, 3)]
    organization = Organization([Member(state) for state in states])
    yield organization
    organization.leave()


def run(state: HostState, name: str, **params: object):
    return run_cmdlet(state, name, dict(params), Faults(), runspace_id=RUNSPACE)


def auth_config(state: HostState) -> dict:
    (obj,) = run(state, "Get-AuthConfig").output
    return obj.adapted


def new_auth_certificate(state: HostState) -> str:
    (obj,) = run(state, "New-ExchangeCertificate", Server=state.computer_name, KeySize=2048,
                 PrivateKeyExportable=True, SubjectName="cn=Microsoft Exchange Server Auth Certificate",
                 FriendlyName="Microsoft Exchange Server Auth Certificate", DomainName=[], Services="None").output
    return certs.thumbprint(certs.cert_pem(certs.x509.load_der_x509_certificate(obj.adapted["RawData"])))


def members(org: Organization) -> list[HostState]:
    return [m.state for m in org.members]


def test_every_server_answers_the_one_organization_wide_auth_config(org: Organization) -> None:
    one, two, three = members(org)
    current = auth_config(one)["CurrentCertificateThumbprint"]
    assert current and all(auth_config(s)["CurrentCertificateThumbprint"] == current for s in (two, three))
    assert all(s.find("My", current) is not None for s in members(org))  # the one certificate is on every server
    config = auth_config(one)
    assert config["NextCertificateThumbprint"] == "" and config["PreviousCertificateThumbprint"] == ""


def test_a_staged_certificate_replicates_after_the_delay_and_becomes_current_at_its_effective_date(
        org: Organization) -> None:
    one, two, three = members(org)
    old = auth_config(one)["CurrentCertificateThumbprint"]
    new = new_auth_certificate(one)
    effective = utcnow() + datetime.timedelta(days=30)
    run(one, "Set-AuthConfig", NewCertificateThumbprint=new, NewCertificateEffectiveDate=effective, Force=True)
    assert auth_config(three)["NextCertificateThumbprint"] == new
    assert two.find("My", new) is None  # not yet replicated
    org.advance(REPLICATION_DELAY + datetime.timedelta(minutes=1))
    assert all(s.find("My", new) for s in members(org))
    assert auth_config(two)["CurrentCertificateThumbprint"] == old
    org.advance(datetime.timedelta(days=30))
    config = auth_config(two)
    assert (config["CurrentCertificateThumbprint"], config["PreviousCertificateThumbprint"],
            config["NextCertificateThumbprint"]) == (new, old, "")


def test_set_auth_config_refuses_a_date_that_is_not_later_than_the_servers_clock(org: Organization) -> None:
    one = members(org)[0]
    new = new_auth_certificate(one)
    with pytest.raises(TerminatingError) as refused:
        run(one, "Set-AuthConfig", NewCertificateThumbprint=new, NewCertificateEffectiveDate=utcnow())
    assert refused.value.info.message == DATE_IN_THE_PAST
    assert auth_config(one)["NextCertificateThumbprint"] == ""


def test_set_auth_config_refuses_a_certificate_the_server_does_not_hold(org: Organization) -> None:
    one, two, _ = members(org)
    new = new_auth_certificate(two)
    with pytest.raises(TerminatingError) as refused:
        run(one, "Set-AuthConfig", NewCertificateThumbprint=new,
            NewCertificateEffectiveDate=utcnow() + datetime.timedelta(days=1))
    assert new in refused.value.info.message and auth_config(one)["NextCertificateThumbprint"] == ""


def test_publish_rolls_over_now_deploys_to_every_reachable_server_and_clear_forgets_the_previous(
        org: Organization) -> None:
    one, two, three = members(org)
    org.unreachable.add(three.computer_name)
    old = auth_config(one)["CurrentCertificateThumbprint"]
    new = new_auth_certificate(one)
    run(one, "Set-AuthConfig", NewCertificateThumbprint=new,
        NewCertificateEffectiveDate=utcnow() + datetime.timedelta(minutes=15), Force=True)
    run(one, "Set-AuthConfig", PublishCertificate=True)
    assert (auth_config(two)["CurrentCertificateThumbprint"], auth_config(two)["PreviousCertificateThumbprint"]) == (
        new, old)
    assert two.find("My", new) is not None and three.find("My", new) is None
    run(one, "Set-AuthConfig", ClearPreviousCertificate=True)
    assert auth_config(three)["PreviousCertificateThumbprint"] == ""
    with pytest.raises(TerminatingError):
        run(one, "Set-AuthConfig", PublishCertificate=True)  # nothing staged any more


def test_presence_on_another_server_tells_missing_from_unreachable(org: Organization) -> None:
    one, two, three = members(org)
    current = auth_config(one)["CurrentCertificateThumbprint"]
    assert len(run(one, "Get-ExchangeCertificate", Server=two.fqdn, Thumbprint=current).output) == 1
    org.not_replicating.add(two.computer_name)  # else its servicelet puts it back on the next cmdlet
    two.my.remove(two.find("My", current))
    (missing,) = run(one, "Get-ExchangeCertificate", Server=two.fqdn, Thumbprint=current).errors
    assert missing.exception_type == "System.InvalidOperationException"  # MEAC's sign of "missing"
    org.unreachable.add(three.computer_name)
    (unreachable,) = run(one, "Get-ExchangeCertificate", Server=three.fqdn, Thumbprint=current).errors
    assert not unreachable.exception_type.endswith("InvalidOperationException")


def test_a_server_that_does_not_replicate_keeps_lacking_the_certificate_until_it_is_imported(
        org: Organization) -> None:
    one, two, _ = members(org)
    current = auth_config(one)["CurrentCertificateThumbprint"]
    org.not_replicating.add(two.computer_name)
    two.my.remove(two.find("My", current))
    org.advance(REPLICATION_DELAY * 2)
    assert two.find("My", current) is None
    source = one.find("My", current)
    pfx = pkcs12.serialize_key_and_certificates(
        b"auth", certs.load_key(source.key_pem), certs.load_cert(source.pem), None,
        serialization.BestAvailableEncryption(b"pw"))
    with pytest.raises(TerminatingError) as plain:  # a password must arrive as a SecureString
        run(one, "Import-ExchangeCertificate", Server=two.fqdn, FileData=pfx, Password="pw")
    assert plain.value.info.error_id.startswith("ParameterArgumentTransformationError")
    assert "System.Security.SecureString" in plain.value.info.message and two.find("My", current) is None
    with pytest.raises(TerminatingError) as wrong:
        run(one, "Import-ExchangeCertificate", Server=two.fqdn, FileData=pfx, Password=SecureText("not it"))
    assert wrong.value.info.message == WRONG_PASSWORD and two.find("My", current) is None
    (imported,) = run(one, "Import-ExchangeCertificate", Server=two.fqdn, FileData=pfx, Password=SecureText("pw"),
                      PrivateKeyExportable=True).output
    assert two.find("My", current) is not None and two.find("My", current).key_pem is not None
    assert certs.thumbprint(certs.cert_pem(certs.x509.load_der_x509_certificate(imported.adapted["RawData"]))) == \
        current
    with pytest.raises(TerminatingError) as again:  # already there
        run(one, "Import-ExchangeCertificate", Server=two.fqdn, FileData=pfx, Password=SecureText("pw"))
    assert "already exists" in again.value.info.message


def test_an_import_seeds_its_site_and_get_exchange_server_names_each_servers_site(org: Organization) -> None:
    one, two, three = members(org)
    org.sites[three.computer_name] = "Branch"
    sites = {o.adapted["Name"]: o.adapted["Site"] for o in run(one, "Get-ExchangeServer").output}
    assert {name: site.to_string for name, site in sites.items()} == {
        "EXCH01": "contoso.local/Configuration/Sites/Default-First-Site-Name",
        "EXCH02": "contoso.local/Configuration/Sites/Default-First-Site-Name",
        "EXCH03": "contoso.local/Configuration/Sites/Branch"}
    assert sites["EXCH03"].adapted["Name"] == "Branch"
    current = auth_config(one)["CurrentCertificateThumbprint"]
    for state in (two, three):  # neither copies by itself
        org.not_replicating.add(state.computer_name)
        state.my.remove(state.find("My", current))
    org.sites[two.computer_name] = "Branch"
    source = one.find("My", current)
    pfx = pkcs12.serialize_key_and_certificates(b"auth", certs.load_key(source.key_pem), certs.load_cert(source.pem),
                                                None, serialization.BestAvailableEncryption(b"pw"))
    run(one, "Import-ExchangeCertificate", Server=two.fqdn, FileData=pfx, Password=SecureText("pw"))
    org.advance(REPLICATION_DELAY / 2)
    assert three.find("My", current) is None  # replication takes time
    org.advance(REPLICATION_DELAY)
    assert three.find("My", current) is not None  # the site's import reached it


def test_hybrid_is_an_object_or_nothing(org: Organization) -> None:
    one = members(org)[0]
    assert run(one, "Get-HybridConfiguration").output == []
    org.hybrid = True
    assert len(run(one, "Get-HybridConfiguration").output) == 1


def test_federation_trust_stages_proves_and_publishes_only_once_every_server_has_the_certificate(
        org: Organization) -> None:
    one, two, _ = members(org)
    current = org.create_federation_trust(days_left=40)
    (trust,) = run(one, "Get-FederationTrust").output
    assert trust.adapted["OrgPrivCertificate"] == current and trust.adapted["OrgNextPrivCertificate"] == ""
    assert set(trust.adapted["OrgCertificate"].adapted) == {"RawData"}
    (obj,) = run(one, "New-ExchangeCertificate", Server=one.computer_name, DomainName="Federation",
                 FriendlyName="Exchange Delegation Federation", Services="Federation",
                 PrivateKeyExportable=True).output
    new = certs.thumbprint(certs.cert_pem(certs.x509.load_der_x509_certificate(obj.adapted["RawData"])))
    run(one, "Set-FederationTrust", Identity="Microsoft Federation Gateway", Thumbprint=new)
    proofs = run(one, "Get-FederatedDomainProof", DomainName="contoso.com").output
    assert {p.adapted["Thumbprint"] for p in proofs} == {current, new}
    states = {(r.adapted["Server"], r.adapted["Thumbprint"]): r.adapted["State"]
              for r in run(one, "Test-FederationTrustCertificate").output}
    assert states[(two.fqdn, new)] == "NotInstalled"
    with pytest.raises(TerminatingError):
        run(one, "Set-FederationTrust", Identity="Microsoft Federation Gateway", PublishFederationCertificate=True)
    org.advance(REPLICATION_DELAY + datetime.timedelta(minutes=1))
    run(one, "Set-FederationTrust", Identity="Microsoft Federation Gateway", PublishFederationCertificate=True)
    (trust,) = run(two, "Get-FederationTrust").output
    assert (trust.adapted["OrgPrivCertificate"], trust.adapted["OrgPrevPrivCertificate"]) == (new, current)

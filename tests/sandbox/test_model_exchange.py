"""The Exchange endpoint's cmdlets on a simulated server: what they return, refuse and change."""

from __future__ import annotations

import datetime

import pytest

from exbe.sandbox.exchange import CERTIFICATE_TYPE, run_cmdlet
from exbe.sandbox.faults import Faults
from exbe.sandbox.records import SandboxObject, TerminatingError
from exbe.sandbox.state import BACKEND_BINDING, BACKEND_SITE, FRONTEND_BINDING, FRONTEND_SITE, HostState

NO_FAULTS = Faults()


def host(scenario: str = "healthy") -> HostState:
    return HostState.from_scenario("exch01", scenario)


def run(state: HostState, name: str, **params):
    return run_cmdlet(state, name, params, NO_FAULTS)


def backend(state: HostState) -> str:
    return state.binding(BACKEND_SITE, BACKEND_BINDING).certificate_hash


def props(outcome) -> list[dict]:
    return [o.properties for o in outcome.output]


def assert_plain_values(obj: SandboxObject) -> None:
    for value in obj.properties.values():
        if isinstance(value, datetime.datetime):
            assert value.tzinfo is not None
        elif isinstance(value, list):
            assert all(isinstance(v, str) for v in value)
        else:
            assert value is None or isinstance(value, (str, int, bool))


def test_get_exchange_certificate_lists_every_certificate_of_my_with_its_services():
    state = host()
    outcome = run(state, "Get-ExchangeCertificate", Server="EXCH01")
    assert not outcome.errors
    assert {p["Thumbprint"] for p in props(outcome)} == {c.thumbprint for c in state.my}
    for obj in outcome.output:
        assert obj.type_names[0] == CERTIFICATE_TYPE
        assert_plain_values(obj)
    cert = next(p for p in props(outcome) if p["Thumbprint"] == backend(state))
    assert cert["Services"] == "IMAP, POP, SMTP" and cert["IsSelfSigned"] and cert["HasPrivateKey"]
    assert cert["FriendlyName"] == "Microsoft Exchange" and cert["Subject"] == "CN=EXCH01"
    assert cert["CertificateDomains"] == ["EXCH01", "exch01.contoso.local"] and cert["PublicKeySize"] == 2048
    assert cert["Status"] == "Valid" and cert["NotAfter"].tzinfo is not None


def test_an_expired_certificate_has_status_date_invalid_and_a_thumbprint_query_finds_one():
    state = host("backend_expired")
    (cert,) = props(run(state, "Get-ExchangeCertificate", Thumbprint=backend(state).lower()))
    assert cert["Status"] == "DateInvalid"
    missing = run(state, "Get-ExchangeCertificate", Thumbprint="AB" * 20)
    assert not missing.output and "couldn't be found" in missing.errors[0].message


def test_an_expired_auth_certificate_with_signing_makes_exchange_cmdlets_blind():
    state = host("auth_cert_expired_with_signing")
    listed = run(state, "Get-ExchangeCertificate", Server="EXCH01")
    assert listed.output == [] and listed.errors == []
    count = len(state.my)
    created = run(state, "New-ExchangeCertificate", Services="None")
    assert created.output == [] and "expired" in created.errors[0].message
    assert len(state.my) == count


def test_new_exchange_certificate_with_default_services_cannot_answer_the_smtp_prompt_remotely():
    state = host()
    count = len(state.my)
    with pytest.raises(TerminatingError, match="Overwrite the existing default SMTP certificate") as err:
        run(state, "New-ExchangeCertificate")
    assert err.value.info.error_id == "HostException"
    assert len(state.my) == count


def test_new_exchange_certificate_with_services_none_assigns_nothing_and_grants_no_key_access():
    state = host()
    transport = state.exchange.internal_transport
    (cert,) = props(run(state, "New-ExchangeCertificate", Services="None", PrivateKeyExportable=True))
    assert cert["Subject"] == "CN=EXCH01" and cert["CertificateDomains"] == ["EXCH01", "exch01.contoso.local"]
    assert cert["Services"] == "None" and cert["FriendlyName"] == "Microsoft Exchange"
    stored = state.find("My", cert["Thumbprint"])
    assert stored.provider == "Microsoft RSA SChannel Cryptographic Provider" and stored.provider_type == "CSP"
    assert not stored.network_service_read and state.exchange.internal_transport == transport


def test_new_exchange_certificate_with_force_takes_over_smtp_and_grants_key_access():
    state = host()
    (cert,) = props(run(state, "New-ExchangeCertificate", Force=True))
    assert cert["Services"] == "IMAP, POP, SMTP"
    assert state.exchange.internal_transport == cert["Thumbprint"]
    assert state.find("My", cert["Thumbprint"]).network_service_read


def test_new_exchange_certificate_renews_the_auth_certificate_with_its_own_subject():
    state = host()
    (cert,) = props(run(state, "New-ExchangeCertificate", KeySize=2048, PrivateKeyExportable=True,
                        SubjectName="cn=Microsoft Exchange Server Auth Certificate", DomainName=[],
                        Services="SMTP", Force=True))
    assert cert["Subject"] == "CN=Microsoft Exchange Server Auth Certificate" and cert["CertificateDomains"] == []


def test_enable_exchange_certificate_smtp_is_additive_and_grants_network_service_access():
    state = host()
    (created,) = props(run(state, "New-ExchangeCertificate", Services="None"))
    thumb = created["Thumbprint"]
    with pytest.raises(TerminatingError, match="Overwrite the existing default SMTP certificate"):
        run(state, "Enable-ExchangeCertificate", Thumbprint=thumb, Services="SMTP")
    assert run(state, "Enable-ExchangeCertificate", Thumbprint=thumb, Services="IMAP").output == []
    run(state, "Enable-ExchangeCertificate", Server="EXCH01", Thumbprint=thumb, Services="SMTP", Force=True)
    assert state.exchange.services[thumb] == ["IMAP", "SMTP"]
    assert state.find("My", thumb).network_service_read and state.exchange.internal_transport == thumb


def test_enable_exchange_certificate_iis_repoints_the_default_web_site_and_never_444():
    state = host()
    old_backend = backend(state)
    (created,) = props(run(state, "New-ExchangeCertificate", Services="None"))
    run(state, "Enable-ExchangeCertificate", Thumbprint=created["Thumbprint"], Services="IIS")
    assert state.binding(FRONTEND_SITE, FRONTEND_BINDING).certificate_hash == created["Thumbprint"]
    assert backend(state) == old_backend


def test_remove_exchange_certificate_refuses_the_internal_transport_certificate():
    state = host()
    with pytest.raises(TerminatingError, match="internal transport certificate cannot be removed"):
        run(state, "Remove-ExchangeCertificate", Thumbprint=backend(state), Confirm=False)
    assert state.find("My", backend(state)) is not None


def test_remove_exchange_certificate_asks_for_confirmation_and_removes_from_my_only():
    state = host("duplicate_backend_certs")
    extra = next(c.thumbprint for c in state.my if c.friendly_name == "Microsoft Exchange"
                 and c.thumbprint != backend(state) and state.find("Root", c.thumbprint))
    with pytest.raises(TerminatingError, match="Are you sure"):
        run(state, "Remove-ExchangeCertificate", Thumbprint=extra)
    run(state, "Remove-ExchangeCertificate", Server="exch01.contoso.local", Thumbprint=extra, Confirm=False)
    assert state.find("My", extra) is None and state.find("Root", extra) is not None


def test_get_auth_config_transport_service_server_and_overrides_describe_the_server():
    state = host()
    (auth,) = props(run(state, "Get-AuthConfig"))
    assert auth["CurrentCertificateThumbprint"] == state.exchange.auth_current
    assert auth["NextCertificateThumbprint"] is None and auth["NextCertificateEffectiveDate"] is None
    (transport,) = props(run(state, "Get-TransportService", Identity="EXCH01"))
    assert transport["InternalTransportCertificateThumbprint"] == backend(state)
    (server,) = props(run(state, "Get-ExchangeServer", Identity="exch01"))
    assert (server["Name"], server["Fqdn"]) == ("EXCH01", "exch01.contoso.local")
    assert server["AdminDisplayVersion"] == "Version 15.2 (Build 2562.17)"
    assert run(state, "Get-SettingOverride").output == [], "Exchange SE signs by default, no override needed"
    assert "couldn't be found" in run(state, "Get-ExchangeServer", Identity="exch99").errors[0].message


def test_a_signing_override_is_listed_as_exchange_shows_it():
    state = host()
    state.exchange.setting_overrides.append({"Name": "DisableSigning", "ComponentName": "Data",
                                             "SectionName": "EnableSerializationDataSigning",
                                             "Parameters": ["Enabled=false"], "Server": ["EXCH01"]})
    (override,) = run(state, "Get-SettingOverride").output
    assert override.properties["Parameters"] == ["Enabled=false"] and not state.exchange.signing_enabled
    assert_plain_values(override)


def test_an_unknown_parameter_is_refused_as_powershell_binds_parameters():
    with pytest.raises(TerminatingError, match="A parameter cannot be found that matches parameter name 'Thumb'") \
            as err:
        run(host(), "Get-ExchangeCertificate", Thumb="AB")
    assert err.value.info.error_id.startswith("NamedParameterNotFound")
    assert props(run(host(), "Get-ExchangeCertificate", server="EXCH01", erroraction="Stop")), \
        "parameter names are case-insensitive and common parameters bind"


def test_an_unknown_cmdlet_is_not_recognized():
    with pytest.raises(TerminatingError, match="The term 'Set-Nothing' is not recognized") as err:
        run(host(), "Set-Nothing")
    assert err.value.info.error_id == "CommandNotFoundException"


def test_another_server_is_not_found():
    with pytest.raises(TerminatingError, match="couldn't be found"):
        run(host(), "Get-ExchangeCertificate", Server="EXCH99")

"""The Exchange endpoint's cmdlets on a simulated server: what they return, refuse and change, and how their objects
cross the wire (the captured shapes; tests/sandbox/test_real_shapes.py compares them with the captures)."""

from __future__ import annotations

import datetime
import hashlib
import uuid

import pytest

from exbe.sandbox.exchange import (
    ALLOWED_SERVICES_TYPE,
    CERTIFICATE_TYPE,
    CERTIFICATE_TYPES,
    run_cmdlet,
    run_pipeline,
)
from exbe.sandbox.faults import Faults
from exbe.sandbox.records import EnumValue, SandboxObject, TerminatingError
from exbe.sandbox.state import BACKEND_BINDING, BACKEND_SITE, FRONTEND_SITE, HostState

NO_FAULTS = Faults()
RUNSPACE = uuid.UUID("4f1d6ed3-81ee-4120-9d38-b803867135e5")
REMOTING_MEMBERS = {"PSComputerName", "RunspaceId", "PSShowComputerName"}


def host(scenario: str = "healthy", *, wire: str = "full") -> HostState:
    """A server whose certificates carry their property bag on the wire (``wire="full"``), so that tests of the
    cmdlets' semantics can read it; the default wire shape has its own tests below."""
    state = HostState.from_scenario("exch01", scenario)
    state.exchange.wire = wire
    return state


def run(state: HostState, name: str, **params):
    return run_cmdlet(state, name, params, NO_FAULTS, runspace_id=RUNSPACE)


def pipeline(state: HostState, *commands: tuple[str, dict]):
    return run_pipeline(state, list(commands), NO_FAULTS, runspace_id=RUNSPACE)


def backend(state: HostState) -> str:
    return state.binding(BACKEND_SITE, BACKEND_BINDING).certificate_hash


def props(outcome) -> list[dict]:
    return [o.adapted for o in outcome.output]


def services(value: EnumValue) -> str:
    assert value.type_name == ALLOWED_SERVICES_TYPE and value.flags
    return value.text


# -- Get-ExchangeCertificate -----------------------------------------------------------------------------------------
def test_get_exchange_certificate_lists_every_certificate_of_my_with_its_services():
    state = host()
    outcome = run(state, "Get-ExchangeCertificate", Server="EXCH01")
    assert not outcome.errors
    assert {p["Thumbprint"] for p in props(outcome)} == {c.thumbprint for c in state.my}
    cert = next(p for p in props(outcome) if p["Thumbprint"] == backend(state))
    assert services(cert["Services"]) == "IMAP, POP, SMTP" and cert["IsSelfSigned"] and cert["HasPrivateKey"]
    assert cert["FriendlyName"] == "Microsoft Exchange" and cert["Subject"] == "CN=EXCH01"
    assert cert["CertificateDomains"] == ["EXCH01", "exch01.contoso.local"] and cert["PublicKeySize"] == 2048
    assert str(cert["Status"]) == "Valid" and cert["NotAfter"].tzinfo is not None
    assert cert["Identity"] == f"exch01.contoso.local\\{backend(state)}"


def test_an_expired_certificate_has_status_date_invalid_and_a_thumbprint_query_finds_one():
    state = host("backend_expired")
    (cert,) = props(run(state, "Get-ExchangeCertificate", Thumbprint=backend(state).lower()))
    assert str(cert["Status"]) == "DateInvalid"
    missing = run(state, "Get-ExchangeCertificate", Thumbprint="AB" * 20)
    assert not missing.output and "couldn't be found" in missing.errors[0].message


def test_by_default_a_certificate_crosses_the_wire_as_its_raw_data_and_the_remoting_members():
    state = host(wire="rawdata")
    for obj, stored in zip(run(state, "Get-ExchangeCertificate").output, state.my, strict=True):
        assert obj.type_names == CERTIFICATE_TYPES
        assert list(obj.adapted) == ["RawData"]
        assert hashlib.sha1(obj.adapted["RawData"]).hexdigest().upper() == stored.thumbprint, "RawData is the DER"
        assert obj.members.keys() == REMOTING_MEMBERS | {"SerializationData"}
        assert obj.members["RunspaceId"] == RUNSPACE and obj.members["PSComputerName"] == "exch01.contoso.local"
        assert obj.members["PSShowComputerName"] is False and isinstance(obj.members["SerializationData"], bytes)
        assert obj.to_string.startswith(f"[Subject]\r\n  {stored.info['subject']}\r\n")
        assert obj.to_string.endswith(f"[Thumbprint]\r\n  {stored.thumbprint}\r\n")


def test_the_full_wire_variant_adds_the_property_bag_to_the_same_object():
    obj = run(host(), "Get-ExchangeCertificate").output[0]
    assert obj.type_names == CERTIFICATE_TYPES and list(obj.adapted)[0] == "RawData"
    assert {"Thumbprint", "Services", "FriendlyName", "NotAfter", "IsSelfSigned"} <= obj.adapted.keys()
    assert obj.members.keys() == REMOTING_MEMBERS | {"SerializationData"}


def test_an_expired_auth_certificate_with_signing_leaves_only_deserialized_raw_data():
    state = host("auth_cert_expired_with_signing")
    listed = run(state, "Get-ExchangeCertificate", Server="EXCH01")
    assert len(listed.output) == len(state.my) and listed.errors == [], "not an empty list"
    for obj in listed.output:
        assert obj.type_names == [f"Deserialized.{t}" for t in CERTIFICATE_TYPES]
        assert list(obj.adapted) == ["RawData"], "even with the full wire variant"
        assert obj.members.keys() == REMOTING_MEMBERS, "no SerializationData"


def test_an_expired_auth_certificate_with_signing_makes_new_exchange_certificate_fail():
    state = host("auth_cert_expired_with_signing")
    count = len(state.my)
    created = run(state, "New-ExchangeCertificate", Services="None")
    assert created.output == [] and "expired" in created.errors[0].message
    assert len(state.my) == count


# -- New / Enable / Remove -------------------------------------------------------------------------------------------
def test_new_exchange_certificate_with_default_services_cannot_answer_the_smtp_prompt_remotely():
    state = host()
    count = len(state.my)
    with pytest.raises(TerminatingError, match="Overwrite the existing default SMTP certificate") as err:
        run(state, "New-ExchangeCertificate")
    assert err.value.info.error_id == "HostException"
    assert len(state.my) == count


def test_new_exchange_certificate_returns_the_certificate_in_the_wire_shape_of_get():
    state = host(wire="rawdata")
    (obj,) = run(state, "New-ExchangeCertificate", Services="None").output
    assert obj.type_names == CERTIFICATE_TYPES and list(obj.adapted) == ["RawData"]
    assert state.my[-1].thumbprint == hashlib.sha1(obj.adapted["RawData"]).hexdigest().upper()


def test_new_exchange_certificate_with_services_none_assigns_nothing_and_grants_no_key_access():
    state = host()
    transport = state.exchange.internal_transport
    (cert,) = props(run(state, "New-ExchangeCertificate", Services="None", PrivateKeyExportable=True))
    assert cert["Subject"] == "CN=EXCH01" and cert["CertificateDomains"] == ["EXCH01", "exch01.contoso.local"]
    assert services(cert["Services"]) == "None" and cert["FriendlyName"] == "Microsoft Exchange"
    stored = state.find("My", cert["Thumbprint"])
    assert stored.provider == "Microsoft RSA SChannel Cryptographic Provider" and stored.provider_type == "CSP"
    assert not stored.network_service_read and state.exchange.internal_transport == transport


def test_new_exchange_certificate_with_force_takes_over_smtp_and_grants_key_access():
    state = host()
    (cert,) = props(run(state, "New-ExchangeCertificate", Force=True))
    assert services(cert["Services"]) == "IMAP, POP, SMTP"
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


@pytest.mark.parametrize("scenario, spelling", [("healthy", ":443:"), ("star_443", "*:443:")])
def test_enable_exchange_certificate_iis_repoints_the_public_443_binding_whatever_its_spelling(scenario, spelling):
    state = host(scenario)
    old_backend = backend(state)
    (created,) = props(run(state, "New-ExchangeCertificate", Services="None"))
    run(state, "Enable-ExchangeCertificate", Thumbprint=created["Thumbprint"], Services="IIS")
    public = [b for b in state.sites[FRONTEND_SITE].bindings if b.protocol == "https" and b.port == 443
              and b.all_unassigned]
    assert [(b.binding_information, b.certificate_hash, b.certificate_store) for b in public] == [
        (spelling, created["Thumbprint"], "MY")], "the existing binding, not a second one"
    assert state.https_binding(FRONTEND_SITE, 443, "127.0.0.1").certificate_hash == old_backend
    assert backend(state) == old_backend, "never 444"


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


# -- the other Get-cmdlets -------------------------------------------------------------------------------------------
def test_get_auth_config_transport_service_server_and_overrides_describe_the_server():
    state = host()
    (auth,) = run(state, "Get-AuthConfig").output
    assert auth.adapted["CurrentCertificateThumbprint"] == state.exchange.auth_current
    assert auth.adapted["NextCertificateThumbprint"] == "" and auth.adapted["PreviousCertificateThumbprint"] == "", \
        "unset thumbprints are empty strings, as captured"
    assert auth.adapted["NextCertificateEffectiveDate"] is None and auth.to_string == "Auth Configuration"
    assert auth.adapted["Id"] is auth.adapted["Identity"], "one object, sent once and then as a reference"
    (transport,) = props(run(state, "Get-TransportService", Identity="EXCH01"))
    assert transport["InternalTransportCertificateThumbprint"] == backend(state)
    (server,) = run(state, "Get-ExchangeServer", Identity="exch01").output
    assert (server.adapted["Name"], server.adapted["Fqdn"]) == ("EXCH01", "exch01.contoso.local")
    assert server.adapted["AdminDisplayVersion"].to_string == "Version 15.2 (Build 2562.17)"
    assert str(server.adapted["Edition"]) == "Enterprise" and str(server.adapted["ServerRole"]) == "Mailbox"
    assert run(state, "Get-SettingOverride").output == [], "Exchange SE signs by default, no override needed"
    assert "couldn't be found" in run(state, "Get-ExchangeServer", Identity="exch99").errors[0].message
    for obj in (auth, server):
        assert obj.members.keys() == REMOTING_MEMBERS | {"SerializationData"}


def test_a_signing_override_is_listed_as_exchange_shows_it():
    state = host()
    state.exchange.setting_overrides.append({"Name": "DisableSigning", "ComponentName": "Data",
                                             "SectionName": "EnableSerializationDataSigning",
                                             "Parameters": ["Enabled=false"], "Server": ["EXCH01"]})
    (override,) = run(state, "Get-SettingOverride").output
    parameters = override.adapted["Parameters"]
    assert isinstance(parameters, SandboxObject) and parameters.items == ["Enabled=false"]
    assert parameters.type_names[0].startswith("Microsoft.Exchange.Data.MultiValuedProperty`1[[System.String")
    assert override.adapted["Server"].items == ["EXCH01"] and not state.exchange.signing_enabled


# -- binding parameters ----------------------------------------------------------------------------------------------
def test_an_unknown_parameter_is_refused_as_powershell_binds_parameters():
    with pytest.raises(TerminatingError, match="A parameter cannot be found that matches parameter name 'Thumb'") \
            as err:
        run(host(), "Get-ExchangeCertificate", Thumb="AB")
    assert err.value.info.error_id.startswith("NamedParameterNotFound")
    assert run(host(), "Get-ExchangeCertificate", server="EXCH01", erroraction="Stop").output, \
        "parameter names are case-insensitive and common parameters bind"


def test_an_unknown_cmdlet_is_not_recognized():
    with pytest.raises(TerminatingError, match="The term 'Set-Nothing' is not recognized") as err:
        run(host(), "Set-Nothing")
    assert err.value.info.error_id == "CommandNotFoundException"


def test_another_server_is_not_found():
    with pytest.raises(TerminatingError, match="couldn't be found"):
        run(host(), "Get-ExchangeCertificate", Server="EXCH99")


# -- Select-Object ---------------------------------------------------------------------------------------------------
SELECT = ("Select-Object", {"Property": ["Thumbprint", "Services"]})


@pytest.mark.parametrize("scenario", ["healthy", "auth_cert_expired_with_signing"])
def test_select_object_projects_live_certificates_into_plain_objects(scenario):
    state = host(scenario, wire="rawdata")
    outcome = pipeline(state, ("Get-ExchangeCertificate", {"Server": "EXCH01"}), SELECT)
    projected = {o.members["Thumbprint"]: o for o in outcome.output}
    assert projected.keys() == {c.thumbprint for c in state.my}
    for thumb, obj in projected.items():
        assert obj.type_names == [f"Selected.{CERTIFICATE_TYPE}", "System.Management.Automation.PSCustomObject",
                                  "System.Object"]
        assert list(obj.members) == ["Thumbprint", "Services"] and obj.adapted == {} and obj.to_string == ""
        assert services(obj.members["Services"]) == (
            ", ".join(s for s in ("IMAP", "POP", "IIS", "SMTP") if s in state.exchange.services.get(thumb, []))
            or "None")
    assert projected[backend(state)].members["Services"].value == 1 | 2 | 16


def test_select_object_takes_one_name_as_a_string_and_names_properties_as_the_object_does():
    state = host()
    outcome = pipeline(state, ("Get-ExchangeCertificate", {"Thumbprint": backend(state)}),
                       ("select-object", {"property": "thumbprint"}))
    assert [o.members for o in outcome.output] == [{"Thumbprint": backend(state)}]
    (missing,) = pipeline(state, ("Get-AuthConfig", {}), ("Select-Object", {"Property": "NoSuch"})).output
    assert missing.members == {"NoSuch": None}, "Select-Object adds a missing property as $null"


@pytest.mark.parametrize("second, message", [
    (("Where-Object", {}), "The term 'Where-Object' is not recognized"),
    (("ForEach-Object", {}), "The term 'ForEach-Object' is not recognized"),
    (("Select-Object", {"ExpandProperty": "Thumbprint"}), "does not model the parameter 'ExpandProperty'"),
    (("Select-Object", {"Property": ["Thumb*"]}), "does not model wildcards"),
    (("Select-Object", {"Property": [{"Name": "T", "Expression": "x"}]}), "calculated properties"),
    (("Select-Object", {"Propery": "Thumbprint"}), "A parameter cannot be found that matches parameter name"),
    (("Measure-Object", {}), "models single Exchange cmdlets"),
])
def test_other_pipelines_are_refused_as_the_restricted_endpoint_would_or_as_not_modelled(second, message):
    with pytest.raises(TerminatingError, match=message):
        pipeline(host(), ("Get-ExchangeCertificate", {}), second)


def test_select_object_after_a_cmdlet_that_changes_something_is_not_modelled_and_changes_nothing():
    state = host()
    count = len(state.my)
    with pytest.raises(TerminatingError, match="models single Exchange cmdlets"):
        pipeline(state, ("New-ExchangeCertificate", {"Services": "None"}), SELECT)
    assert len(state.my) == count


def test_a_host_refusing_select_object_does_not_know_the_command():
    state = host("select_refused")
    with pytest.raises(TerminatingError, match="The term 'Select-Object' is not recognized") as err:
        pipeline(state, ("Get-ExchangeCertificate", {}), SELECT)
    assert err.value.info.error_id == "CommandNotFoundException"
    assert pipeline(state, ("Get-ExchangeCertificate", {}),).output, "single cmdlets still run"


def test_values_are_what_the_wire_layer_serializes():
    state = host()
    (obj,) = run(state, "Get-ExchangeCertificate", Thumbprint=backend(state)).output
    for value in obj.adapted.values():
        if isinstance(value, datetime.datetime):
            assert value.tzinfo is not None
        elif isinstance(value, list):
            assert all(isinstance(v, str) for v in value)
        else:
            assert value is None or isinstance(value, (str, int, bool, bytes, EnumValue))

"""The recorded-reality fixtures (tests/real_shapes.py) are faithful to the captures and consistent with themselves."""

from __future__ import annotations

import datetime
import hashlib
import json
from xml.etree import ElementTree as ET

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.real_shapes import (
    BROKEN_CERTIFICATES,
    BROKEN_CERTS,
    DATA,
    E16,
    E19,
    EMS_CERTIFICATES,
    PROJECTION_TYPES,
    SERIALIZATION_DATA_PREFIX,
    SERVERS,
    SERVICES_TYPE,
    SHAPES,
    RealServer,
    auth_config_clixml,
    deserialize,
    exchange_certificate_clixml,
    projection_clixml,
)

NOW = datetime.datetime(2026, 6, 1, 8, 0, 0, tzinfo=datetime.timezone.utc)
SERVER_LIST = [E16, E19]
CAPTURES = "Diagnostics/HealthChecker/"
#: What IIS reported, in Get-WebBinding order, on both captured servers.
CAPTURED_BINDINGS = [
    ("Default Web Site", "http", "*:80:"),
    ("Default Web Site", "https", ":443:"),
    ("Default Web Site", "http", "127.0.0.1:80:"),
    ("Default Web Site", "https", "127.0.0.1:443:"),
    ("Exchange Back End", "http", "*:81:"),
    ("Exchange Back End", "https", "*:444:"),
]
#: Properties a client without Exchange's assemblies does not get (they live only in SerializationData).
NOT_ON_THE_WIRE = ("Thumbprint", "Services", "FriendlyName", "IsSelfSigned", "NotAfter", "Subject")


def _layout(xml_text: str) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """Type names, ``{prop: tag}`` and ``{member: tag}`` of one ``<Obj>``."""
    root = ET.fromstring(xml_text)
    section = {name: {child.get("N", ""): child.tag for child in root.findall(name + "/*")} for name in ("Props", "MS")}
    return [t.text or "" for t in root.findall("TN/T")], section["Props"], section["MS"]


def _shape(kind: str) -> tuple[list[str], dict[str, str], dict[str, str]]:
    return SHAPES[kind]["type_names"], SHAPES[kind]["props"], SHAPES[kind]["members"]


# -- shapes.json -----------------------------------------------------------------------------------------------------
def test_shapes_name_the_capture_each_shape_was_read_from():
    assert set(SHAPES) == {"ExchangeCertificate", "ExchangeCertificate.broken", "AuthConfig", "WebBinding"}
    for shape in SHAPES.values():
        assert shape["source"].startswith(CAPTURES) and shape["source"].endswith(".xml")
        assert shape["type_names"][-1].endswith("System.Object")


def test_exchange_certificates_serialize_as_x509_certificates_do_raw_data_only():
    for kind in ("ExchangeCertificate", "ExchangeCertificate.broken"):
        assert SHAPES[kind]["props"] == {"RawData": "BA"}
        assert not set(SHAPES[kind]["members"]) & set(NOT_ON_THE_WIRE)
    assert SHAPES["ExchangeCertificate"]["members"]["SerializationData"] == "BA"
    assert "SerializationData" not in SHAPES["ExchangeCertificate.broken"]["members"]
    assert all(t.startswith("Deserialized.") for t in SHAPES["ExchangeCertificate.broken"]["type_names"])


def test_every_data_record_names_its_capture():
    document = json.loads((DATA / "servers.json").read_text(encoding="utf-8"))
    records = [c for s in document["servers"].values() for c in s["certificates"]] + document["broken"]["certificates"]
    records += [b for s in document["servers"].values() for b in s["web_bindings"]]
    records += [s["auth_config"] for s in document["servers"].values()]
    assert records and all(r["source"].startswith(CAPTURES) for r in records)


# -- the CLIXML writers follow the captured layout -------------------------------------------------------------------
@pytest.mark.parametrize("server", SERVER_LIST, ids=lambda s: s.name)
def test_ems_certificates_have_the_captured_layout(server: RealServer):
    for cert in server.certificates:
        assert _layout(exchange_certificate_clixml(cert)) == _shape("ExchangeCertificate")


def test_broken_certificates_have_the_captured_layout():
    for cert in BROKEN_CERTS:
        assert _layout(exchange_certificate_clixml(cert, shape="broken")) == _shape("ExchangeCertificate.broken")


@pytest.mark.parametrize("server", SERVER_LIST, ids=lambda s: s.name)
def test_auth_config_has_the_captured_layout(server: RealServer):
    assert _layout(auth_config_clixml(server)) == _shape("AuthConfig")


def test_the_full_variant_adds_a_property_bag_to_the_ems_shape():
    types, props, members = _layout(exchange_certificate_clixml(E19.cert("exchange"), shape="full"))
    assert (types, members) == (SHAPES["ExchangeCertificate"]["type_names"], SHAPES["ExchangeCertificate"]["members"])
    assert {"RawData": "BA", "Thumbprint": "S", "FriendlyName": "S", "Services": "Obj", "NotAfter": "DT",
            "IsSelfSigned": "B"}.items() <= props.items()


def test_an_undecorated_certificate_keeps_only_exchange_s_member():
    _, props, members = _layout(exchange_certificate_clixml(E19.cert("exchange"), decorated=False))
    assert (props, members) == ({"RawData": "BA"}, {"SerializationData": "BA"})


def test_strings_are_escaped_as_powershell_writes_them():
    text = exchange_certificate_clixml(E19.cert("exchange"))
    assert "[Subject]_x000D__x000A_  CN=Solo-E19A_x000D__x000A__x000D__x000A_[Issuer]" in text
    assert "\r" not in text and "\n" not in text


# -- what pypsrp hands exbe's readers --------------------------------------------------------------------------------
@pytest.mark.parametrize("objects", [EMS_CERTIFICATES(E16), EMS_CERTIFICATES(E19), BROKEN_CERTIFICATES],
                         ids=["e16", "e19", "broken"])
def test_deserialized_certificates_carry_raw_data_and_no_thumbprint_services_or_friendly_name(objects):
    assert objects
    for obj in objects:
        assert set(obj.adapted_properties) == {"RawData"}
        assert isinstance(obj.adapted_properties["RawData"], bytes)
        assert not (set(obj.adapted_properties) | set(obj.extended_properties)) & set(NOT_ON_THE_WIRE)
        assert obj.types[0].endswith("Microsoft.Exchange.Management.SystemConfigurationTasks.ExchangeCertificate")


@pytest.mark.parametrize("objects", [EMS_CERTIFICATES(E19), BROKEN_CERTIFICATES], ids=["ems", "broken"])
def test_the_thumbprint_is_the_sha1_of_raw_data_and_the_last_line_of_to_string(objects):
    for obj in objects:
        thumbprint = hashlib.sha1(obj.adapted_properties["RawData"]).hexdigest().upper()
        assert obj.to_string.endswith(f"[Thumbprint]\r\n  {thumbprint}\r\n")
        x509.load_der_x509_certificate(obj.adapted_properties["RawData"])


def test_ems_objects_carry_the_remoting_stamp_and_opaque_serialization_data():
    obj = EMS_CERTIFICATES(E19)[0]
    stamp = obj.extended_properties
    assert (stamp["PSComputerName"], str(stamp["RunspaceId"]), stamp["PSShowComputerName"]) == (
        E19.origin.ps_computer_name, E19.origin.runspace_id, False)
    assert stamp["SerializationData"].startswith(SERIALIZATION_DATA_PREFIX)
    assert "SerializationData" not in BROKEN_CERTIFICATES[0].extended_properties


def test_the_projection_carries_thumbprint_and_the_services_enum():
    (obj,) = deserialize(projection_clixml(E19.backend_thumbprint, 27))
    assert obj.types == PROJECTION_TYPES and obj.adapted_properties == {}
    assert obj.extended_properties["Thumbprint"] == E19.backend_thumbprint
    services = obj.extended_properties["Services"]
    assert services.types[:2] == [SERVICES_TYPE, "System.Enum"]
    assert (services.to_string, services.property_sets) == ("IMAP, POP, IIS, SMTP", [27])
    (none,) = deserialize(projection_clixml(E19.cert("wmsvc").thumbprint, 0))
    assert str(none.extended_properties["Services"]) == "None"


def test_auth_config_arrives_as_a_property_bag_of_strings():
    (obj,) = deserialize(auth_config_clixml(E19))
    props = obj.adapted_properties
    assert props["CurrentCertificateThumbprint"] == E19.auth_thumbprint
    assert (props["PreviousCertificateThumbprint"], props["NextCertificateThumbprint"]) == ("", "")
    assert props["NextCertificateEffectiveDate"] is None
    assert (props["ServiceName"], props["Name"]) == ("00000002-0000-0ff1-ce00-000000000000", "Auth Configuration")
    assert props["Id"] is props["Identity"]


def test_deserialize_reads_an_export_clixml_document_too():
    objects = f'<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">' \
              f'{exchange_certificate_clixml(E16.cert("auth"))}{auth_config_clixml(E16)}</Objs>'
    certificate, auth = deserialize(objects)
    assert certificate.adapted_properties["RawData"] == E16.cert("auth").der
    assert auth.adapted_properties["CurrentCertificateThumbprint"] == E16.auth_thumbprint


# -- our certificates mirror the captured ones -----------------------------------------------------------------------
@pytest.mark.parametrize("server", SERVER_LIST, ids=lambda s: s.name)
def test_the_exchange_certificates_are_sha1_as_captured(server: RealServer):
    exchange, auth, wmsvc = server.cert("exchange"), server.cert("auth"), server.cert("wmsvc")
    assert (exchange.friendly_name, exchange.services, exchange.signature_algorithm) == ("Microsoft Exchange", 27,
                                                                                         "sha1RSA")
    assert (auth.friendly_name, auth.services, auth.signature_algorithm) == (
        "Microsoft Exchange Server Auth Certificate", 16, "sha1RSA")
    assert (wmsvc.services, wmsvc.signature_algorithm) == (0, "sha256RSA")
    assert exchange.dns_names == exchange.san_dns_names == [server.fqdn.split(".")[0], server.fqdn]
    assert all(c.key_size == 2048 and c.self_signed for c in server.certificates)


def test_the_generated_certificates_are_fixed_and_distinct():
    assert E16.backend_thumbprint == "8468DCC0DF7DA1E600703BF47871D7072A01E255"
    assert E19.backend_thumbprint == "69091081241A7B0BDD3810B9202C186ABAB8E7EE"
    everything = [c for s in SERVERS.values() for c in s.certificates] + list(BROKEN_CERTS)
    keys = {c.x509.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo) for c in everything}
    assert len({c.thumbprint for c in everything}) == len(keys) == 11


def test_the_broken_capture_holds_five_certificates_one_with_a_seven_letter_country():
    assert [c.subject for c in BROKEN_CERTS] == [
        "DC=Windows Azure CRP Certificate Generator", "CN=E2k16-1", "CN=mail.contoso.lab",
        "CN=domain.com, OU=IT, O=Contoso, L=Cologne, S=NRW, C=Germany", "CN=WMSvc-SHA2-E2k16-1"]
    assert all(c.friendly_name is None and c.services is None for c in BROKEN_CERTS)


# -- IIS bindings and the facts document -----------------------------------------------------------------------------
@pytest.mark.parametrize("server", SERVER_LIST, ids=lambda s: s.name)
def test_the_bindings_carry_the_captured_spellings(server: RealServer):
    assert [(b["site"], b["protocol"], b["bindingInformation"]) for b in server.web_bindings] == CAPTURED_BINDINGS
    https = [b for b in server.web_bindings if b["protocol"] == "https"]
    assert {(b["certificateHash"], b["certificateStoreName"]) for b in https} == {(server.backend_thumbprint, "MY")}
    assert all((b["certificateHash"], b["certificateStoreName"]) == ("", "") for b in server.web_bindings
               if b["protocol"] == "http")
    assert all(b["sslFlags"] == 0 for b in server.web_bindings)
    assert all(set(b) == set(SHAPES["WebBinding"]["members"]) | {"site"} for b in server.web_bindings)


@pytest.mark.parametrize("server", SERVER_LIST, ids=lambda s: s.name)
def test_facts_report_https_bindings_verbatim(server: RealServer):
    facts = server.facts_data(NOW)
    assert [(b["site"], b["binding_information"]) for b in facts["bindings"]] == [
        ("Exchange Back End", server.backend_binding), ("Default Web Site", server.frontend_binding),
        ("Default Web Site", server.loopback_binding)]
    assert {(b["certificate_hash"], b["certificate_store"]) for b in facts["bindings"]} == {
        (server.backend_thumbprint, "MY")}
    assert (server.frontend_binding, server.loopback_binding) == (":443:", "127.0.0.1:443:")


@pytest.mark.parametrize("server", SERVER_LIST, ids=lambda s: s.name)
def test_facts_have_the_shape_of_the_facts_step(server: RealServer):
    facts = server.facts_data(NOW)
    baseline = json.loads((DATA.parent / "facts" / "baseline.json").read_text(encoding="utf-8"))["facts"]
    assert set(facts) == set(baseline)
    assert all(set(c) == set(baseline["certificates"][0]) for c in facts["certificates"])
    assert facts["now"] == "2026-06-01T08:00:00Z"
    assert [r["thumbprint"] for r in facts["root"]] == [server.backend_thumbprint]
    assert all(site == {"exists": True, "hsts_enabled": False, "hsts_header": False, "extended_protection": "None"}
               for site in facts["sites"].values())
    assert facts["services"] == {"W3SVC": "Running", "WAS": "Running"}
    auth = next(c for c in facts["certificates"] if c["thumbprint"] == server.auth_thumbprint)
    assert auth["dns_names"] == ["Microsoft Exchange Server Auth Certificate"]  # DnsNameList falls back to the CN


# -- Get-ExchangeServer and Get-SettingOverride (serialization signing by build, issue 20) ----------------------------
@pytest.mark.parametrize(("server", "build", "text"), [(E19, "15.2.922.7", "Version 15.2 (Build 922.7)"),
                                                       (E16, "15.1.2375.7", "Version 15.1 (Build 2375.7)")],
                         ids=["e19", "e16"])
def test_the_exchange_server_fixture_carries_the_captured_build_as_exchange_writes_it(server, build, text):
    from tests.real_shapes import EXCHANGE_SERVER_TYPES, exchange_build, exchange_server_clixml

    assert exchange_build(server) == build
    (obj,) = deserialize(exchange_server_clixml(server))
    assert obj.types == EXCHANGE_SERVER_TYPES
    version = obj.adapted_properties["AdminDisplayVersion"]
    assert version.to_string == text and [version.adapted_properties[k] for k in ("Major", "Minor", "Build",
                                                                                  "Revision")] == [
        int(n) for n in build.split(".")]
    assert obj.adapted_properties["Name"] == server.computer_name


def test_a_setting_override_keeps_its_parameters_and_servers_as_multi_valued_properties():
    from tests.real_shapes import SETTING_OVERRIDE_TYPES, setting_override_clixml

    (obj,) = deserialize(setting_override_clixml("Scoped", parameters=("Enabled=False",), servers=("EX01", "EX02")))
    props = obj.adapted_properties
    assert obj.types == SETTING_OVERRIDE_TYPES and props["ComponentName"] == "Data"
    assert props["Parameters"].property_sets == ["<LST><S>Enabled=False</S></LST>"], "raw <LST> text, as pypsrp does"
    assert props["Server"].property_sets == ["<LST><S>EX01</S><S>EX02</S></LST>"]
    assert str(props["Status"]) == "Accepted"
    (organization,) = deserialize(setting_override_clixml("Org"))
    assert organization.adapted_properties["Server"] is None, "organization-wide: no server list"

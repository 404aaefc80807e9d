"""How exbe reads what the Exchange endpoint returns: the objects exactly as pypsrp hands them over.

The objects come from ``tests.real_shapes`` (CLIXML written in the captured servers' layout, deserialized by pypsrp's
own Serializer): ``ExchangeCertificate`` carries ``RawData`` only (EMS capture), or ``Deserialized.`` and ``RawData``
only (the broken-signing capture); service assignments arrive only through the ``Select-Object`` projection, which
carries ``RawData`` too, so the full objects are read only when the projection is refused or incomplete.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
from xml.etree import ElementTree as ET

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pypsrp.serializer import Serializer

from exbe.exchange import (
    PROJECTED_PROPERTIES,
    full_certificates_statement,
    kind_of,
    new_certificate,
    normalise,
    read_certificate,
    read_facts,
    read_statements,
    services,
)
from exbe.facts import ExchangeFacts, iso
from exbe.transport import PipelineOutput, fast_serializer
from tests.real_shapes import (
    BROKEN_CERTIFICATES,
    BROKEN_CERTS,
    E16,
    E19,
    EMS_CERTIFICATES,
    PROJECTION_TYPES,
    auth_config_clixml,
    deserialize,
    exchange_certificate_clixml,
    projection_clixml,
)

CERTIFICATE_TYPE = "Microsoft.Exchange.Management.SystemConfigurationTasks.ExchangeCertificate"
SELECT_OBJECT_REFUSED = ("The term 'Select-Object' is not recognized as the name of a cmdlet, function, script file, "
                         "or operable program. Check the spelling of the name, or if a path was included, verify that "
                         "the path is correct and try again.")
#: Every real certificate the fixtures hold, as (server, certificate) for ids.
REAL_CERTS = [pytest.param(server, c, id=f"{server.name}-{c.id}") for server in (E16, E19) for c in server.certificates]


def one(xml_text: str):
    (obj,) = deserialize(xml_text)
    return obj


def read(*objects, unknown_because: str = "") -> ExchangeFacts:
    return normalise(PipelineOutput(list(objects), [], [], None), unknown_because=unknown_because)


def projection(thumbprint: str, flags: int, *, as_tag: str | None = None, der: bytes | None = None):
    """A ``Select-Object Thumbprint,Services`` object; ``as_tag`` "S" or "I32" writes Services as a plain string or
    bare flags instead of the enum (what a server could plausibly send); ``der`` adds the ``RawData`` note property
    as PowerShell serializes a byte[] (``<BA>``, base64): exbe's ``Thumbprint,Services,RawData`` projection. Still
    deserialized by pypsrp."""
    root = ET.fromstring(projection_clixml(thumbprint, flags))
    members = root.find("MS")
    assert members is not None
    if der is not None:
        ET.SubElement(members, "BA", N="RawData").text = base64.b64encode(der).decode()
    if as_tag:
        enum = next(e for e in members if e.get("N") == "Services")
        members.remove(enum)
        replacement = ET.SubElement(members, as_tag, N="Services")
        replacement.text = enum.findtext("ToString") if as_tag == "S" else str(flags)
    return one(ET.tostring(root, encoding="unicode"))


def property_bag(type_name: str, **props):
    """A plain deserialized property bag (Get-TransportService, Get-SettingOverride...), as pypsrp builds it."""
    def member(ref: int, name: str, value) -> str:
        if isinstance(value, bool):
            return f'<B N="{name}">{str(value).lower()}</B>'
        if isinstance(value, list):
            items = "".join(f"<S>{v}</S>" for v in value)
            return (f'<Obj N="{name}" RefId="{ref}"><TN RefId="{ref}"><T>System.Collections.ArrayList</T>'
                    f"<T>System.Object</T></TN><LST>{items}</LST></Obj>")
        return f'<S N="{name}">{value}</S>'

    text = "".join(member(ref, name, value) for ref, (name, value) in enumerate(props.items(), start=1))
    return one(f'<Obj RefId="0"><TN RefId="0"><T>Deserialized.{type_name}</T><T>Deserialized.System.Object</T></TN>'
               f"<Props>{text}</Props></Obj>")


class FakeSession:
    """Answers ``run_cmdlets`` as transport.Session does: one PipelineOutput for all statements of a call; a second
    call (the full objects) gets ``then``."""

    def __init__(self, output: list, *, failed: str | None = None, errors: tuple[str, ...] = (),
                 then: PipelineOutput | None = None) -> None:
        self.answers = [PipelineOutput(list(output), list(errors), [], failed),
                        then or PipelineOutput([], [], [], "a second round trip was not expected")]
        self.statements: list = []

    def run_cmdlets(self, statements):
        self.statements.append(statements)
        return self.answers[len(self.statements) - 1]


# -- certificates: RawData is all there is -------------------------------------------------------------------------
@pytest.mark.parametrize(("server", "real"), REAL_CERTS)
def test_a_rawdata_only_certificate_gives_thumbprint_subject_not_after_and_self_signed(server, real):
    obj = one(exchange_certificate_clixml(real))
    assert set(obj.adapted_properties) == {"RawData"}, "the EMS capture's shape: no Thumbprint on the wire"
    cert = read_certificate(obj)
    assert cert.thumbprint == hashlib.sha1(real.der).hexdigest().upper() == real.thumbprint
    assert (cert.subject, cert.not_after, cert.self_signed) == (real.subject, real.not_after, True)
    assert cert.services is None, "RawData carries no service assignment"


@pytest.mark.parametrize("real", BROKEN_CERTS, ids=[c.id for c in BROKEN_CERTS])
def test_deserialized_prefixed_rawdata_only_certificates_are_read_the_same_way(real):
    obj = next(o for o in BROKEN_CERTIFICATES if o.adapted_properties["RawData"] == real.der)
    assert obj.types[0] == f"Deserialized.{CERTIFICATE_TYPE}" and kind_of(obj) == "certificate"
    cert = read_certificate(obj)
    assert (cert.thumbprint, cert.not_after, cert.self_signed) == (real.thumbprint, real.not_after, True)
    assert _rdns(cert.subject) == _rdns(real.subject), "the same name (RawData gives it in RFC 4514 spelling)"


def _rdns(name: str) -> list[str]:
    """``CN=a, S=b`` (Windows) and ``CN=a,ST=b`` (RFC 4514) as the same list of RDNs."""
    parts = [part.strip() for part in name.split(",")]
    return ["S=" + part[3:] if part.startswith("ST=") else part for part in parts]


def test_a_certificate_without_rawdata_or_thumbprint_is_not_read():
    obj = one(exchange_certificate_clixml(E19.cert("exchange")))
    obj.adapted_properties.clear()
    assert read_certificate(obj) is None
    obj.adapted_properties["RawData"] = b"not DER"
    assert read_certificate(obj) is None
    assert read(obj).certificates == ()


def test_the_property_bag_is_used_where_a_server_sends_one():
    real = E19.cert("exchange")
    cert = read_certificate(one(exchange_certificate_clixml(real, shape="full")))
    assert (cert.thumbprint, cert.subject, cert.not_after, cert.self_signed) == (
        real.thumbprint, real.subject, real.not_after, True)
    assert cert.services == ("IMAP", "POP", "IIS", "SMTP")


def test_dotnet_dates_with_seven_fractional_digits_are_read_from_a_property_bag():
    facts = read(property_bag(CERTIFICATE_TYPE, Thumbprint="ab cd", Services="IMAP, POP, SMTP",
                              NotAfter="2030-01-01T10:00:00.1234567Z", IsSelfSigned=True, Subject="CN=EXCH01"))
    (cert,) = facts.certificates
    assert iso(cert.not_after) == "2030-01-01T10:00:00Z"
    assert cert.thumbprint == "ABCD" and cert.services == ("IMAP", "POP", "SMTP")
    assert facts.assignments_unknown == ""


# -- service assignments: the projection ---------------------------------------------------------------------------
@pytest.mark.parametrize("as_tag", [None, "S", "I32"], ids=["enum", "string", "int-flags"])
def test_with_the_projection_service_assignments_are_read_in_every_form(as_tag):
    backend, auth, wmsvc = (E19.cert(i) for i in ("exchange", "auth", "wmsvc"))
    facts = read(*EMS_CERTIFICATES(E19), projection(backend.thumbprint, 27, as_tag=as_tag),
                 projection(auth.thumbprint, 16, as_tag=as_tag), projection(wmsvc.thumbprint, 0, as_tag=as_tag))
    assert facts.assignments_unknown == ""
    assert {c.thumbprint: c.services for c in facts.certificates} == {
        backend.thumbprint: ("IMAP", "POP", "IIS", "SMTP"), auth.thumbprint: ("SMTP",), wmsvc.thumbprint: ()}


def test_the_services_enum_arrives_as_pypsrp_builds_it():
    services_value = projection(E19.backend_thumbprint, 27).extended_properties["Services"]
    assert (services_value.to_string, services_value.property_sets) == ("IMAP, POP, IIS, SMTP", [27])
    assert services(services_value) == ("IMAP", "POP", "IIS", "SMTP")
    services_value.to_string = None  # an enum whose text did not come across: the flags still say it
    assert services(services_value) == ("IMAP", "POP", "IIS", "SMTP")


@pytest.mark.parametrize("value", ["None", 0, None, [], ""])
def test_services_none_means_no_assignment(value):
    assert services(value) == ()


def test_every_allowed_services_flag_is_named():
    assert services(127) == ("IMAP", "POP", "UM", "IIS", "SMTP", "FEDERATION", "UMCALLROUTER")
    assert services("IMAP, POP, UM, IIS, SMTP, Federation, UMCallRouter") == services(127)


def test_without_the_projection_services_are_unknown_and_the_facts_say_why():
    facts = read(*EMS_CERTIFICATES(E16))
    assert len(facts.certificates) == 3 and all(c.services is None for c in facts.certificates)
    assert facts.assignments_unknown == "Exchange sent no service assignments for 3 of 3 certificate(s)"
    refused = read(*EMS_CERTIFICATES(E16), unknown_because="the endpoint refused Select-Object")
    assert refused.assignments_unknown == "the endpoint refused Select-Object"


def test_a_projection_missing_for_one_certificate_makes_every_assignment_unknown():
    """Half a picture is not trusted: the conservative path needs to know that something is missing."""
    facts = read(*EMS_CERTIFICATES(E19), projection(E19.backend_thumbprint, 27))
    assert all(c.services is None for c in facts.certificates)
    assert facts.assignments_unknown == "Exchange sent no service assignments for 2 of 3 certificate(s)"


def test_projection_objects_are_never_mistaken_for_certificates():
    obj = projection(E19.backend_thumbprint, 27)
    assert obj.types == PROJECTION_TYPES and kind_of(obj) == "projection"
    assert read(obj).certificates == (), "a projection adds assignments to listed certificates, never certificates"
    other = projection(E19.backend_thumbprint, 27)
    other.types = ["Selected.Microsoft.Exchange.Data.Directory.Management.ExchangeServer", *PROJECTION_TYPES[1:]]
    assert kind_of(other) is None and read(other).server is None


def test_a_projection_of_a_certificate_not_listed_adds_nothing():
    facts = read(*EMS_CERTIFICATES(E19)[:1], projection(E19.cert("exchange").thumbprint, 27),
                 projection(E19.cert("auth").thumbprint, 16))
    (cert,) = facts.certificates
    assert (cert.thumbprint, cert.services) == (E19.auth_thumbprint, ("SMTP",))


# -- the read pipeline -----------------------------------------------------------------------------------------------
def projected(server=E19, *, with_der: bool = True) -> list:
    """The server's certificates as ``Select-Object Thumbprint,Services,RawData`` objects (``with_der`` False: the
    ``Thumbprint,Services`` objects a server sending no ``RawData`` in the projection would give)."""
    return [projection(c.thumbprint, c.services or 0, der=c.der if with_der else None) for c in server.certificates]


def real_answer(server=E19):
    """What read_statements gets from a healthy server: the Auth config and one projected object per certificate."""
    return [one(auth_config_clixml(server)), *projected(server)]


def full_objects(server=E19) -> PipelineOutput:
    """The answer to the fallback: the full certificates as they cross the wire (RawData only)."""
    return PipelineOutput(EMS_CERTIFICATES(server), [], [], None)


def test_the_certificates_are_read_once_as_a_projection_with_rawdata_the_last_statement():
    """A refusal of Select-Object then ends the pipeline after every other answer has arrived."""
    statements = read_statements("EXCH01")
    assert statements[-1] == [("Get-ExchangeCertificate", {"Server": "EXCH01"}),
                              ("Select-Object", {"Property": PROJECTED_PROPERTIES})]
    assert PROJECTED_PROPERTIES == ["Thumbprint", "Services", "RawData"]
    assert [("Get-ExchangeCertificate", {"Server": "EXCH01"})] not in statements, "no full objects on the wire"
    assert full_certificates_statement("EXCH01") == [[("Get-ExchangeCertificate", {"Server": "EXCH01"})]]


def test_a_healthy_read_gives_certificates_assignments_and_the_auth_configuration_in_one_round_trip():
    session = FakeSession(real_answer())
    facts, errors = read_facts(session, "SOLO-E19A")
    assert errors == [] and session.statements == [read_statements("SOLO-E19A")]
    assert facts.assignments_unknown == ""
    assert {c.thumbprint: c.services for c in facts.certificates} == {
        E19.auth_thumbprint: ("SMTP",), E19.backend_thumbprint: ("IMAP", "POP", "IIS", "SMTP"),
        E19.cert("wmsvc").thumbprint: ()}
    assert {c.thumbprint: (c.subject, c.not_after, c.self_signed) for c in facts.certificates} == {
        c.thumbprint: (c.subject, c.not_after, True) for c in E19.certificates}, "from the projected RawData"
    assert (facts.auth.current, facts.auth.next, facts.auth.next_effective) == (E19.auth_thumbprint, None, None)


def test_the_projection_reads_the_same_facts_as_the_full_objects_did():
    projected_facts, _ = read_facts(FakeSession(real_answer(E16)), "SOLO-E16A")
    full_objects_facts = read(*EMS_CERTIFICATES(E16), one(auth_config_clixml(E16)), *projected(E16, with_der=False))
    assert projected_facts == full_objects_facts


def test_a_projection_without_rawdata_makes_exbe_read_the_full_objects_and_keep_the_assignments():
    session = FakeSession([one(auth_config_clixml(E19)), *projected(with_der=False)], then=full_objects())
    facts, errors = read_facts(session, "SOLO-E19A")
    assert session.statements == [read_statements("SOLO-E19A"), full_certificates_statement("SOLO-E19A")]
    assert errors == [] and facts.assignments_unknown == ""
    assert {c.thumbprint: c.services for c in facts.certificates} == {
        E19.auth_thumbprint: ("SMTP",), E19.backend_thumbprint: ("IMAP", "POP", "IIS", "SMTP"),
        E19.cert("wmsvc").thumbprint: ()}
    assert {c.thumbprint: c.subject for c in facts.certificates} == {c.thumbprint: c.subject for c in E19.certificates}


def test_a_pipeline_that_failed_on_select_object_reads_the_full_objects_with_assignments_unknown():
    session = FakeSession([one(auth_config_clixml(E19))], failed=SELECT_OBJECT_REFUSED,
                          errors=("a non-terminating error",), then=full_objects())
    facts, errors = read_facts(session, "SOLO-E19A")
    assert session.statements == [read_statements("SOLO-E19A"), full_certificates_statement("SOLO-E19A")]
    assert facts is not None and errors == ["a non-terminating error"]
    assert {c.thumbprint for c in facts.certificates} == {c.thumbprint for c in E19.certificates}
    assert all(c.services is None for c in facts.certificates)
    assert facts.assignments_unknown.startswith("the Exchange endpoint refused Select-Object (The term 'Select-Object'")
    assert facts.auth.current == E19.auth_thumbprint, "the earlier statements' answers are kept"


def test_when_the_full_objects_cannot_be_read_either_there_are_no_facts_and_every_error():
    session = FakeSession([one(auth_config_clixml(E19))], failed=SELECT_OBJECT_REFUSED, errors=("first",),
                          then=PipelineOutput([], ["second"], [], "Access is denied."))
    assert read_facts(session, "SOLO-E19A") == (None, ["first", "second", "Access is denied."])


def test_a_pipeline_that_failed_on_anything_else_gives_no_facts_and_every_error():
    session = FakeSession(real_answer(), failed="Access is denied.", errors=("first",))
    assert read_facts(session, "SOLO-E19A") == (None, ["first", "Access is denied."])
    assert len(session.statements) == 1


def test_a_broken_signing_answer_is_read_as_the_certificates_it_lists():
    facts = read(*BROKEN_CERTIFICATES)
    assert [c.thumbprint for c in facts.certificates] == [c.thumbprint for c in BROKEN_CERTS]
    assert facts.assignments_unknown


def test_the_auth_configuration_has_empty_strings_for_unset_thumbprints():
    auth = read(one(auth_config_clixml(E16, next_thumbprint="", current="ab cd"))).auth
    assert (auth.current, auth.next) == ("ABCD", None)
    staged = read(one(auth_config_clixml(E16, next_thumbprint=E16.backend_thumbprint,
                                         next_effective=datetime.datetime(2026, 6, 2, tzinfo=datetime.timezone.utc))))
    assert staged.auth.next == E16.backend_thumbprint
    assert staged.auth.next_effective == datetime.datetime(2026, 6, 2, tzinfo=datetime.timezone.utc)


def test_the_internal_transport_certificate_comes_from_the_transport_server_object():
    facts = read(property_bag("Microsoft.Exchange.Data.Directory.SystemConfiguration.TransportServer",
                              InternalTransportCertificateThumbprint="ef01"))
    assert facts.internal_transport == "EF01"


def test_serialization_signing_is_on_unless_an_override_disables_it():
    assert read().serialization_signing is True
    override = "Microsoft.Exchange.Data.Directory.SystemConfiguration.SettingOverride"
    assert read(property_bag(override, SectionName="EnableSerializationDataSigning",
                             Parameters=["Enabled=False"])).serialization_signing is False
    assert read(property_bag(override, SectionName="EnableSerializationDataSigning",
                             Parameters=["Enabled=True"])).serialization_signing is True
    assert read(property_bag(override, SectionName="SomethingElse",
                             Parameters=["Enabled=False"])).serialization_signing is True


def test_the_read_facts_survive_the_run_record_round_trip():
    facts, _ = read_facts(FakeSession(real_answer(E16)), "SOLO-E16A")
    assert ExchangeFacts.from_dict(facts.to_dict()) == facts


# -- New-ExchangeCertificate ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", ["ems", "broken", "full"])
def test_new_exchange_certificate_output_with_rawdata_only_yields_the_thumbprint(shape):
    real = E19.cert("exchange")
    session = FakeSession([one(exchange_certificate_clixml(real, shape=shape))])
    assert new_certificate(session, {"Services": "None"}) == (real.thumbprint, [])
    assert session.statements == [[[("New-ExchangeCertificate", {"Services": "None"})]]]


def test_new_exchange_certificate_output_that_names_no_single_certificate_yields_none_and_the_errors():
    assert new_certificate(FakeSession([]), {}) == (None, [])
    two = FakeSession(EMS_CERTIFICATES(E19)[:2])
    assert new_certificate(two, {})[0] is None, "two certificates: which one was created is not known"
    failed = FakeSession([], failed="The certificate could not be created.", errors=("warning-ish error",))
    assert new_certificate(failed, {}) == (None, ["warning-ish error", "The certificate could not be created."])


# -- exbe's deserializer hands over exactly what pypsrp's does -------------------------------------------------------
def as_seen(value):
    """Everything a reader can see of a deserialized value (types, properties, ToString, nested objects, raw XML)."""
    if isinstance(value, list):
        return [as_seen(v) for v in value]
    if isinstance(value, dict):
        return {k: as_seen(v) for k, v in value.items()}
    if hasattr(value, "__dict__"):
        return (type(value).__name__, {k: as_seen(v) for k, v in vars(value).items()})
    return (type(value).__name__, value)


def both_ways(xml_text: str):
    """``xml_text`` deserialized as a received message is: once by pypsrp's Serializer, once by exbe's."""
    return [as_seen(serializer.deserialize(xml_text)) for serializer in (Serializer(), fast_serializer())]


REAL_WIRE = {
    "ems-certificate": exchange_certificate_clixml(E19.cert("exchange")),
    "broken-certificate": exchange_certificate_clixml(E19.cert("exchange"), shape="broken"),
    "full-certificate": exchange_certificate_clixml(E16.cert("exchange"), shape="full"),
    "auth-config": auth_config_clixml(E16, next_thumbprint=E16.backend_thumbprint,
                                      next_effective=datetime.datetime(2026, 6, 2, tzinfo=datetime.timezone.utc)),
    "projection": projection_clixml(E19.backend_thumbprint, 27),
}


@pytest.mark.parametrize("xml_text", REAL_WIRE.values(), ids=REAL_WIRE.keys())
def test_every_real_shape_is_deserialized_exactly_as_pypsrp_does(xml_text):
    reference, exbe = both_ways(xml_text)
    assert exbe == reference


def test_a_projection_with_rawdata_and_shared_references_is_deserialized_exactly_as_pypsrp_does():
    root = ET.fromstring(projection_clixml(E19.backend_thumbprint, 27))
    members = root.find("MS")
    assert members is not None
    ET.SubElement(members, "BA", N="RawData").text = base64.b64encode(E19.cert("exchange").der).decode()
    for tag, text in (("B", "true"), ("I64", "-5"), ("DT", "2030-01-01T10:00:00.1234567+01:00"),
                      ("G", "6a1b8a3e-0b8c-4a56-9b7e-0f3d1b2c4d5e"), ("Db", "1.5"), ("Nil", None)):
        ET.SubElement(members, tag, N=f"a {tag}").text = text
    enum = next(e for e in members if e.get("N") == "Services")
    ET.SubElement(members, "Ref", N="Services again", RefId=enum.get("RefId", ""))
    reference, exbe = both_ways(ET.tostring(root, encoding="unicode"))
    assert exbe == reference


@given(st.text())
def test_any_string_comes_back_from_the_wire_exactly_as_pypsrp_reads_it(text):
    escaped = Serializer()._serialize_string(text)
    assert fast_serializer()._deserialize_string(escaped) == Serializer()._deserialize_string(escaped)

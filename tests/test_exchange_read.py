"""How exbe reads what the Exchange endpoint returns: the objects exactly as pypsrp hands them over.

The objects come from ``tests.real_shapes`` (CLIXML written in the captured servers' layout, deserialized by pypsrp's
own Serializer): ``ExchangeCertificate`` carries ``RawData`` only (EMS capture), or ``Deserialized.`` and ``RawData``
only (the broken-signing capture); service assignments arrive only through the ``Select-Object`` projection, which
carries ``RawData`` too, so the full objects are read only when the projection is refused or incomplete.

The read is one pipeline of five statements, which a real server runs as PowerShell's batch: a statement that fails
leaves an error record and a missing output, the others answer and the pipeline completes. So every answer here is a
stream in arrival order (objects and error records), as pypsrp receives it, and the pipeline never "fails".
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

from exbe.batch import ServerError
from exbe.exchange import (
    PROJECTED_PROPERTIES,
    full_certificates_statement,
    kind_of,
    new_certificate,
    normalise,
    not_permitted,
    read_certificate,
    read_facts,
    read_statements,
    services,
)
from exbe.facts import ExchangeFacts, HostFacts, iso
from exbe.psrp_serializer import fast_serializer
from exbe.selection import exchange_blinded
from exbe.transport import PipelineOutput
from tests.psrp_values import as_seen
from tests.real_shapes import (
    BROKEN_CERTIFICATES,
    BROKEN_CERTS,
    E16,
    E19,
    EMS_CERTIFICATES,
    PROJECTION_TYPES,
    auth_config_clixml,
    deserialize,
    exchange_build,
    exchange_certificate_clixml,
    exchange_server_clixml,
    projection_clixml,
    setting_override_clixml,
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


def not_recognized(name: str) -> ServerError:
    """What PowerShell writes for a command the session does not have (CommandNotFoundException): on Exchange's
    endpoint, a cmdlet the account's roles do not grant, or Select-Object when the endpoint hides it."""
    return ServerError(f"The term '{name}' is not recognized as the name of a cmdlet, function, script file, or "
                       "operable program. Check the spelling of the name, or if a path was included, verify that the "
                       "path is correct and try again.", error_id="CommandNotFoundException",
                       reason="CommandNotFoundException", target=name)


#: What a RestrictedRemoteServer session's Select-Object proxy answers to -Property Thumbprint (its ValidateSet).
SELECT_PROPERTY_REFUSED = ServerError(
    "Cannot validate argument on parameter 'Property'. The argument \"Thumbprint\" does not belong to the set "
    "\"ModuleName,Namespace,OutputType,Count,HelpUri,Name,CommandType,ResolvedCommandName,DefaultParameterSet,"
    "CmdletBinding,Parameters\" specified by the ValidateSet attribute. Supply an argument that is in the set and then "
    "try the command again.", error_id="ParameterArgumentValidationError,Select-Object",
    reason="ParameterBindingValidationException", command="Select-Object")


def stream(*items) -> PipelineOutput:
    """A pipeline's answer as pypsrp receives it: objects and error records (:class:`ServerError`) in arrival order;
    the pipeline completed (a batch does, whatever its statements did)."""
    events = [("error", item) if isinstance(item, ServerError) else ("output", item) for item in items]
    return PipelineOutput([i for k, i in events if k == "output"], [i.text for k, i in events if k == "error"], [],
                          None, events)


def failed_pipeline(*items, failed: ServerError) -> PipelineOutput:
    """A pipeline that ended Failed (one statement's terminating error, or a lost runspace): its record comes last."""
    answer = stream(*items, failed)
    return PipelineOutput(answer.output, answer.errors[:-1], [], failed.text, answer.events)


class FakeSession:
    """Answers ``run_cmdlets`` as transport.Session does, one answer per call (the first: the five reads; a second:
    the full objects). A call no answer was given for is a test failure."""

    def __init__(self, *answers: PipelineOutput) -> None:
        self.answers = list(answers)
        self.statements: list = []

    def run_cmdlets(self, statements):
        self.statements.append(statements)
        assert len(self.statements) <= len(self.answers), f"an unexpected round trip: {statements}"
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


def transport(server=E19):
    """Get-TransportService's object (no capture: a property bag with the documented property)."""
    return property_bag("Microsoft.Exchange.Data.Directory.SystemConfiguration.TransportServer",
                        InternalTransportCertificateThumbprint=server.auth_thumbprint)


def real_answer(server=E19, *, build: str | None = None, certificates: list | None = None,
                overrides: tuple = ()) -> list:
    """What read_statements gets from a healthy server, statement by statement: Get-ExchangeServer, Get-AuthConfig,
    the setting overrides, Get-TransportService and one projected object per certificate."""
    return [one(exchange_server_clixml(server, build=build)), one(auth_config_clixml(server)), *overrides,
            transport(server), *(projected(server) if certificates is None else certificates)]


def full_objects(server=E19) -> PipelineOutput:
    """The answer to the fallback: the full certificates as they cross the wire (RawData only)."""
    return stream(*EMS_CERTIFICATES(server))


def test_the_certificates_are_read_once_as_a_projection_with_rawdata_the_last_statement():
    """A refusal of Select-Object then ends the pipeline after every other answer has arrived."""
    statements = read_statements("EXCH01")
    assert statements[-1] == [("Get-ExchangeCertificate", {"Server": "EXCH01"}),
                              ("Select-Object", {"Property": PROJECTED_PROPERTIES})]
    assert PROJECTED_PROPERTIES == ["Thumbprint", "Services", "RawData"]
    assert [("Get-ExchangeCertificate", {"Server": "EXCH01"})] not in statements, "no full objects on the wire"
    assert full_certificates_statement("EXCH01") == [[("Get-ExchangeCertificate", {"Server": "EXCH01"})]]


def test_a_healthy_read_gives_certificates_assignments_and_the_auth_configuration_in_one_round_trip():
    session = FakeSession(stream(*real_answer()))
    facts, errors = read_facts(session, "SOLO-E19A")
    assert errors == [] and session.statements == [read_statements("SOLO-E19A")]
    assert facts.assignments_unknown == "" and facts.unread == {}
    assert {c.thumbprint: c.services for c in facts.certificates} == {
        E19.auth_thumbprint: ("SMTP",), E19.backend_thumbprint: ("IMAP", "POP", "IIS", "SMTP"),
        E19.cert("wmsvc").thumbprint: ()}
    assert {c.thumbprint: (c.subject, c.not_after, c.self_signed) for c in facts.certificates} == {
        c.thumbprint: (c.subject, c.not_after, True) for c in E19.certificates}, "from the projected RawData"
    assert (facts.auth.current, facts.auth.next, facts.auth.next_effective) == (E19.auth_thumbprint, None, None)
    assert facts.internal_transport == E19.auth_thumbprint
    assert facts.server.version == "Version 15.2 (Build 922.7)"


def test_the_projection_reads_the_same_facts_as_the_full_objects_did():
    projected_facts, _ = read_facts(FakeSession(stream(*real_answer(E16))), "SOLO-E16A")
    full_objects_facts = read(one(exchange_server_clixml(E16)), *EMS_CERTIFICATES(E16), one(auth_config_clixml(E16)),
                              transport(E16), *projected(E16, with_der=False))
    assert projected_facts == full_objects_facts


def test_a_projection_without_rawdata_makes_exbe_read_the_full_objects_and_keep_the_assignments():
    session = FakeSession(stream(*real_answer(certificates=projected(with_der=False))), full_objects())
    facts, errors = read_facts(session, "SOLO-E19A")
    assert session.statements == [read_statements("SOLO-E19A"), full_certificates_statement("SOLO-E19A")]
    assert errors == [] and facts.assignments_unknown == ""
    assert {c.thumbprint: c.services for c in facts.certificates} == {
        E19.auth_thumbprint: ("SMTP",), E19.backend_thumbprint: ("IMAP", "POP", "IIS", "SMTP"),
        E19.cert("wmsvc").thumbprint: ()}
    assert {c.thumbprint: c.subject for c in facts.certificates} == {c.thumbprint: c.subject for c in E19.certificates}


def store_of(server=E19) -> HostFacts:
    """The certificate store as the facts step reads it on the captured server (every certificate of My), today."""
    return HostFacts.parse(server.facts_data(datetime.datetime.now(datetime.timezone.utc)))


@pytest.mark.parametrize("refusal", [not_recognized("Select-Object"), SELECT_PROPERTY_REFUSED],
                         ids=["select-object-hidden", "restricted-property-set"])
def test_a_refused_projection_is_an_error_record_and_exbe_reads_the_full_objects_with_assignments_unknown(refusal):
    """The batch goes on after the refusal: every other statement answered; the certificates come from RawData."""
    session = FakeSession(stream(*real_answer(certificates=[refusal])), full_objects())
    facts, warnings = read_facts(session, "SOLO-E19A")
    assert session.statements == [read_statements("SOLO-E19A"), full_certificates_statement("SOLO-E19A")]
    assert {c.thumbprint for c in facts.certificates} == {c.thumbprint for c in E19.certificates}
    assert all(c.services is None for c in facts.certificates)
    assert facts.assignments_unknown == f"the Exchange endpoint refused Select-Object ({refusal.text})"
    assert facts.auth.current == E19.auth_thumbprint and facts.internal_transport == E19.auth_thumbprint
    assert warnings == [f"Exchange: Get-ExchangeCertificate | Select-Object did not answer: {refusal.text}"], \
        "the server's own text, as a warning"
    assert exchange_blinded(store_of(), facts) == "", "a refused projection is not serialization signing"


def test_get_exchange_certificate_not_permitted_says_which_role_grants_it_and_is_not_blindness():
    """Exchange builds the session from the account's RBAC roles: a cmdlet outside them cannot be resolved."""
    session = FakeSession(stream(*real_answer(certificates=[not_recognized("Get-ExchangeCertificate")])))
    facts, warnings = read_facts(session, "SOLO-E19A")
    assert len(session.statements) == 1, "the full objects need the same cmdlet: not asked for"
    assert facts.certificates == () and "certificates" in facts.unread
    assert facts.assignments_unknown.startswith(
        "Get-ExchangeCertificate is not permitted for this account on the Exchange endpoint (The term "
        "'Get-ExchangeCertificate' is not recognized")
    assert "'Exchange Server Certificates' management role" in facts.assignments_unknown
    assert warnings == ["Exchange: Get-ExchangeCertificate | Select-Object did not answer: "
                        + not_permitted("Get-ExchangeCertificate", not_recognized("Get-ExchangeCertificate").text)]
    store = store_of()
    assert store.certificates, "the store holds certificates while Exchange listed none"
    assert exchange_blinded(store, facts) == "", "an empty list that never was a list is not blindness"


def test_a_failed_middle_statement_leaves_the_others_answers_and_its_own_unknown():
    denied = not_recognized("Get-AuthConfig")
    answer = real_answer()
    session = FakeSession(stream(answer[0], denied, *answer[2:]))
    facts, warnings = read_facts(session, "SOLO-E19A")
    assert facts.auth.current is None and facts.unread["auth"] == f"Get-AuthConfig: {denied.text}"
    assert facts.assignments_unknown == "" and len(facts.certificates) == 3
    assert warnings == ["Exchange: Get-AuthConfig did not answer: Get-AuthConfig is not permitted for this account "
                        f"on the Exchange endpoint ({denied.text}); `Get-ManagementRole -Cmdlet Get-AuthConfig` lists "
                        "the roles that grant it: assign that role to the account (directly or through a role group)"]


def test_when_the_full_objects_cannot_be_read_either_certificates_are_unknown_with_every_server_text():
    lost = ServerError("The I/O operation has been aborted.", reason="PSRemotingTransportException")
    session = FakeSession(stream(*real_answer(certificates=[not_recognized("Select-Object")])),
                          failed_pipeline(failed=lost))
    facts, warnings = read_facts(session, "SOLO-E19A")
    assert facts.certificates == () and facts.unread["certificates"] == f"Get-ExchangeCertificate failed: {lost.text}"
    assert warnings[-1] == f"Exchange: Get-ExchangeCertificate did not answer: {lost.text}"
    assert facts.assignments_unknown.startswith("the Exchange endpoint refused Select-Object")


def test_a_record_beside_the_full_objects_is_a_note_and_the_certificates_are_read():
    unreadable = ServerError("The certificate with thumbprint AB could not be read.",
                             command="Get-ExchangeCertificate")
    session = FakeSession(stream(*real_answer(certificates=[not_recognized("Select-Object")])),
                          stream(*EMS_CERTIFICATES(E19), unreadable))
    facts, warnings = read_facts(session, "SOLO-E19A")
    assert len(facts.certificates) == 3 and "certificates" not in facts.unread
    assert warnings[-1] == f"Exchange: Get-ExchangeCertificate: {unreadable.text}"


def test_when_no_statement_answers_there_are_no_facts_and_every_server_text():
    lost = ServerError("The runspace was lost.")
    facts, warnings = read_facts(FakeSession(failed_pipeline(failed=lost)), "SOLO-E19A")
    assert facts is None
    assert warnings == ["Exchange: Get-ExchangeServer did not answer: The runspace was lost.",
                        "Exchange: Get-AuthConfig did not answer: no answer and no error record (it did not run, or "
                        "wrote nothing)",
                        "Exchange: Get-TransportService did not answer: no answer and no error record (it did not "
                        "run, or wrote nothing)"], "the batch stopped in the first statement; the others never ran"


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


# -- serialization signing, judged as HealthChecker does -------------------------------------------------------------
def signing_of(build: str, *overrides) -> ExchangeFacts:
    return read(one(exchange_server_clixml(E19, build=build)), *(one(o) for o in overrides))


@pytest.mark.parametrize(("build", "state"), [
    ("15.2.922.7", False),  # 2019 CU10, the captured server: never received the January 2023 SU
    ("15.1.2375.7", False),  # 2016 CU22, the captured server
    ("15.2.1118.21", False),  # 2019 CU12 Jan23SU: available, off by default
    ("15.1.2507.34", False),  # 2016 CU23 Oct23SU
    ("15.2.1118.40", True),  # 2019 CU12 Nov23SU: on by default
    ("15.2.1258.28", True),  # 2019 CU13 Nov23SU
    ("15.1.2507.35", True),  # 2016 CU23 Nov23SU
    ("15.2.1544.4", True),  # 2019 CU14, released after it
    ("15.2.2562.17", True),  # Exchange SE RTM
], ids=lambda value: str(value))
def test_signing_by_build_without_overrides(build, state):
    facts = signing_of(build)
    assert facts.serialization_signing is state and facts.signing_why


def test_only_a_data_enableserializationdatasigning_override_for_this_server_or_the_organization_counts():
    on_before_nov = "15.2.1118.21"
    enable = setting_override_clixml("EnableSigning", parameters=("Enabled=True",))
    assert signing_of(on_before_nov, enable).serialization_signing is True
    assert signing_of(on_before_nov, setting_override_clixml(
        "Other", servers=("SOLO-E19A",))).serialization_signing is True, "scoped to this server"
    assert signing_of(on_before_nov, setting_override_clixml(
        "ElseWhere", servers=("OTHER-EX01",))).serialization_signing is False, "scoped to another server"
    assert signing_of(on_before_nov, setting_override_clixml(
        "WrongComponent", component="Other")).serialization_signing is False
    assert signing_of("15.2.2562.17", setting_override_clixml(
        "Disable", parameters=("Enabled=False",))).serialization_signing is False


def test_several_overrides_make_the_state_unknown_and_it_is_said():
    facts = signing_of("15.2.2562.17", setting_override_clixml("A", parameters=("Enabled=False",)),
                       setting_override_clixml("B", parameters=("Enabled=True",)))
    assert facts.serialization_signing is None
    assert facts.unread["signing"] == facts.signing_why == ("several setting overrides apply (A, B); HealthChecker "
                                                             "calls that unknown too")


def test_without_the_build_the_state_is_unknown():
    facts = read()
    assert facts.serialization_signing is None and "build is unknown" in facts.signing_why


def test_a_pre_november_2023_build_with_an_expired_auth_certificate_is_not_blinded():
    """The captured 2019 server (CU10, 15.2.922.7): its Auth certificate expired on 2024-11-06, and its build never
    had serialization signing; judging it blinded would clone needlessly and keep every old certificate."""
    assert exchange_build(E19) == "15.2.922.7"
    facts, warnings = read_facts(FakeSession(stream(*real_answer())), "SOLO-E19A")
    store = store_of()
    auth = store.certificate(facts.auth.current)
    assert auth is not None and auth.not_after < store.now, "the captured Auth certificate has expired"
    assert facts.serialization_signing is False and "predates the January 2023" in facts.signing_why
    assert exchange_blinded(store, facts) == ""
    nov23, _ = read_facts(FakeSession(stream(*real_answer(build="15.2.1118.40"))), "SOLO-E19A")
    assert "expired" in exchange_blinded(store, nov23), "from the November 2023 SU the same server is blinded"
    unknown = read(one(exchange_server_clixml(E19, build="15.2.2562.17")),
                   one(setting_override_clixml("A", parameters=("Enabled=False",))),
                   one(setting_override_clixml("B", parameters=("Enabled=True",))), one(auth_config_clixml(E19)),
                   *EMS_CERTIFICATES(E19))
    assert "unknown" in exchange_blinded(store, unknown) and "may not" in exchange_blinded(store, unknown)


def test_the_read_facts_survive_the_run_record_round_trip():
    facts, _ = read_facts(FakeSession(stream(*real_answer(E16))), "SOLO-E16A")
    assert ExchangeFacts.from_dict(facts.to_dict()) == facts
    denied, _ = read_facts(FakeSession(stream(*real_answer(certificates=[not_recognized("Get-ExchangeCertificate")]))),
                           "SOLO-E19A")
    assert ExchangeFacts.from_dict(denied.to_dict()) == denied


# -- New-ExchangeCertificate ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", ["ems", "broken", "full"])
def test_new_exchange_certificate_output_with_rawdata_only_yields_the_thumbprint(shape):
    real = E19.cert("exchange")
    session = FakeSession(stream(one(exchange_certificate_clixml(real, shape=shape))))
    assert new_certificate(session, {"Services": "None"}) == (real.thumbprint, [])
    assert session.statements == [[[("New-ExchangeCertificate", {"Services": "None"})]]]


def test_new_exchange_certificate_output_that_names_no_single_certificate_yields_none_and_the_errors():
    assert new_certificate(FakeSession(stream()), {}) == (None, [])
    two = FakeSession(stream(*EMS_CERTIFICATES(E19)[:2]))
    assert new_certificate(two, {})[0] is None, "two certificates: which one was created is not known"
    failed = FakeSession(failed_pipeline(ServerError("warning-ish error"),
                                         failed=ServerError("The certificate could not be created.")))
    assert new_certificate(failed, {}) == (None, ["warning-ish error", "The certificate could not be created."])
    denied = FakeSession(failed_pipeline(failed=not_recognized("New-ExchangeCertificate")))
    (message,) = new_certificate(denied, {})[1]
    assert message.startswith("New-ExchangeCertificate is not permitted for this account") and \
        "'Exchange Server Certificates' management role" in message


# -- exbe's deserializer hands over exactly what pypsrp's does -------------------------------------------------------
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

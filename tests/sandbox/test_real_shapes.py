"""The sandbox's objects, serialized by psrpcore as the sandbox sends them, have the layout real servers show.

Ground truth: ``tests/data/real/shapes.json`` (type names, property and member names with their CLIXML tags, read
from microsoft/CSS-Exchange captures; each kind names its ``source``), ``tests/data/real/servers.json`` (the captured
Get-WebBinding of an Exchange 2016 and a 2019 server) and /work/shared/real-server-shapes.md §1.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from psrpcore.types import serialize_clixml

from exbe.sandbox.exchange import run_cmdlet, run_pipeline
from exbe.sandbox.faults import Faults
from exbe.sandbox.psrp import to_psobject
from exbe.sandbox.state import BACKEND_SITE, FRONTEND_SITE, HostState, scenario_names

REAL = Path(__file__).parents[1] / "data" / "real"
SHAPES = json.loads((REAL / "shapes.json").read_text(encoding="utf-8"))
SERVERS = json.loads((REAL / "servers.json").read_text(encoding="utf-8"))["servers"]
RUNSPACE = uuid.UUID("4f1d6ed3-81ee-4120-9d38-b803867135e5")
#: real-server-shapes.md §1: what Get-WebBinding reports on both captured servers.
REAL_BINDINGS = [
    (FRONTEND_SITE, "http", "*:80:", ""),
    (FRONTEND_SITE, "https", ":443:", "MY"),
    (FRONTEND_SITE, "http", "127.0.0.1:80:", ""),
    (FRONTEND_SITE, "https", "127.0.0.1:443:", "MY"),
    (BACKEND_SITE, "http", "*:81:", ""),
    (BACKEND_SITE, "https", "*:444:", "MY"),
]


def layout(obj) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """(type names, {property: CLIXML tag}, {member: tag}) of one sandbox object as psrpcore serializes it."""
    clixml = serialize_clixml(to_psobject(obj), None)
    root = ET.fromstring(re.sub(r' xmlns="[^"]+"', "", clixml, count=1))[0]
    sections = {name: {child.get("N"): child.tag for child in root.findall(f"{name}/*")} for name in ("Props", "MS")}
    return [t.text for t in root.findall("TN/T")], sections["Props"], sections["MS"]


def expected(kind: str) -> tuple[list[str], dict[str, str], dict[str, str]]:
    shape = SHAPES[kind]
    return shape["type_names"], shape["props"], shape["members"]


def cmdlet(scenario: str, name: str, **params) -> list:
    state = HostState.from_scenario("exch01", scenario)
    return run_cmdlet(state, name, params, Faults(), runspace_id=RUNSPACE).output


def test_the_shapes_compared_here_come_from_the_captures():
    for kind in ("ExchangeCertificate", "ExchangeCertificate.broken", "AuthConfig", "WebBinding"):
        assert SHAPES[kind]["source"].startswith("Diagnostics/HealthChecker/"), kind


@pytest.mark.parametrize("scenario", ["healthy", "default_site_on_backend_cert", "backend_expired"])
def test_exchange_certificates_have_the_captured_layout(scenario):
    objects = cmdlet(scenario, "Get-ExchangeCertificate")
    assert objects
    for obj in objects:
        assert layout(obj) == expected("ExchangeCertificate")


def test_new_exchange_certificate_returns_the_captured_layout_too():
    (obj,) = cmdlet("healthy", "New-ExchangeCertificate", Services="None")
    assert layout(obj) == expected("ExchangeCertificate")


def test_with_signing_broken_exchange_certificates_have_the_captured_broken_layout():
    objects = cmdlet("auth_cert_expired_with_signing", "Get-ExchangeCertificate")
    assert objects
    for obj in objects:
        assert layout(obj) == expected("ExchangeCertificate.broken")


def test_the_full_wire_variant_keeps_the_captured_type_names_and_members_and_adds_properties():
    for obj in cmdlet("exchange_full_wire", "Get-ExchangeCertificate"):
        type_names, props, members = layout(obj)
        real_types, real_props, real_members = expected("ExchangeCertificate")
        assert (type_names, members) == (real_types, real_members)
        assert props.items() >= real_props.items() and {"Thumbprint": "S", "Services": "Obj"}.items() <= props.items()


def test_auth_config_has_exactly_the_captured_properties_and_tags():
    (obj,) = cmdlet("healthy", "Get-AuthConfig")
    assert layout(obj) == expected("AuthConfig")


def test_the_projection_has_the_design_layout():
    """No capture exists of Exchange's projection: design §5, with the member layout of Select-Object output."""
    state = HostState.from_scenario("exch01", "healthy")
    objects = run_pipeline(state, [("Get-ExchangeCertificate", {}),
                                   ("Select-Object", {"Property": ["Thumbprint", "Services"]})], Faults()).output
    for obj in objects:
        assert layout(obj) == (["Selected.Microsoft.Exchange.Management.SystemConfigurationTasks.ExchangeCertificate",
                                "System.Management.Automation.PSCustomObject", "System.Object"],
                               {}, {"Thumbprint": "S", "Services": "Obj"})
        services = ET.fromstring(re.sub(r' xmlns="[^"]+"', "", serialize_clixml(to_psobject(obj), None)))[0].find(
            "MS/Obj[@N='Services']")
        assert [t.text for t in services.findall("TN/T")] == [
            "Microsoft.Exchange.Management.SystemConfigurationTasks.AllowedServices", "System.Enum",
            "System.ValueType", "System.Object"]
        assert services.find("ToString").text in {"IMAP, POP, SMTP", "IIS", "SMTP", "None"}
        assert services.find("I32") is not None


# -- IIS bindings ----------------------------------------------------------------------------------------------------
def sandbox_bindings(scenario: str) -> list[tuple[str, str, str, str]]:
    state = HostState.from_scenario("exch01", scenario)
    return [(site, b.protocol, b.binding_information, b.certificate_store)
            for site in (FRONTEND_SITE, BACKEND_SITE) for b in state.sites[site].bindings]


@pytest.mark.parametrize("server", sorted(SERVERS))
def test_the_default_bindings_are_spelled_as_the_captured_servers_report_them(server):
    captured = [(b["site"], b["protocol"], b["bindingInformation"], b["certificateStoreName"])
                for b in SERVERS[server]["web_bindings"]]
    assert sandbox_bindings("healthy") == captured == REAL_BINDINGS


def test_every_scenario_keeps_the_real_spellings_of_the_bindings_it_does_not_change_on_purpose():
    real = {spelling[:3] for spelling in REAL_BINDINGS}
    on_purpose = {"star_443": {(FRONTEND_SITE, "https", "*:443:")},
                  "ip_specific_444": {(BACKEND_SITE, "https", "10.0.0.5:444:")},
                  "sni_and_ccs_bindings": {(FRONTEND_SITE, "https", "*:443:legacy.contoso.com"),
                                           (FRONTEND_SITE, "https", "*:443:ccs.contoso.com")}}
    for scenario in scenario_names():
        state = HostState.from_scenario("exch01", scenario)
        bindings = [(site, b) for site in (FRONTEND_SITE, BACKEND_SITE) for b in state.sites[site].bindings]
        assert {(site, b.protocol, b.binding_information) for site, b in bindings} - real \
            <= on_purpose.get(scenario, set()), scenario
        assert all(b.certificate_store == ("MY" if b.certificate_hash else "") for _, b in bindings), scenario


def test_the_binding_members_the_sandbox_models_are_strings_in_the_capture():
    members = SHAPES["WebBinding"]["members"]
    modelled = {"protocol": "protocol", "bindingInformation": "binding_information",
                "certificateHash": "certificate_hash", "certificateStoreName": "certificate_store"}
    assert {name: members[name] for name in modelled} == dict.fromkeys(modelled, "S")
    state = HostState.from_scenario("exch01", "healthy")
    for binding in (b for site in state.sites.values() for b in site.bindings):
        assert all(isinstance(getattr(binding, field), str) for field in modelled.values())
        assert binding.certificate_hash == binding.certificate_hash.upper(), "upper-case hex, as captured"

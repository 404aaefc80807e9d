"""The sandbox's host state: real certificates, scenarios as data, a faithful JSON round trip."""

from __future__ import annotations

import datetime
import hashlib
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding

from exbe.sandbox import certs
from exbe.sandbox.state import (
    AUTH_SUBJECT,
    BACKEND_BINDING,
    BACKEND_SITE,
    CNG_PROVIDER,
    CSP_PROVIDER,
    CSP_PROVIDERS,
    FRONTEND_BINDING,
    FRONTEND_SITE,
    LOOPBACK_BINDING,
    Binding,
    HostState,
    Site,
    parse_binding_information,
    same_binding,
    scenario_names,
)

NOW = datetime.datetime(2026, 3, 1, 12, 0, tzinfo=datetime.timezone.utc)


def build(scenario: str) -> HostState:
    return HostState.from_scenario("exch01", scenario, now=NOW)


def backend_candidates(state: HostState) -> list:
    return [c for c in state.my if c.friendly_name == "Microsoft Exchange" and c.info["self_signed"]]


def backend_hash(state: HostState) -> str | None:
    binding = state.binding(BACKEND_SITE, BACKEND_BINDING)
    return binding.certificate_hash if binding else None


def days_left(cert) -> int:
    return (cert.not_after - NOW).days


def test_a_host_state_survives_the_json_round_trip_unchanged(tmp_path):
    state = build("duplicate_backend_certs")
    path = tmp_path / "exch01.json"
    state.save(path)
    assert HostState.load(path).to_dict() == state.to_dict()
    assert json.loads(path.read_text()) == json.loads(json.dumps(state.to_dict()))
    assert [p.name for p in tmp_path.iterdir()] == ["exch01.json"], "the atomic write leaves no temporary file"


def test_certificates_are_real_x509_with_windows_thumbprints_and_matching_keys():
    state = build("healthy")
    for cert in state.my:
        parsed = x509.load_pem_x509_certificate(cert.pem.encode())
        der = parsed.public_bytes(serialization.Encoding.DER)
        assert cert.thumbprint == hashlib.sha1(der).hexdigest().upper()
        assert certs.key_matches(cert.pem, cert.key_pem)


def test_the_healthy_baseline_is_an_exchange_se_server_as_setup_leaves_it():
    state = build("healthy")
    (backend,) = backend_candidates(state)
    info = backend.info
    assert info["subject"] == "CN=EXCH01" and info["dns_names"] == ["EXCH01", "exch01.contoso.local"]
    assert info["signature_algorithm"] == "sha256RSA" and info["key_size"] == 2048
    validity = backend.not_after - certs.parse_iso(info["not_before"])
    assert validity.days == 1826 and 1090 <= days_left(backend) <= 1095
    assert backend.provider == CSP_PROVIDER and backend.provider_type == "CSP" and backend.key_accessible
    assert backend_hash(state) == backend.thumbprint
    assert state.binding(FRONTEND_SITE, LOOPBACK_BINDING).certificate_hash == backend.thumbprint
    assert state.exchange.services[backend.thumbprint] == ["IMAP", "POP", "SMTP"]
    assert state.exchange.internal_transport == backend.thumbprint
    assert state.find("Root", backend.thumbprint) is not None
    public = state.find("My", state.binding(FRONTEND_SITE, FRONTEND_BINDING).certificate_hash)
    assert public.friendly_name == "mail.contoso.com" and public.info["issuer"].startswith("CN=Contoso Issuing CA")
    assert state.exchange.services[public.thumbprint] == ["IIS"]
    auth = state.find("My", state.exchange.auth_current)
    assert auth.info["subject"] == f"CN={AUTH_SUBJECT}" and auth.friendly_name == AUTH_SUBJECT
    assert not state.auth_certificate_expired(NOW) and state.exchange.signing_enabled
    assert state.exchange.version == "Version 15.2 (Build 2562.17)"
    assert state.allow_internal_untrusted_certs is None
    assert state.services == {"W3SVC": "Running", "WAS": "Running"}


def _only_bound_candidate(state: HostState) -> bool:
    bound = [c for c in backend_candidates(state) if c.thumbprint == backend_hash(state)]
    return len(backend_candidates(state)) >= 3 and len(bound) == 1


SCENARIO_PROPERTIES = {
    "healthy": lambda s: backend_hash(s) and days_left(backend_candidates(s)[0]) > 1000,
    "backend_expiring": lambda s: 19 <= days_left(backend_candidates(s)[0]) <= 20,
    "backend_expired": lambda s: days_left(backend_candidates(s)[0]) < 0,
    "backend_missing": lambda s: backend_hash(s) and s.find("My", backend_hash(s)) is None
    and not backend_candidates(s) and any(e["id"] == 15021 for e in s.exchange.events),
    "binding_empty": lambda s: backend_hash(s) == ""
    and s.binding(BACKEND_SITE, BACKEND_BINDING).certificate_store == "",
    "binding_removed_by_update": lambda s: s.binding(BACKEND_SITE, BACKEND_BINDING) is None,
    "duplicate_backend_certs": _only_bound_candidate,
    "sha1_backend": lambda s: backend_candidates(s)[0].info["signature_algorithm"] == "sha1RSA",
    "weak_key": lambda s: backend_candidates(s)[0].info["key_size"] == 1024,
    "cng_backend": lambda s: s.find("My", backend_hash(s)).provider == CNG_PROVIDER
    and s.find("My", backend_hash(s)).provider_type == "CNG",
    "ip_specific_444": lambda s: s.binding(BACKEND_SITE, "10.0.0.5:444:") is not None
    and s.sites[BACKEND_SITE].extended_protection == "Require",
    "auth_cert_expired_with_signing": lambda s: s.auth_certificate_expired(NOW) and s.exchange.signing_enabled
    and s.exchange_cmdlets_blinded(NOW),
    "default_site_on_backend_cert": lambda s: s.binding(FRONTEND_SITE, FRONTEND_BINDING).certificate_hash
    == backend_hash(s) and "IIS" in s.exchange.services[backend_hash(s)],
    "smtp_on_backend_cert": lambda s: s.exchange.internal_transport == backend_hash(s)
    and [t for t, svc in s.exchange.services.items() if "SMTP" in svc] == [backend_hash(s)],
    "w3svc_stopped": lambda s: s.services["W3SVC"] == "Stopped",
    "untrusted_internal_disallowed": lambda s: s.allow_internal_untrusted_certs == 0
    and s.find("Root", backend_hash(s)) is None,
    "unknown_candidates_none_bound": lambda s: len(backend_candidates(s)) >= 2
    and s.find("My", backend_hash(s)) is None and all(not s.exchange.services.get(c.thumbprint)
                                                       for c in backend_candidates(s)),
    "star_443": lambda s: [b.binding_information for b in s.sites[FRONTEND_SITE].bindings]
    == ["*:80:", "*:443:", "127.0.0.1:80:", "127.0.0.1:443:"],
    "exchange_full_wire": lambda s: s.exchange.wire == "full",
    "select_refused": lambda s: s.exchange.select_object == "refused",
    "superseded_in_use_elsewhere": lambda s: len(backend_candidates(s)) == 6
    and any(listener["Transport"] == "HTTPS" and listener["CertificateThumbprint"] for listener in s.winrm_listeners)
    and s.binding("Contoso Intranet", "*:8443:") is not None and "0.0.0.0!8172" in s.ssl_bindings
    and sum(c.key_container == s.find("My", backend_hash(s)).key_container for c in s.my) == 2,
    "sni_and_ccs_bindings": lambda s: [b.ssl_flags for b in s.sites[FRONTEND_SITE].bindings if b.host_header]
    == [1, 2],
    "untrusted_internal_as_text": lambda s: s.allow_internal_untrusted_certs == "0",
    "legacy_csp_vendor": lambda s: s.find("My", backend_hash(s)).provider_type == "CSP"
    and s.find("My", backend_hash(s)).provider not in CSP_PROVIDERS,
}


def test_every_scenario_the_sandbox_offers_is_specified_here():
    assert sorted(scenario_names()) == sorted(SCENARIO_PROPERTIES)


@pytest.mark.parametrize("scenario", sorted(SCENARIO_PROPERTIES))
def test_each_scenario_builds_the_server_it_describes(scenario):
    state = build(scenario)
    assert state.scenario == scenario
    assert SCENARIO_PROPERTIES[scenario](state)
    assert HostState.from_dict(state.to_dict()).to_dict() == state.to_dict()


def test_the_baseline_spells_bindings_as_get_webbinding_reports_them():
    state = build("healthy")
    assert [(site, b.protocol, b.binding_information, b.certificate_store) for site in (FRONTEND_SITE, BACKEND_SITE)
            for b in state.sites[site].bindings] == [
        (FRONTEND_SITE, "http", "*:80:", ""), (FRONTEND_SITE, "https", ":443:", "MY"),
        (FRONTEND_SITE, "http", "127.0.0.1:80:", ""), (FRONTEND_SITE, "https", "127.0.0.1:443:", "MY"),
        (BACKEND_SITE, "http", "*:81:", ""), (BACKEND_SITE, "https", "*:444:", "MY")]
    assert (FRONTEND_BINDING, LOOPBACK_BINDING, BACKEND_BINDING) == (":443:", "127.0.0.1:443:", "*:444:")
    assert state.exchange.wire == "rawdata" and state.exchange.select_object == "allowed"


@pytest.mark.parametrize("first, second, same", [
    (":443:", "*:443:", True), ("127.0.0.1:443", "127.0.0.1:443:", True), ("*:444:", ":444:", True),
    ("*:443:mail.contoso.com", "*:443:MAIL.contoso.com", True), ("*:443:", "*:443:mail.contoso.com", False),
    ("*:444:", "10.0.0.5:444:", False), ("*:443:", "*:444:", False), ("[::1]:443:", "[::1]:443:", True),
])
def test_bindings_compare_by_meaning_not_spelling(first, second, same):
    assert same_binding(first, second) is same


def test_binding_information_parts_and_lookups_by_meaning():
    assert parse_binding_information(":443:") == ("*", 443, "")
    assert parse_binding_information("10.0.0.5:444:Mail") == ("10.0.0.5", 444, "mail")
    site = Site("Default Web Site", [Binding("http", "*:80:"), Binding("https", "*:443:", "AB", "MY"),
                                     Binding("https", "127.0.0.1:443:", "CD", "MY")])
    assert site.https_binding(443).certificate_hash == "AB"
    assert site.https_binding(443, "").certificate_hash == "AB", '"" and "*" are both all unassigned'
    assert site.https_binding(443, "127.0.0.1").certificate_hash == "CD"
    assert site.https(":443:") is site.https_binding(443) and site.https_binding(80) is None
    assert site.binding("http", ":80:") is site.bindings[0]


def test_a_scenario_binding_replaces_the_baseline_binding_of_the_same_meaning_in_place():
    state = build("star_443")
    public = state.https_binding(FRONTEND_SITE, 443)
    assert public.binding_information == "*:443:" and public.certificate_hash == state.binding(
        FRONTEND_SITE, ":443:").certificate_hash
    assert len([b for b in state.sites[FRONTEND_SITE].bindings if b.port == 443 and b.all_unassigned]) == 1


def test_the_captured_servers_state_is_a_scenario_one_self_signed_certificate_on_all_three_https_bindings():
    state = build("default_site_on_backend_cert")
    hashes = {b.certificate_hash for site in state.sites.values() for b in site.bindings if b.protocol == "https"}
    assert hashes == {backend_hash(state)}


def test_an_unknown_exchange_wire_shape_is_refused(monkeypatch):
    from exbe.sandbox import state as state_module

    spec = state_module.scenario_spec("healthy")
    spec["exchange"]["wire"] = "xml"
    monkeypatch.setattr(state_module, "scenario_spec", lambda name: spec)
    with pytest.raises(ValueError, match="exchange.wire"):
        build("healthy")


def test_an_unknown_scenario_is_refused_with_the_known_names():
    with pytest.raises(ValueError, match="healthy"):
        HostState.from_scenario("exch01", "no_such_scenario")


def test_cert_info_names_signature_algorithms_as_windows_does():
    now = NOW
    for hash_name, expected in (("sha256", "sha256RSA"), ("sha1", "sha1RSA"), ("md5", "md5RSA")):
        pem, key = certs.make_self_signed("EXCH01", ["EXCH01"], now, now + datetime.timedelta(days=1), hash=hash_name)
        info = certs.cert_info(pem)
        assert info["signature_algorithm"] == expected and info["self_signed"]
        parsed = certs.load_cert(pem)
        parsed.public_key().verify(parsed.signature, parsed.tbs_certificate_bytes, padding.PKCS1v15(),
                                   parsed.signature_hash_algorithm)


def test_a_clone_keeps_subject_and_names_but_never_the_key_it_replaces():
    state = build("healthy")
    (backend,) = backend_candidates(state)
    old_key = certs.load_key(backend.key_pem)
    new_key = certs.key_pool().key(2048, avoid={certs.spki_id(old_key.public_key())})
    pem = certs.clone_cert(backend.pem, new_key, NOW, NOW + datetime.timedelta(days=1826))
    old, new = backend.info, certs.cert_info(pem)
    assert (new["subject"], new["dns_names"], new["key_size"]) == (old["subject"], old["dns_names"], old["key_size"])
    assert new["thumbprint"] != old["thumbprint"] and new["not_after"] != old["not_after"]
    with pytest.raises(ValueError, match="new key"):
        certs.clone_cert(backend.pem, old_key, NOW, NOW + datetime.timedelta(days=1))


def test_the_sandbox_ca_persists_and_issues_verifiable_server_certificates(tmp_path):
    ca = certs.SandboxCA.load_or_create(tmp_path)
    assert certs.SandboxCA.load_or_create(tmp_path).ca_pem == ca.ca_pem
    cert_pem, key_pem = ca.issue_server_cert(["localhost"], ["127.0.0.1"])
    server = certs.load_cert(cert_pem)
    server.verify_directly_issued_by(ca.cert)
    assert certs.key_matches(cert_pem, key_pem)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]


def test_a_hundred_hosts_are_built_in_seconds_thanks_to_the_key_pool():
    import time

    start = time.monotonic()
    for n in range(100):
        HostState.from_scenario(f"exch{n:03d}", "healthy", now=NOW)
    assert time.monotonic() - start < 10

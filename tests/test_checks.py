"""verify: one result per check with HealthChecker's thresholds; a check that cannot run is skipped, never passed."""

from __future__ import annotations

import datetime

import pytest

from exbe.checks import CHECKS, run_checks
from exbe.facts import HostFacts
from exbe.model import Settings
from exbe.steps.lock import LockFacts
from tests.real_shapes import E16, E19

from .facts_fixtures import (
    AUTH,
    BACKEND,
    PUBLIC,
    STAGED,
    add_binding,
    binding,
    cert,
    expires_in,
    load,
    typed,
    without_binding,
)

SETTINGS = Settings()
DWS, EBE = "Default Web Site", "Exchange Back End"
CHECK_IDS = [
    "backend_binding_present", "backend_days_left", "backend_signature", "backend_key_size", "backend_key_provider",
    "no_ip_specific_444", "backend_no_hsts", "root_copy", "loopback_443", "default_site_not_self_signed",
    "internal_transport_cert", "auth_cert", "auth_next", "auth_previous", "federation_cert", "serialization_signing",
    "w3svc_running",
    "tls_444_serves_bound", "backend_http_401", "interrupted_run",
]
#: exbe's lock as a server without any exbe run shows it (tests/test_lock.py specifies interrupted_run)
NO_LOCK = LockFacts.parse({"now": "2026-06-01T08:00:00Z", "held": None, "last_run": None})


def healthy_probe(thumbprint=BACKEND):
    return {"tls": {"ok": True, "thumbprint": thumbprint, "error": None}, "http": {"status": 401, "error": None}}


def run(facts, exchange, probe=None, settings=SETTINGS):
    """Every check over the (mutable) fixture documents, parsed as exbe parses a facts envelope."""
    return run_checks(*typed(facts, exchange), healthy_probe() if probe is None else probe, settings, lock=NO_LOCK)


def check(check_id, facts, exchange, probe=None, settings=SETTINGS):
    return {r.id: r for r in run(facts, exchange, probe, settings)}[check_id]


def test_a_healthy_server_passes_every_check_with_one_stable_id_each():
    results = run(*load())
    assert [r.id for r in results] == CHECK_IDS == [c.__name__ for c in CHECKS]
    assert {r.id: r.status for r in results} == dict.fromkeys(CHECK_IDS, "pass")


@pytest.mark.parametrize("override", [None, "expired_backend", "two_candidates", "auth_cert_expired",
                                      "exchange_lists_nothing", "ip_specific_444", "exchange_unavailable"])
def test_every_message_is_one_line_naming_the_server(override):
    facts, exchange = load(*([override] if override else []))
    for result in run(facts, exchange, {"tls": None, "http": None}):
        assert "\n" not in result.message and result.message.startswith("EXCH01"), result


# -- days left: >= 60 pass, 30..59 warn, < 30 fail, <= 0 expired -----------------------------------------------------
@pytest.mark.parametrize(("days", "status"), [(61, "pass"), (60, "pass"), (59, "warn"), (30, "warn"), (29, "fail"),
                                              (1, "fail")])
def test_days_left_thresholds_at_their_edges(days, status):
    facts, exchange = load()
    expires_in(facts, BACKEND, days)
    result = check("backend_days_left", facts, exchange)
    assert (result.status, result.value) == (status, days)
    assert f"expires in {days} days" in result.message


def test_an_expiring_certificate_says_when_and_what_to_do():
    facts, exchange = load()
    expires_in(facts, BACKEND, 20)
    assert check("backend_days_left", facts, exchange).message == (
        "EXCH01 back-end certificate BFDC0014... expires in 20 days (2026-06-21); renew with `exbe renew`")


def test_the_last_day_counts_as_expired():
    facts, exchange = load()
    expires_in(facts, BACKEND, 0.5)
    result = check("backend_days_left", facts, exchange)
    assert (result.status, result.value) == ("fail", 0) and "expires today (2026-06-01)" in result.message


def test_an_expired_certificate_fails_as_expired():
    facts, exchange = load("expired_backend")
    result = check("backend_days_left", facts, exchange)
    assert result.status == "fail" and "expired on 2026-05-20" in result.message


def test_day_thresholds_follow_the_settings():
    facts, exchange = load()
    expires_in(facts, BACKEND, 80)
    assert check("backend_days_left", facts, exchange, settings=Settings(warn_days=90, fail_days=45)).status == "warn"
    expires_in(facts, BACKEND, 44)
    assert check("backend_days_left", facts, exchange, settings=Settings(warn_days=90, fail_days=45)).status == "fail"


# -- the back-end binding and its certificate ------------------------------------------------------------------------
def _without_444(facts):
    without_binding(facts, EBE, "*:444:")


@pytest.mark.parametrize(("spoil", "says"), [
    (_without_444, "has no https *:444: binding"),
    (lambda f: binding(f, EBE, "*:444:").update(certificate_hash=""), "has no certificate"),
    (lambda f: binding(f, EBE, "*:444:").update(certificate_hash=STAGED), "HttpEvent 15021"),
    (lambda f: cert(f, BACKEND).update(has_private_key=False, key_accessible=None), "has no private key"),
    (lambda f: cert(f, BACKEND).update(key_accessible=False), "0x80070520"),
], ids=["no-binding", "empty", "not-in-store", "no-key", "key-not-accessible"])
def test_the_444_binding_must_carry_a_certificate_of_the_store_with_a_usable_key(spoil, says):
    facts, exchange = load()
    spoil(facts)
    result = check("backend_binding_present", facts, exchange)
    assert result.status == "fail" and says in result.message


def test_without_a_bound_certificate_the_certificate_checks_skip_rather_than_pass():
    facts, exchange = load()
    binding(facts, EBE, "*:444:")["certificate_hash"] = ""
    results = {r.id: r for r in run(facts, exchange)}
    for check_id in ("backend_days_left", "backend_signature", "backend_key_size", "backend_key_provider", "root_copy"):
        assert results[check_id].status == "skip", check_id
        assert "see backend_binding_present" in results[check_id].message


@pytest.mark.parametrize(("algorithm", "status"), [("sha256RSA", "pass"), ("sha384RSA", "pass"), ("sha1RSA", "warn"),
                                                   ("md5RSA", "warn")])
def test_sha1_and_md5_signatures_warn(algorithm, status):
    facts, exchange = load()
    cert(facts, BACKEND)["signature_algorithm"] = algorithm
    result = check("backend_signature", facts, exchange)
    assert (result.status, result.value) == (status, algorithm)


@pytest.mark.parametrize(("size", "status"), [(1024, "fail"), (2047, "fail"), (2048, "pass"), (4096, "pass")])
def test_keys_below_2048_bits_fail(size, status):
    facts, exchange = load()
    cert(facts, BACKEND)["key_size"] = size
    assert check("backend_key_size", facts, exchange).status == status


def test_a_cng_key_fails_because_exchange_needs_a_legacy_csp():
    facts, exchange = load()
    cert(facts, BACKEND).update(provider="Microsoft Software Key Storage Provider", provider_type="CNG")
    result = check("backend_key_provider", facts, exchange)
    assert result.status == "fail" and "KB 3032024" in result.message


def test_an_ip_specific_444_binding_fails_with_the_command_that_removes_it():
    facts, exchange = load("ip_specific_444")
    result = check("no_ip_specific_444", facts, exchange)
    assert result.status == "fail" and result.value == ["10.0.0.5:444:"]
    assert result.message.endswith(
        "Remove-WebBinding -Name 'Exchange Back End' -IPAddress '10.0.0.5' -Port 444 -Protocol 'https'")


def test_an_ipv6_444_binding_is_ip_specific_too_and_an_empty_address_is_not():
    facts, exchange = load()
    binding(facts, EBE, "*:444:")["binding_information"] = ":444:"
    assert check("no_ip_specific_444", facts, exchange).status == "pass"
    add_binding(facts, EBE, "[::1]:444:", BACKEND)
    result = check("no_ip_specific_444", facts, exchange)
    assert (result.status, result.value) == ("fail", ["[::1]:444:"])


def test_hsts_on_the_back_end_fails():
    facts, exchange = load()
    facts["sites"][EBE]["hsts_enabled"] = True
    result = check("backend_no_hsts", facts, exchange)
    assert result.status == "fail" and "the site's hsts element" in result.message


def test_hsts_set_as_a_custom_response_header_on_the_back_end_fails_too():
    """HealthChecker also flags a ``Strict-Transport-Security`` custom header (httpProtocol/customHeaders)."""
    facts, exchange = load()
    facts["sites"][EBE]["hsts_header"] = True
    result = check("backend_no_hsts", facts, exchange)
    assert (result.status, result.value) == ("fail", True)
    assert "a Strict-Transport-Security custom header" in result.message


def test_hsts_on_the_default_web_site_alone_is_not_the_back_ends_problem():
    facts, exchange = load()
    facts["sites"][DWS].update(hsts_enabled=True, hsts_header=True)
    assert check("backend_no_hsts", facts, exchange).status == "pass"


@pytest.mark.parametrize(("allow", "status"), [(None, "warn"), (1, "warn"), (0, "fail")])
def test_a_missing_root_copy_warns_and_fails_only_where_untrusted_internal_certificates_are_refused(allow, status):
    facts, exchange = load()
    facts["root"] = [r for r in facts["root"] if r["thumbprint"] != BACKEND]
    facts["allow_internal_untrusted_certs"] = allow
    result = check("root_copy", facts, exchange)
    assert result.status == status and "`exbe trust`" in result.message


# -- the Default Web Site --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("spoil", "status"), [
    (lambda f: expires_in(f, BACKEND, -1), "fail"),
    (lambda f: binding(f, DWS, "127.0.0.1:443:").update(certificate_hash=STAGED), "fail"),
    (lambda f: binding(f, DWS, "127.0.0.1:443:").update(certificate_hash=""), "fail"),
    (lambda f: without_binding(f, DWS, "127.0.0.1:443:"), "skip"),
], ids=["expired", "not-in-store", "empty", "absent"])
def test_the_loopback_binding_must_carry_a_present_unexpired_certificate(spoil, status):
    facts, exchange = load()
    spoil(facts)
    assert check("loopback_443", facts, exchange).status == status


@pytest.mark.parametrize("info", [":443:", "*:443:"])
def test_a_self_signed_certificate_on_the_public_443_binding_warns_however_iis_spelled_it(info):
    """Both captured servers carry the self-signed back-end certificate on ``:443:``: common, and worth a warning."""
    facts, exchange = load()
    binding(facts, DWS, ":443:").update(binding_information=info, certificate_hash=BACKEND)
    result = check("default_site_not_self_signed", facts, exchange)
    assert (result.status, result.value) == ("warn", BACKEND) and "CA-issued" in result.message
    assert f"Default Web Site {info} carries the self-signed BFDC0014..." in result.message


@pytest.mark.parametrize("info", [":443:", "*:443:"])
def test_the_public_443_binding_passes_on_a_valid_ca_issued_certificate_however_spelled(info):
    facts, exchange = load()
    binding(facts, DWS, ":443:")["binding_information"] = info
    result = check("default_site_not_self_signed", facts, exchange)
    assert (result.status, result.value) == ("pass", PUBLIC) and f"Default Web Site {info} carries" in result.message


def test_a_host_header_binding_on_443_is_not_judged_as_the_public_binding():
    facts, exchange = load()
    without_binding(facts, DWS, ":443:")
    add_binding(facts, DWS, "*:443:mail.contoso.com", STAGED)
    assert check("default_site_not_self_signed", facts, exchange).status == "skip"
    add_binding(facts, DWS, ":443:", PUBLIC)
    assert check("default_site_not_self_signed", facts, exchange).status == "pass"


def test_the_loopback_binding_is_not_judged_as_the_public_binding():
    facts, exchange = load()
    without_binding(facts, DWS, ":443:")
    result = check("default_site_not_self_signed", facts, exchange)
    assert result.status == "skip" and "no https binding on all addresses, port 443" in result.message


def test_an_expired_certificate_on_the_public_443_binding_fails():
    facts, exchange = load()
    expires_in(facts, PUBLIC, -3)
    assert check("default_site_not_self_signed", facts, exchange).status == "fail"


# -- Exchange configuration ------------------------------------------------------------------------------------------
def test_without_the_exchange_endpoint_the_exchange_checks_skip_with_the_reason():
    facts, exchange = load("exchange_unavailable")
    for check_id in ("internal_transport_cert", "auth_cert", "serialization_signing"):
        result = check(check_id, facts, exchange)
        assert result.status == "skip" and "Exchange endpoint was not available" in result.message


def test_an_internal_transport_certificate_missing_from_the_store_fails():
    facts, exchange = load()
    exchange["internal_transport"] = STAGED
    assert check("internal_transport_cert", facts, exchange).status == "fail"


def test_an_expired_internal_transport_certificate_warns_with_how_to_move_smtp():
    facts, exchange = load("expired_backend")
    result = check("internal_transport_cert", facts, exchange)
    assert result.status == "warn" and "`exbe renew --smtp move`" in result.message


@pytest.mark.parametrize("overrides", [("auth_cert_expired",), ("auth_cert_expired", "exchange_lists_nothing")])
def test_an_expired_auth_certificate_fails_even_when_exchange_lists_no_certificates(overrides):
    facts, exchange = load(*overrides)
    result = check("auth_cert", facts, exchange)
    assert result.status == "fail" and "expired on 2026-05-02" in result.message


def test_an_auth_certificate_missing_from_the_store_fails():
    facts, exchange = load()
    facts["certificates"] = [c for c in facts["certificates"] if c["thumbprint"] != AUTH]
    assert check("auth_cert", facts, exchange).status == "fail"


def test_an_expiring_auth_certificate_warns_unless_a_next_one_is_staged():
    facts, exchange = load("staged_replacement")
    expires_in(facts, AUTH, 40)
    assert check("auth_cert", facts, exchange).status == "warn"
    exchange["auth"]["next"] = STAGED
    assert check("auth_cert", facts, exchange).status == "pass"


def test_disabled_serialization_signing_warns():
    facts, exchange = load()
    exchange["serialization_signing"] = False
    assert check("serialization_signing", facts, exchange).status == "warn"


def test_enabled_signing_passes_and_says_when_it_blinds_exchanges_certificate_cmdlets():
    assert "(" not in check("serialization_signing", *load()).message
    result = check("serialization_signing", *load("auth_cert_expired"))
    assert result.status == "pass" and "Auth certificate 75385156... expired on 2026-05-02" in result.message


def test_a_stopped_w3svc_fails():
    facts, exchange = load()
    facts["services"]["W3SVC"] = "Stopped"
    result = check("w3svc_running", facts, exchange)
    assert (result.status, result.value) == ("fail", "Stopped")


# -- from the agent --------------------------------------------------------------------------------------------------
def test_probe_checks_that_could_not_run_are_skipped_with_the_reason():
    facts, exchange = load()
    probe = {"tls": None, "http": None, "unreachable": "port 444 on exch01 not reachable from this agent: refused"}
    for check_id in ("tls_444_serves_bound", "backend_http_401"):
        result = check(check_id, facts, exchange, probe)
        assert result.status == "skip" and "not reachable from this agent" in result.message


def test_port_444_serving_another_certificate_than_the_bound_one_fails():
    facts, exchange = load()
    result = check("tls_444_serves_bound", facts, exchange, healthy_probe(STAGED))
    assert result.status == "fail" and "serves 3E587C8F... but *:444: carries BFDC0014..." in result.message


def test_a_failed_tls_handshake_fails():
    facts, exchange = load()
    probe = {"tls": {"ok": False, "thumbprint": None, "error": "TLS handshake failed: reset"}, "http": None}
    assert check("tls_444_serves_bound", facts, exchange, probe).status == "fail"
    assert check("backend_http_401", facts, exchange, probe).status == "skip"


@pytest.mark.parametrize(("status", "verdict"), [(401, "pass"), (500, "fail"), (503, "fail"), (200, "fail")])
def test_the_back_end_must_answer_401_not_500_or_503(status, verdict):
    facts, exchange = load()
    probe = {**healthy_probe(), "http": {"status": status, "error": None}}
    assert check("backend_http_401", facts, exchange, probe).status == verdict


def test_a_tls_probe_alone_does_not_pass_a_server_whose_sites_are_down():
    facts, exchange = load()
    facts["services"]["W3SVC"] = "Stopped"
    probe = {**healthy_probe(), "http": {"status": 503, "error": None}}
    results = {r.id: r.status for r in run(facts, exchange, probe)}
    assert results["tls_444_serves_bound"] == "pass"
    assert results["w3svc_running"] == results["backend_http_401"] == "fail"


# -- the captured real servers ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("server", [E16, E19], ids=["e16", "e19"])
def test_the_captured_servers_bindings_are_judged_by_meaning(server):
    """``:443:`` (empty address) is the public binding, ``127.0.0.1:443:`` the loopback; both carry the self-signed
    back-end certificate, as in both captures."""
    facts = HostFacts.parse(server.facts_data(server.cert("exchange").not_before + datetime.timedelta(days=365)))
    results = {r.id: r for r in run_checks(facts, None, healthy_probe(server.backend_thumbprint), SETTINGS)}
    assert {i: results[i].status for i in ("backend_binding_present", "no_ip_specific_444", "backend_no_hsts",
                                           "loopback_443", "default_site_not_self_signed", "tls_444_serves_bound")} \
        == {"backend_binding_present": "pass", "no_ip_specific_444": "pass", "backend_no_hsts": "pass",
            "loopback_443": "pass", "default_site_not_self_signed": "warn", "tls_444_serves_bound": "pass"}
    assert "Default Web Site :443: carries the self-signed" in results["default_site_not_self_signed"].message
    assert "Default Web Site 127.0.0.1:443: carries" in results["loopback_443"].message

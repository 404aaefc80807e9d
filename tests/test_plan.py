"""What exbe decides to change: renew or not and how, what to bind, what cleanup may remove."""

from __future__ import annotations

import dataclasses
import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exbe.contract import EXCHANGE_CMDLETS
from exbe.model import Settings
from exbe.plan import (
    bind_blockers,
    bind_input,
    cleanup_candidates,
    new_exchange_certificate_params,
    renew_method,
    renew_reasons,
    staged_replacement,
)

from .facts_fixtures import (
    AUTH,
    BACKEND,
    NOW,
    PUBLIC,
    ROOT_ORPHAN,
    SMTP_OLD,
    STAGED,
    SUPERSEDED,
    binding,
    cert,
    expires_in,
    iso,
    load,
)

SETTINGS = Settings()


# -- renew or not ----------------------------------------------------------------------------------------------------
def test_a_healthy_back_end_certificate_is_not_renewed():
    facts, _ = load()
    assert renew_reasons(cert(facts, BACKEND), facts["now"], SETTINGS) == []


@pytest.mark.parametrize(("days", "renew"), [(61, False), (60, False), (59, True), (1, True)])
def test_renewal_starts_below_the_days_threshold(days, renew):
    facts, _ = load()
    reasons = renew_reasons(expires_in(facts, BACKEND, days), facts["now"], SETTINGS)
    assert bool(reasons) is renew
    if renew:
        assert reasons == [f"{days} days left (< 60)"]


def test_the_threshold_follows_the_days_setting():
    facts, _ = load()
    certificate = expires_in(facts, BACKEND, 80)
    assert renew_reasons(certificate, facts["now"], Settings(days=90)) == ["80 days left (< 90)"]


def test_an_expired_certificate_is_renewed_and_says_since_when():
    facts, _ = load("expired_backend")
    assert renew_reasons(cert(facts, BACKEND), facts["now"], SETTINGS) == ["expired 12 days ago"]


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("signature_algorithm", "sha1RSA", "sha1RSA signature"),
    ("signature_algorithm", "md5RSA", "md5RSA signature"),
    ("key_size", 1024, "1024-bit key (< 2048)"),
    ("provider_type", "CNG", "CNG key"),
    ("key_accessible", False, "private key cannot be opened"),
    ("has_private_key", False, "no private key"),
])
def test_weak_or_unusable_certificates_are_renewed_however_long_they_are_valid(field, value, reason):
    facts, _ = load()
    certificate = cert(facts, BACKEND)
    certificate[field] = value
    assert any(r.startswith(reason) for r in renew_reasons(certificate, facts["now"], SETTINGS))


def test_force_renews_a_healthy_certificate():
    facts, _ = load()
    assert renew_reasons(cert(facts, BACKEND), facts["now"], Settings(force=True)) == ["forced"]


# -- a replacement left by an interrupted run ------------------------------------------------------------------------
def test_an_unbound_replacement_from_an_interrupted_run_is_reused():
    facts, _ = load("staged_replacement")
    assert staged_replacement(facts, cert(facts, BACKEND), SETTINGS) == STAGED


@pytest.mark.parametrize("spoil", [
    lambda c: c.update(provider_type="CNG", provider="Microsoft Software Key Storage Provider"),
    lambda c: c.update(signature_algorithm="sha1RSA"),
    lambda c: c.update(key_size=1024),
    lambda c: c.update(key_accessible=False),
    lambda c: c.update(subject="CN=EXCH02"),
    lambda c: c.update(friendly_name="Microsoft Exchange (test)"),
    lambda c: c.update(not_after=iso(NOW + datetime.timedelta(days=60))),
], ids=["cng", "sha1", "weak-key", "key-not-accessible", "other-subject", "other-friendly-name", "not-enough-days"])
def test_a_replacement_that_would_itself_need_renewing_is_not_reused(spoil):
    facts, _ = load("staged_replacement")
    spoil(cert(facts, STAGED))
    assert staged_replacement(facts, cert(facts, BACKEND), SETTINGS) is None


def test_a_certificate_already_bound_somewhere_is_not_taken_as_the_replacement():
    facts, _ = load("staged_replacement")
    binding(facts, "Default Web Site", "127.0.0.1:443")["certificate_hash"] = STAGED
    assert staged_replacement(facts, cert(facts, BACKEND), SETTINGS) is None


def test_an_older_certificate_is_never_a_replacement():
    facts, _ = load("duplicate_backend_certs")
    assert staged_replacement(facts, cert(facts, BACKEND), SETTINGS) is None


# -- how to renew ----------------------------------------------------------------------------------------------------
def test_exchanges_own_way_is_used_when_the_endpoint_answers():
    facts, exchange = load()
    assert renew_method(exchange, facts) == "exchange"


@pytest.mark.parametrize("override", ["exchange_unavailable", "auth_cert_expired"])
def test_the_certificate_store_clone_is_used_when_exchange_cannot_help(override):
    facts, exchange = load(override)
    assert renew_method(exchange, facts) == "clone"


def test_new_exchange_certificate_copies_subject_and_names_and_assigns_no_service():
    facts, exchange = load()
    params = new_exchange_certificate_params(cert(facts, BACKEND), facts, exchange)
    assert params == {"Server": "EXCH01", "SubjectName": "CN=EXCH01", "DomainName": ["EXCH01", "exch01.contoso.local"],
                      "FriendlyName": "Microsoft Exchange", "KeySize": 2048, "PrivateKeyExportable": True,
                      "Services": "None"}
    assert set(params) <= set(EXCHANGE_CMDLETS["New-ExchangeCertificate"])
    assert "Force" not in params, "-Force would answer yes to taking over the default SMTP certificate"


def test_new_exchange_certificate_keeps_a_larger_key_and_raises_a_weak_one():
    facts, exchange = load()
    certificate = cert(facts, BACKEND)
    assert new_exchange_certificate_params({**certificate, "key_size": 4096}, facts, exchange)["KeySize"] == 4096
    assert new_exchange_certificate_params({**certificate, "key_size": 1024}, facts, exchange)["KeySize"] == 2048


def test_new_exchange_certificate_falls_back_to_the_computer_names():
    facts, _ = load()
    params = new_exchange_certificate_params({**cert(facts, BACKEND), "dns_names": []}, facts, None)
    assert params["DomainName"] == ["EXCH01", "exch01.contoso.local"] and params["Server"] == "EXCH01"
    fresh = new_exchange_certificate_params(None, facts, None)
    assert fresh["SubjectName"] == "CN=EXCH01" and fresh["Services"] == "None"


# -- binding ---------------------------------------------------------------------------------------------------------
def test_bind_moves_the_loopback_binding_that_carried_the_old_back_end_certificate():
    facts, _ = load()
    data = bind_input(facts, STAGED.lower(), Settings(dry_run=True))
    assert data == {"thumbprint": STAGED, "backend_site": "Exchange Back End", "frontend_site": "Default Web Site",
                    "loopback_from": BACKEND, "dry_run": True}


def test_bind_leaves_a_loopback_binding_on_another_certificate_alone():
    facts, _ = load()
    binding(facts, "Default Web Site", "127.0.0.1:443")["certificate_hash"] = PUBLIC
    assert bind_input(facts, STAGED, SETTINGS)["loopback_from"] is None


def test_bind_never_names_the_public_443_binding_even_when_it_carries_the_back_end_certificate():
    facts, _ = load()
    binding(facts, "Default Web Site", "*:443:")["certificate_hash"] = BACKEND
    data = bind_input(facts, STAGED, SETTINGS)
    assert "*:443:" not in str(data)
    assert data["loopback_from"] == BACKEND  # 127.0.0.1:443 only


def test_bind_without_a_loopback_binding_moves_nothing_else():
    facts, _ = load()
    facts["bindings"] = [b for b in facts["bindings"] if b["binding_information"] != "127.0.0.1:443"]
    assert bind_input(facts, STAGED, SETTINGS)["loopback_from"] is None


def test_with_444_empty_the_loopback_moves_when_it_carries_the_selected_certificate():
    facts, _ = load()
    binding(facts, "Exchange Back End", "*:444:")["certificate_hash"] = ""
    assert bind_input(facts, STAGED, SETTINGS)["loopback_from"] == BACKEND
    assert bind_input(facts, BACKEND, SETTINGS)["loopback_from"] is None, "nothing to move onto itself"


def test_nothing_blocks_binding_on_a_normal_server():
    assert bind_blockers(load()[0]) == []


def test_an_ip_specific_444_binding_blocks_binding_with_the_command_that_removes_it():
    facts, _ = load("ip_specific_444")
    (blocker,) = bind_blockers(facts)
    assert "IP-specific 444 binding 10.0.0.5:444:" in blocker
    assert blocker.endswith('Remove-WebBinding -Name "Exchange Back End" -IPAddress 10.0.0.5 -Port 444 -Protocol https')


# -- cleanup ---------------------------------------------------------------------------------------------------------
def _cleanup(facts, exchange, settings=SETTINGS, **kwargs):
    kwargs.setdefault("switched_at", None)
    kwargs.setdefault("verify_passed", True)
    return cleanup_candidates(facts, exchange, settings, **kwargs)


def test_cleanup_removes_superseded_unused_certificates_and_orphaned_root_copies():
    facts, exchange = load("duplicate_backend_certs")
    plan = _cleanup(facts, exchange)
    assert plan.refused_reason is None
    assert plan.remove == [SUPERSEDED, ROOT_ORPHAN]
    assert plan.kept == [(SMTP_OLD, "assigned to SMTP")]


def test_cleanup_never_touches_certificates_other_than_self_signed_microsoft_exchange_ones():
    facts, exchange = load("duplicate_backend_certs")
    removed = set(_cleanup(facts, exchange).remove)
    assert not removed & {BACKEND, PUBLIC, AUTH}
    assert not removed & {r["thumbprint"] for r in facts["root"] if r["subject"] != "CN=EXCH01"}


@pytest.mark.parametrize("site,info", [("Default Web Site", "127.0.0.1:443"), ("Default Web Site", "*:443:"),
                                       ("Exchange Back End", "10.0.0.5:444:")])
def test_cleanup_keeps_a_certificate_bound_anywhere(site, info):
    facts, exchange = load("duplicate_backend_certs")
    facts["bindings"] = [b for b in facts["bindings"] if (b["site"], b["binding_information"]) != (site, info)]
    facts["bindings"].append({"site": site, "protocol": "https", "binding_information": info,
                              "certificate_hash": SUPERSEDED, "certificate_store": "My"})
    plan = _cleanup(facts, exchange)
    assert SUPERSEDED not in plan.remove
    assert (SUPERSEDED, f"bound to {site} {info}") in plan.kept


@pytest.mark.parametrize(("protect", "reason"), [
    (lambda ex: ex.update(internal_transport=SUPERSEDED), "internal transport certificate"),
    (lambda ex: ex["auth"].update(current=SUPERSEDED), "current Auth certificate"),
    (lambda ex: ex["auth"].update(next=SUPERSEDED), "next Auth certificate"),
    (lambda ex: ex.update(certificates=[c for c in ex["certificates"] if c["thumbprint"] != SUPERSEDED]),
     "Exchange did not report it, so its service assignment is unknown"),
])
def test_cleanup_keeps_what_exchange_still_relies_on(protect, reason):
    facts, exchange = load("duplicate_backend_certs")
    protect(exchange)
    plan = _cleanup(facts, exchange)
    assert SUPERSEDED not in plan.remove and (SUPERSEDED, reason) in plan.kept


def test_cleanup_keeps_a_newer_staged_certificate():
    facts, exchange = load("staged_replacement")
    plan = _cleanup(facts, exchange)
    assert plan.remove == [] and plan.kept[0][0] == STAGED


@pytest.mark.parametrize("override", ["exchange_unavailable", "auth_cert_expired"])
def test_cleanup_refuses_without_exchanges_service_assignments(override):
    facts, exchange = load("duplicate_backend_certs", override)
    plan = _cleanup(facts, exchange)
    assert plan.remove == [] and "service assignments are unknown" in plan.refused_reason


def test_cleanup_refuses_before_verify_passed():
    facts, exchange = load("duplicate_backend_certs")
    plan = _cleanup(facts, exchange, verify_passed=False)
    assert plan.remove == [] and "verify has not passed" in plan.refused_reason


def test_cleanup_waits_min_age_days_after_the_switch():
    facts, exchange = load("duplicate_backend_certs")
    plan = _cleanup(facts, exchange, switched_at=NOW - datetime.timedelta(days=6))
    assert plan.remove == [] and plan.refused_reason == (
        f"the switch to {BACKEND} was 6 day(s) ago; cleanup waits 7 days (--min-age)")
    assert _cleanup(facts, exchange, switched_at=NOW - datetime.timedelta(days=7)).remove


def test_without_a_switch_time_the_bound_certificates_not_before_counts():
    facts, exchange = load("duplicate_backend_certs")
    cert(facts, BACKEND)["not_before"] = iso(NOW - datetime.timedelta(days=2))
    assert "2 day(s) ago" in _cleanup(facts, exchange).refused_reason
    assert _cleanup(facts, exchange, Settings(min_age_days=0)).remove == [SUPERSEDED, ROOT_ORPHAN]


def test_cleanup_refuses_while_444_carries_no_certificate_of_the_store():
    facts, exchange = load("duplicate_backend_certs")
    binding(facts, "Exchange Back End", "*:444:")["certificate_hash"] = ""
    assert "bind one before cleaning up" in _cleanup(facts, exchange).refused_reason


def test_cleanup_refuses_when_444_carries_something_other_than_a_self_signed_microsoft_exchange_certificate():
    facts, exchange = load("duplicate_backend_certs")
    binding(facts, "Exchange Back End", "*:444:")["certificate_hash"] = PUBLIC
    plan = _cleanup(facts, exchange)
    assert plan.remove == [] and "not a self-signed 'Microsoft Exchange' certificate" in plan.refused_reason


SITES_AND_INFOS = [("Exchange Back End", "*:444:"), ("Default Web Site", "*:443:"),
                   ("Default Web Site", "127.0.0.1:443"), ("Exchange Back End", "10.0.0.5:444:")]
THUMBS = [BACKEND, SUPERSEDED, SMTP_OLD, PUBLIC, AUTH]


@given(
    bound=st.fixed_dictionaries({f"{s}|{i}": st.sampled_from(THUMBS + [""]) for s, i in SITES_AND_INFOS}),
    services=st.fixed_dictionaries({t: st.lists(st.sampled_from(["IMAP", "POP", "SMTP", "IIS"]), unique=True)
                                    for t in THUMBS}),
    transport=st.sampled_from(THUMBS + [None]),
    auth_current=st.sampled_from(THUMBS + [None]),
    auth_next=st.sampled_from(THUMBS + [None]),
)
def test_cleanup_never_selects_anything_bound_assigned_internal_transport_or_auth(bound, services, transport,
                                                                                  auth_current, auth_next):
    facts, exchange = load("duplicate_backend_certs")
    facts["bindings"] = [{"site": key.split("|")[0], "protocol": "https", "binding_information": key.split("|")[1],
                          "certificate_hash": thumb, "certificate_store": "My" if thumb else ""}
                         for key, thumb in bound.items()]
    for certificate in exchange["certificates"]:
        certificate["services"] = services.get(certificate["thumbprint"], [])
    exchange = {**exchange, "internal_transport": transport,
                "auth": {"current": auth_current, "next": auth_next, "next_effective": None}}
    plan = _cleanup(facts, exchange, dataclasses.replace(SETTINGS, min_age_days=0))
    used = {t for t in bound.values() if t} | {t for t, s in services.items() if s} | {transport, auth_current,
                                                                                       auth_next}
    assert not set(plan.remove) & used
    assert set(plan.remove) <= {SUPERSEDED, SMTP_OLD, ROOT_ORPHAN}

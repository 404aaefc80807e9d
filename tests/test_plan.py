"""What exbe decides to change: renew or not and how, what to bind, what cleanup may remove."""

from __future__ import annotations

import dataclasses
import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exbe.contract import EXCHANGE_CMDLETS
from exbe.facts import HostFacts
from exbe.model import Settings
from exbe.plan import (
    created_certificate,
    new_exchange_certificate_params,
    renew_method,
    renew_reasons,
    staged_replacement,
)
from exbe.steps import bind, cleanup, clone
from tests.real_shapes import E16, E19

from .facts_fixtures import (
    AUTH,
    BACKEND,
    NOW,
    PUBLIC,
    ROOT_ORPHAN,
    SMTP_OLD,
    STAGED,
    SUPERSEDED,
    add_binding,
    binding,
    cert,
    expires_in,
    iso,
    load,
    load_typed,
    typed,
    without_binding,
)

SETTINGS = Settings()
DWS, EBE = "Default Web Site", "Exchange Back End"


def reasons_for(facts, thumbprint=BACKEND, settings=SETTINGS):
    host, _ = typed(facts)
    return renew_reasons(host.certificate(thumbprint), host, settings)


# -- renew or not ----------------------------------------------------------------------------------------------------
def test_a_healthy_back_end_certificate_is_not_renewed():
    assert reasons_for(load()[0]) == []


@pytest.mark.parametrize(("days", "renew"), [(61, False), (60, False), (59, True), (1, True)])
def test_renewal_starts_below_the_days_threshold(days, renew):
    facts, _ = load()
    expires_in(facts, BACKEND, days)
    reasons = reasons_for(facts)
    assert bool(reasons) is renew
    if renew:
        assert reasons == [f"{days} days left (< 60)"]


def test_the_threshold_follows_the_days_setting():
    facts, _ = load()
    expires_in(facts, BACKEND, 80)
    assert reasons_for(facts, settings=Settings(days=90)) == ["80 days left (< 90)"]


def test_an_expired_certificate_is_renewed_and_says_since_when():
    assert reasons_for(load("expired_backend")[0]) == ["expired 12 days ago"]


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
    cert(facts, BACKEND)[field] = value
    assert any(r.startswith(reason) for r in reasons_for(facts))


def test_force_renews_a_healthy_certificate():
    assert reasons_for(load()[0], settings=Settings(force=True)) == ["forced"]


# -- a replacement left by an interrupted run ------------------------------------------------------------------------
def staged_for(facts):
    host, _ = typed(facts)
    return staged_replacement(host, host.certificate(BACKEND), SETTINGS)


def test_an_unbound_replacement_from_an_interrupted_run_is_reused():
    assert staged_for(load("staged_replacement")[0]) == STAGED


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
    assert staged_for(facts) is None


@pytest.mark.parametrize("info", ["127.0.0.1:443:", ":443:"])
def test_a_certificate_already_bound_somewhere_is_not_taken_as_the_replacement(info):
    facts, _ = load("staged_replacement")
    binding(facts, DWS, info)["certificate_hash"] = STAGED
    assert staged_for(facts) is None


def test_an_older_certificate_is_never_a_replacement():
    assert staged_for(load("duplicate_backend_certs")[0]) is None


# -- how to renew ----------------------------------------------------------------------------------------------------
def test_exchanges_own_way_is_used_when_the_endpoint_answers():
    assert renew_method(*load_typed()) == "exchange"


@pytest.mark.parametrize("overrides", [("exchange_unavailable",), ("auth_cert_expired",), ("exchange_lists_nothing",),
                                       ("auth_cert_expired", "exchange_lists_nothing")])
def test_the_certificate_store_clone_is_used_when_exchange_is_unavailable_or_blinded(overrides):
    assert renew_method(*load_typed(*overrides)) == "clone"


def test_an_expired_auth_certificate_without_serialization_signing_does_not_force_a_clone():
    facts, exchange = load("auth_cert_expired")
    exchange["serialization_signing"] = False
    assert renew_method(*typed(facts, exchange)) == "exchange"


def test_new_exchange_certificate_copies_subject_and_names_and_assigns_no_service():
    facts, exchange = load_typed()
    params = new_exchange_certificate_params(facts.certificate(BACKEND), facts, exchange,
                                             friendly_name=SETTINGS.friendly_name)
    assert params == {"Server": "EXCH01", "SubjectName": "CN=EXCH01", "DomainName": ["EXCH01", "exch01.contoso.local"],
                      "FriendlyName": "Microsoft Exchange", "KeySize": 2048, "PrivateKeyExportable": True,
                      "Services": "None"}
    assert set(params) <= set(EXCHANGE_CMDLETS["New-ExchangeCertificate"])
    assert "Force" not in params, "-Force would answer yes to taking over the default SMTP certificate"


@pytest.mark.parametrize(("old", "new"), [(1024, 2048), (2048, 2048), (3072, 4096), (4096, 4096)])
def test_new_exchange_certificate_keeps_at_least_the_old_key_strength_in_a_size_the_cmdlet_accepts(old, new):
    """New-ExchangeCertificate's KeySize accepts 1024, 2048 and 4096 only: a 3072-bit key is replaced by 4096."""
    facts, exchange = load_typed()
    selected = dataclasses.replace(facts.certificate(BACKEND), key_size=old)
    assert new_exchange_certificate_params(selected, facts, exchange, friendly_name="Microsoft Exchange")[
        "KeySize"] == new


def test_new_exchange_certificate_falls_back_to_the_computer_names():
    facts, _ = load_typed()
    nameless = dataclasses.replace(facts.certificate(BACKEND), dns_names=())
    params = new_exchange_certificate_params(nameless, facts, None, friendly_name="Microsoft Exchange")
    assert params["DomainName"] == ["EXCH01", "exch01.contoso.local"] and params["Server"] == "EXCH01"
    fresh = new_exchange_certificate_params(None, facts, None, friendly_name="Contoso Exchange")
    assert fresh["SubjectName"] == "CN=EXCH01" and fresh["Services"] == "None"
    assert (fresh["FriendlyName"], fresh["KeySize"]) == ("Contoso Exchange", 2048)


@pytest.mark.parametrize(("old", "new"), [(1024, 2048), (2048, 2048), (3072, 3072), (4096, 4096)])
def test_a_clone_gets_a_new_key_of_at_least_2048_bits_in_a_legacy_csp(old, new):
    facts, _ = load_typed()
    data = clone.plan(dataclasses.replace(facts.certificate(BACKEND), key_size=old), dry_run=True)
    assert (data["source_thumbprint"], data["key_length"], data["provider"], data["dry_run"]) == (
        BACKEND, new, clone.PROVIDER, True)


# -- naming what New-ExchangeCertificate made ------------------------------------------------------------------------
def test_the_created_certificate_is_the_new_self_signed_candidate_in_my():
    before, _ = load_typed()
    after, _ = load_typed("staged_replacement")
    assert created_certificate(before, after, SETTINGS) == [STAGED]
    assert created_certificate(after, after, SETTINGS) == []


def test_only_back_end_candidates_count_as_created():
    before, _ = load()
    after, _ = load("staged_replacement")
    cert(after, STAGED)["friendly_name"] = "something else"
    assert created_certificate(typed(before)[0], typed(after)[0], SETTINGS) == []


# -- binding ---------------------------------------------------------------------------------------------------------
def bind_for(facts, thumbprint=STAGED, settings=SETTINGS):
    return bind.plan(typed(facts)[0], thumbprint, settings)


def test_bind_moves_the_loopback_binding_that_carried_the_old_back_end_certificate():
    data = bind_for(load()[0], STAGED.lower(), Settings(dry_run=True))
    assert data == {"thumbprint": STAGED, "backend_site": EBE, "frontend_site": DWS, "backend_binding": "*:444:",
                    "loopback_binding": "127.0.0.1:443:", "loopback_from": BACKEND, "after_trust": False,
                    "dry_run": True}


def test_bind_leaves_a_loopback_binding_on_another_certificate_alone():
    facts, _ = load()
    binding(facts, DWS, "127.0.0.1:443:")["certificate_hash"] = PUBLIC
    data = bind_for(facts)
    assert (data["backend_binding"], data["loopback_binding"], data["loopback_from"]) == ("*:444:", None, None)


@pytest.mark.parametrize("info", [":443:", "*:443:"])
def test_bind_never_names_the_public_443_binding_however_spelled_even_when_it_carries_the_back_end_certificate(info):
    facts, _ = load()
    binding(facts, DWS, ":443:").update(binding_information=info, certificate_hash=BACKEND)
    data = bind_for(facts)
    assert info not in data.values()
    assert (data["loopback_binding"], data["loopback_from"]) == ("127.0.0.1:443:", BACKEND)


def test_bind_never_names_a_host_header_binding_on_443():
    facts, _ = load()
    add_binding(facts, DWS, "*:443:mail.contoso.com", BACKEND)
    data = bind_for(facts)
    assert "*:443:mail.contoso.com" not in data.values() and data["loopback_binding"] == "127.0.0.1:443:"


def test_bind_without_a_loopback_binding_moves_nothing_else():
    facts, _ = load()
    without_binding(facts, DWS, "127.0.0.1:443:")
    data = bind_for(facts)
    assert (data["loopback_binding"], data["loopback_from"]) == (None, None)


def test_bind_passes_the_loopback_binding_text_through_exactly_as_iis_wrote_it():
    facts, _ = load()
    binding(facts, DWS, "127.0.0.1:443:")["binding_information"] = "127.0.0.1:443"
    assert bind_for(facts)["loopback_binding"] == "127.0.0.1:443"


def test_bind_passes_the_back_end_binding_text_through_and_none_when_there_is_none():
    facts, _ = load()
    binding(facts, EBE, "*:444:")["binding_information"] = ":444:"
    assert bind_for(facts)["backend_binding"] == ":444:"
    without_binding(facts, EBE, ":444:")
    data = bind_for(facts)
    assert data["backend_binding"] is None, "the bind script creates *:444: itself"
    assert data["loopback_from"] == BACKEND, "the selected certificate is what the loopback is moved away from"


def test_an_ip_specific_444_binding_is_never_the_back_end_binding_of_bind():
    facts, _ = load()
    without_binding(facts, EBE, "*:444:")
    add_binding(facts, EBE, "10.0.0.5:444:", BACKEND)
    assert bind_for(facts)["backend_binding"] is None


def test_with_444_empty_the_loopback_moves_when_it_carries_the_selected_certificate():
    facts, _ = load()
    binding(facts, EBE, "*:444:")["certificate_hash"] = ""
    assert bind_for(facts)["loopback_from"] == BACKEND
    onto_itself = bind_for(facts, BACKEND)
    assert (onto_itself["loopback_binding"], onto_itself["loopback_from"]) == (None, None), "nothing to move"


def test_nothing_blocks_binding_on_a_normal_server():
    assert bind.blockers(load_typed()[0]) == []


def test_an_ip_specific_444_binding_blocks_binding_with_the_command_that_removes_it():
    (blocker,) = bind.blockers(load_typed("ip_specific_444")[0])
    assert "IP-specific 444 binding 10.0.0.5:444:" in blocker
    assert blocker.endswith(
        "Remove-WebBinding -Name 'Exchange Back End' -IPAddress '10.0.0.5' -Port 444 -Protocol 'https'")


def test_an_ipv6_444_binding_blocks_binding_too():
    facts, _ = load()
    add_binding(facts, EBE, "[::1]:444:", BACKEND)
    (blocker,) = bind.blockers(typed(facts)[0])
    assert "IP-specific 444 binding [::1]:444: on Exchange Back End" in blocker


# -- cleanup ---------------------------------------------------------------------------------------------------------
def _cleanup(facts, exchange, settings=SETTINGS, switched_at=None):
    return cleanup.plan(*typed(facts, exchange), settings, switched_at=switched_at)


def test_cleanup_removes_superseded_unused_certificates_and_orphaned_root_copies():
    plan = _cleanup(*load("duplicate_backend_certs"))
    assert (plan.refused, plan.waiting, plan.warnings) == (None, None, [])
    assert plan.remove == [SUPERSEDED, ROOT_ORPHAN]
    assert plan.kept == [(SMTP_OLD, "assigned to SMTP")]


def test_cleanup_never_touches_certificates_other_than_self_signed_microsoft_exchange_ones():
    facts, exchange = load("duplicate_backend_certs")
    removed = set(_cleanup(facts, exchange).remove)
    assert not removed & {BACKEND, PUBLIC, AUTH}
    assert not removed & {r["thumbprint"] for r in facts["root"] if r["subject"] != "CN=EXCH01"}


@pytest.mark.parametrize("site,info", [(DWS, "127.0.0.1:443:"), (DWS, ":443:"), (DWS, "*:443:"),
                                       (DWS, "*:443:mail.contoso.com"), (EBE, "10.0.0.5:444:"), (EBE, "[::1]:444:")])
def test_cleanup_keeps_a_certificate_bound_anywhere(site, info):
    facts, exchange = load("duplicate_backend_certs")
    if info in (":443:", "*:443:"):
        without_binding(facts, DWS, ":443:")
    without_binding(facts, site, info)
    add_binding(facts, site, info, SUPERSEDED)
    plan = _cleanup(facts, exchange)
    assert SUPERSEDED not in plan.remove
    assert (SUPERSEDED, f"bound to {site} {info}") in plan.kept


@pytest.mark.parametrize(("protect", "reason"), [
    (lambda ex: ex.update(internal_transport=SUPERSEDED), "internal transport certificate"),
    (lambda ex: ex["auth"].update(current=SUPERSEDED), "current Auth certificate"),
    (lambda ex: ex["auth"].update(next=SUPERSEDED), "next Auth certificate"),
    (lambda ex: ex.update(certificates=[c for c in ex["certificates"] if c["thumbprint"] != SUPERSEDED]),
     "Exchange did not report it, so its service assignment is unknown"),
    (lambda ex: next(c for c in ex["certificates"] if c["thumbprint"] == SUPERSEDED).update(services=None),
     "its service assignment is unknown"),
], ids=["internal-transport", "auth-current", "auth-next", "not-listed", "services-unread"])
def test_cleanup_keeps_what_exchange_still_relies_on(protect, reason):
    facts, exchange = load("duplicate_backend_certs")
    protect(exchange)
    plan = _cleanup(facts, exchange)
    assert SUPERSEDED not in plan.remove and (SUPERSEDED, reason) in plan.kept


def test_cleanup_keeps_a_newer_staged_certificate():
    plan = _cleanup(*load("staged_replacement"))
    assert plan.remove == [] and plan.kept == [
        (STAGED, f"not superseded: expires after the bound certificate {BACKEND}")]


def _projection_refused(exchange):
    why = "the Exchange endpoint refused Select-Object (The term 'Select-Object' is not recognized ...)"
    for certificate in exchange["certificates"]:
        certificate["services"] = None
    exchange["assignments_unknown"] = why
    return why


@pytest.mark.parametrize(("overrides", "spoil", "why"), [
    (("exchange_unavailable",), None, "the Exchange endpoint is not available"),
    (("auth_cert_expired",), None, "the Auth certificate 75385156... expired on 2026-05-02"),
    (("exchange_lists_nothing",), None, "Get-ExchangeCertificate returned no certificates"),
    ((), _projection_refused, "the Exchange endpoint refused Select-Object"),
], ids=["endpoint-unavailable", "blinded-auth-expired", "blinded-empty-list", "projection-refused"])
def test_with_service_assignments_unknown_cleanup_keeps_every_superseded_certificate_and_says_why(overrides, spoil,
                                                                                                  why):
    """Not a refusal: the run goes on, nothing Exchange might use is removed, and a warning says why. Root copies
    of certificates already gone from My are no service's, so they still go."""
    facts, exchange = load("duplicate_backend_certs", *overrides)
    if spoil:
        spoil(exchange)
    plan = _cleanup(facts, exchange)
    assert (plan.refused, plan.waiting) == (None, None)
    assert plan.remove == [ROOT_ORPHAN]
    assert [thumb for thumb, _ in plan.kept] == [SUPERSEDED, SMTP_OLD]
    assert all(reason.startswith(f"its service assignment is unknown: {why}") for _, reason in plan.kept), plan.kept
    (warning,) = plan.warnings
    assert warning.startswith(f"service assignments unknown ({why}") and "superseded certificates are kept" in warning


def test_with_service_assignments_unknown_bindings_and_exchanges_own_certificates_still_say_why_they_stay():
    facts, exchange = load("duplicate_backend_certs", "auth_cert_expired")
    exchange["internal_transport"] = SMTP_OLD
    binding(facts, DWS, "127.0.0.1:443:")["certificate_hash"] = SUPERSEDED
    plan = _cleanup(facts, exchange)
    assert plan.kept == [(SUPERSEDED, "bound to Default Web Site 127.0.0.1:443:"),
                         (SMTP_OLD, "internal transport certificate")]


def test_right_after_this_runs_switch_cleanup_waits_and_that_is_not_a_failure():
    facts, exchange = load("duplicate_backend_certs")
    plan = _cleanup(facts, exchange, switched_at=NOW)
    assert (plan.remove, plan.refused) == ([], None)
    assert plan.waiting == (f"this run switched to {BACKEND}; its predecessors are removed by a cleanup run at least "
                            "7 days from now (--min-age)")


def test_cleanup_waits_min_age_days_after_the_switch():
    facts, exchange = load("duplicate_backend_certs")
    plan = _cleanup(facts, exchange, switched_at=NOW - datetime.timedelta(days=6, hours=23))
    assert (plan.remove, plan.refused) == ([], None) and plan.waiting
    assert _cleanup(facts, exchange, switched_at=NOW - datetime.timedelta(days=7)).remove == [SUPERSEDED, ROOT_ORPHAN]


def test_without_a_switch_time_the_bound_certificates_not_before_counts():
    facts, exchange = load("duplicate_backend_certs")
    cert(facts, BACKEND)["not_before"] = iso(NOW - datetime.timedelta(days=2))
    plan = _cleanup(facts, exchange)
    assert (plan.remove, plan.refused) == ([], None)
    assert plan.waiting == f"the switch to {BACKEND} was 2 days ago; cleanup waits 7 days (--min-age)"
    assert _cleanup(facts, exchange, Settings(min_age_days=0)).remove == [SUPERSEDED, ROOT_ORPHAN]


def test_cleanup_refuses_while_444_carries_no_certificate_of_the_store():
    facts, exchange = load("duplicate_backend_certs")
    binding(facts, EBE, "*:444:")["certificate_hash"] = ""
    plan = _cleanup(facts, exchange)
    assert plan.remove == [] and plan.waiting is None and "bind one before cleaning up" in plan.refused


def test_cleanup_refuses_when_444_carries_something_other_than_a_self_signed_microsoft_exchange_certificate():
    facts, exchange = load("duplicate_backend_certs")
    binding(facts, EBE, "*:444:")["certificate_hash"] = PUBLIC
    plan = _cleanup(facts, exchange)
    assert plan.remove == [] and "not a self-signed 'Microsoft Exchange' certificate" in plan.refused


def test_cleanup_finds_the_back_end_binding_by_meaning():
    facts, exchange = load("duplicate_backend_certs")
    binding(facts, EBE, "*:444:")["binding_information"] = ":444:"
    assert _cleanup(facts, exchange).remove == [SUPERSEDED, ROOT_ORPHAN]


SITES_AND_INFOS = [(EBE, "*:444:"), (DWS, ":443:"), (DWS, "127.0.0.1:443:"), (EBE, "10.0.0.5:444:"),
                   (EBE, "[::1]:444:"), (DWS, "*:443:mail.contoso.com")]
THUMBS = [BACKEND, SUPERSEDED, SMTP_OLD, PUBLIC, AUTH]


@given(
    bound=st.fixed_dictionaries({f"{s}|{i}": st.sampled_from(THUMBS + [""]) for s, i in SITES_AND_INFOS}),
    services=st.fixed_dictionaries({t: st.lists(st.sampled_from(["IMAP", "POP", "SMTP", "IIS"]), unique=True)
                                    for t in THUMBS}),
    transport=st.sampled_from(THUMBS + [None]),
    auth_current=st.sampled_from(THUMBS + [None]),
    auth_next=st.sampled_from(THUMBS + [None]),
    unknown=st.booleans(),
)
def test_cleanup_never_selects_anything_bound_assigned_internal_transport_or_auth(bound, services, transport,
                                                                                  auth_current, auth_next, unknown):
    facts, exchange = load("duplicate_backend_certs")
    facts["bindings"] = [{"site": key.split("|")[0], "protocol": "https", "binding_information": key.split("|")[1],
                          "certificate_hash": thumb, "certificate_store": "MY" if thumb else ""}
                         for key, thumb in bound.items()]
    for certificate in exchange["certificates"]:
        certificate["services"] = None if unknown else services.get(certificate["thumbprint"], [])
    exchange = {**exchange, "internal_transport": transport, "assignments_unknown": "refused" if unknown else "",
                "auth": {"current": auth_current, "next": auth_next, "next_effective": None}}
    plan = _cleanup(facts, exchange, dataclasses.replace(SETTINGS, min_age_days=0))
    used = {t for t in bound.values() if t} | {t for t, s in services.items() if s} | {transport, auth_current,
                                                                                       auth_next}
    assert not set(plan.remove) & used
    assert set(plan.remove) <= ({ROOT_ORPHAN} if unknown else {SUPERSEDED, SMTP_OLD, ROOT_ORPHAN})


# -- the captured real servers ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("server", [E16, E19], ids=["e16", "e19"])
def test_on_the_captured_servers_bind_moves_444_and_the_loopback_and_leaves_the_public_binding_alone(server):
    """Both captures carry the same self-signed certificate on ``:443:``, ``127.0.0.1:443:`` and ``*:444:``."""
    facts = HostFacts.parse(server.facts_data(server.cert("exchange").not_before + datetime.timedelta(days=365)))
    data = bind.plan(facts, STAGED, SETTINGS)
    assert (data["backend_binding"], data["loopback_binding"], data["loopback_from"]) == (
        "*:444:", "127.0.0.1:443:", server.backend_thumbprint)
    assert ":443:" not in data.values()
    assert bind.blockers(facts) == []

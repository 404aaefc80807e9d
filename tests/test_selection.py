"""Which certificate exbe treats as the back-end certificate (read from the store, never guessed), which bindings play
which role (found by meaning, never by spelling), and when Exchange's view of its certificates cannot be trusted."""

from __future__ import annotations

import pytest

from exbe.model import Settings
from exbe.selection import (
    SelectionError,
    backend_binding,
    exchange_blinded,
    frontend_binding,
    ip_specific_444,
    loopback_binding,
    new_exchange_key_size,
    select_backend,
)

from .facts_fixtures import (
    AUTH,
    BACKEND,
    CANDIDATE_NEW,
    CANDIDATE_OLD,
    PUBLIC,
    SMTP_OLD,
    SUPERSEDED,
    add_binding,
    binding,
    cert,
    load,
    load_typed,
    typed,
    without_binding,
)

SETTINGS = Settings()
DWS, EBE = "Default Web Site", "Exchange Back End"


def host(facts):
    return typed(facts)[0]


# -- the back-end certificate ----------------------------------------------------------------------------------------
def test_the_certificate_bound_to_444_is_the_back_end_certificate_even_with_older_ones_around():
    facts, _ = load_typed("duplicate_backend_certs")
    selection = select_backend(facts, SETTINGS)
    assert selection.thumbprint == BACKEND
    assert selection.reason == f"{BACKEND} is bound to Exchange Back End *:444:"
    assert {c.thumbprint for c in selection.candidates} == {BACKEND, SUPERSEDED, SMTP_OLD}


def test_a_bound_certificate_is_selected_whatever_its_friendly_name():
    facts, _ = load()
    cert(facts, BACKEND)["friendly_name"] = "renamed by hand"
    assert select_backend(host(facts), SETTINGS).thumbprint == BACKEND


def test_the_bound_hash_is_matched_whatever_its_case_or_spacing():
    facts, _ = load()
    binding(facts, EBE, "*:444:")["certificate_hash"] = "bfdc 0014bc99fcad6b3f728f6c46bee7b762fb39"
    assert select_backend(host(facts), SETTINGS).thumbprint == BACKEND


def test_a_444_binding_spelled_with_an_empty_address_is_the_back_end_binding_and_named_as_iis_wrote_it():
    facts, _ = load()
    binding(facts, EBE, "*:444:")["binding_information"] = ":444:"
    selection = select_backend(host(facts), SETTINGS)
    assert selection.thumbprint == BACKEND and selection.reason == f"{BACKEND} is bound to Exchange Back End :444:"


def test_with_444_empty_the_only_self_signed_microsoft_exchange_certificate_is_chosen_not_the_auth_certificate():
    facts, _ = load()
    binding(facts, EBE, "*:444:")["certificate_hash"] = ""
    selection = select_backend(host(facts), SETTINGS)
    assert selection.thumbprint == BACKEND
    assert "has no certificate" in selection.reason and "only self-signed" in selection.reason


def test_with_the_444_binding_removed_by_an_update_the_unique_candidate_is_chosen():
    facts, _ = load()
    without_binding(facts, EBE, "*:444:")
    selection = select_backend(host(facts), SETTINGS)
    assert selection.thumbprint == BACKEND
    assert "no https *:444: binding" in selection.reason


def test_an_ip_specific_444_binding_is_not_the_back_end_binding():
    facts, _ = load()
    without_binding(facts, EBE, "*:444:")
    add_binding(facts, EBE, "10.0.0.5:444:", PUBLIC)
    selection = select_backend(host(facts), SETTINGS)
    assert selection.thumbprint == BACKEND and "no https *:444: binding" in selection.reason


def test_a_bound_hash_missing_from_the_store_falls_back_to_the_unique_candidate():
    facts, _ = load("two_candidates")
    facts["certificates"] = [c for c in facts["certificates"] if c["thumbprint"] != CANDIDATE_OLD]
    selection = select_backend(host(facts), SETTINGS)
    assert selection.thumbprint == CANDIDATE_NEW
    assert f"carries {BACKEND}, which is not in LocalMachine\\My" in selection.reason


def test_several_unbound_candidates_stop_with_every_candidate_listed_and_what_to_do():
    facts, _ = load_typed("two_candidates")
    with pytest.raises(SelectionError) as caught:
        select_backend(facts, SETTINGS)
    error = caught.value
    message = str(error)
    assert "\n" not in message
    assert "2 candidates" in message
    assert f"{CANDIDATE_OLD} (expires 2028-11-18, CN=EXCH01)" in message
    assert f"{CANDIDATE_NEW} (expires 2030-02-03, CN=EXCH01)" in message
    assert "`exbe bind --thumbprint <thumbprint>`" in message
    assert [c.thumbprint for c in error.candidates] == [CANDIDATE_OLD, CANDIDATE_NEW]
    assert [c.not_after for c in error.candidates] == ["2028-11-18", "2030-02-03"]
    assert error.found == f"Exchange Back End *:444: carries {BACKEND}, which is not in LocalMachine\\My"


def test_no_candidate_at_all_stops_and_points_to_microsofts_repair():
    facts, _ = load()
    facts["certificates"] = [c for c in facts["certificates"] if c["thumbprint"] != BACKEND]
    with pytest.raises(SelectionError) as caught:
        select_backend(host(facts), SETTINGS)
    assert caught.value.candidates == []
    assert "no candidates" in str(caught.value) and "KB 2779694" in str(caught.value)


@pytest.mark.parametrize("friendly_name", ["Microsoft Exchange ", "microsoft exchange", "Microsoft Exchange (old)"])
def test_only_the_exact_friendly_name_makes_a_candidate(friendly_name):
    facts, _ = load()
    binding(facts, EBE, "*:444:")["certificate_hash"] = ""
    cert(facts, BACKEND)["friendly_name"] = friendly_name
    with pytest.raises(SelectionError, match="no candidates"):
        select_backend(host(facts), SETTINGS)


def test_a_ca_issued_certificate_named_microsoft_exchange_is_no_candidate():
    facts, _ = load()
    binding(facts, EBE, "*:444:")["certificate_hash"] = ""
    cert(facts, PUBLIC)["friendly_name"] = "Microsoft Exchange"
    assert select_backend(host(facts), SETTINGS).thumbprint == BACKEND


def test_the_auth_certificate_is_never_a_candidate_even_named_microsoft_exchange():
    facts, _ = load()
    binding(facts, EBE, "*:444:")["certificate_hash"] = ""
    cert(facts, AUTH)["friendly_name"] = "Microsoft Exchange"
    assert select_backend(host(facts), SETTINGS).thumbprint == BACKEND


def test_the_configured_site_and_friendly_name_are_used():
    facts, _ = load()
    for b in facts["bindings"]:
        if b["site"] == EBE:
            b["site"] = "Exchange Back End (custom)"
    cert(facts, BACKEND)["friendly_name"] = "Contoso Exchange"
    settings = Settings(backend_site="Exchange Back End (custom)", friendly_name="Contoso Exchange")
    selection = select_backend(host(facts), settings)
    assert selection.thumbprint == BACKEND and "Exchange Back End (custom)" in selection.reason


# -- binding roles, by meaning ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("info", [":443:", "*:443:"])
def test_an_empty_address_and_a_star_are_the_same_public_443_binding(info):
    facts, _ = load()
    binding(facts, DWS, ":443:")["binding_information"] = info
    found = frontend_binding(host(facts), SETTINGS)
    assert found is not None and found.information == info and found.certificate_hash == PUBLIC


@pytest.mark.parametrize("info", ["127.0.0.1:443:", "127.0.0.1:443"])
def test_the_loopback_binding_is_found_by_address_and_port_and_keeps_its_spelling(info):
    facts, _ = load()
    binding(facts, DWS, "127.0.0.1:443:")["binding_information"] = info
    typed_facts = host(facts)
    found = loopback_binding(typed_facts, SETTINGS)
    assert found is not None and found.information == info and found.certificate_hash == BACKEND
    assert frontend_binding(typed_facts, SETTINGS).information == ":443:", "the loopback is not the public binding"


def test_a_host_header_binding_on_443_is_not_the_public_catch_all():
    facts, _ = load()
    without_binding(facts, DWS, ":443:")
    add_binding(facts, DWS, "*:443:mail.contoso.com", PUBLIC)
    assert frontend_binding(host(facts), SETTINGS) is None
    add_binding(facts, DWS, ":443:", BACKEND)
    assert frontend_binding(host(facts), SETTINGS).information == ":443:"


def test_the_back_end_binding_is_found_whether_iis_wrote_a_star_or_an_empty_address():
    facts, _ = load()
    assert backend_binding(host(facts), SETTINGS).information == "*:444:"
    binding(facts, EBE, "*:444:")["binding_information"] = ":444:"
    assert backend_binding(host(facts), SETTINGS).information == ":444:"


def test_http_bindings_and_other_sites_play_no_role():
    facts, _ = load()
    for b in facts["bindings"]:
        b["protocol"] = "http"
    typed_facts = host(facts)
    assert (backend_binding(typed_facts, SETTINGS), frontend_binding(typed_facts, SETTINGS),
            loopback_binding(typed_facts, SETTINGS)) == (None, None, None)
    assert backend_binding(typed_facts, Settings(backend_site=DWS)) is None


def test_ip_specific_444_bindings_are_found_ipv4_and_ipv6_and_the_catch_all_and_loopback_are_not():
    facts, _ = load("ip_specific_444")
    add_binding(facts, EBE, "[fe80::5]:444:", BACKEND)
    add_binding(facts, EBE, "[::1]:444:", BACKEND)
    found = ip_specific_444(host(facts))
    assert [b.information for b in found] == ["10.0.0.5:444:", "[fe80::5]:444:", "[::1]:444:"]
    assert [(b.address, b.port) for b in found] == [("10.0.0.5", 444), ("fe80::5", 444), ("::1", 444)]
    assert ip_specific_444(load_typed()[0]) == []


def test_an_empty_address_on_444_is_not_ip_specific():
    facts, _ = load()
    binding(facts, EBE, "*:444:")["binding_information"] = ":444:"
    assert ip_specific_444(host(facts)) == []


# -- how far Exchange's view can be trusted --------------------------------------------------------------------------
def test_an_expired_auth_certificate_with_serialization_signing_on_blinds_exchange():
    facts, exchange = load_typed("auth_cert_expired")
    assert exchange is not None and exchange.certificates, "the listing still arrives, as on the captured server"
    reason = exchange_blinded(facts, exchange)
    assert "Auth certificate 75385156... expired on 2026-05-02" in reason and "serialization signing is on" in reason


def test_an_empty_certificate_list_while_my_holds_certificates_blinds_exchange():
    facts, exchange = load_typed("exchange_lists_nothing")
    assert "returned no certificates while LocalMachine\\My holds some" in exchange_blinded(facts, exchange)
    facts, exchange = load_typed("auth_cert_expired", "exchange_lists_nothing")
    assert exchange_blinded(facts, exchange)


def test_an_expired_auth_certificate_with_signing_disabled_does_not_blind_exchange():
    facts, exchange = load("auth_cert_expired")
    exchange["serialization_signing"] = False
    assert exchange_blinded(*typed(facts, exchange)) == ""


def test_a_normal_exchange_answer_or_no_exchange_answer_is_not_blinded():
    facts, exchange = load()
    assert exchange_blinded(*typed(facts, exchange)) == ""
    assert exchange_blinded(host(facts), None) == ""
    only_auth = [c for c in facts["certificates"] if c["thumbprint"] == AUTH]
    assert exchange_blinded(*typed({**facts, "certificates": only_auth},
                                   {**exchange, "certificates": [c for c in exchange["certificates"]
                                                                 if c["thumbprint"] == AUTH]})) == ""


def test_an_auth_certificate_missing_from_the_store_blinds_exchange_under_signing():
    facts, exchange = load()
    exchange["auth"]["current"] = "00" * 20
    assert "not in LocalMachine\\My" in exchange_blinded(*typed(facts, exchange))
    exchange["serialization_signing"] = False
    assert exchange_blinded(*typed(facts, exchange)) == ""


def test_an_auth_certificate_that_expires_later_today_does_not_blind_yet():
    facts, exchange = load()
    cert(facts, AUTH)["not_after"] = "2026-06-01T09:00:00Z"
    assert exchange_blinded(*typed(facts, exchange)) == ""
    cert(facts, AUTH)["not_after"] = "2026-06-01T08:00:00Z"
    assert exchange_blinded(*typed(facts, exchange))


# -- the key size New-ExchangeCertificate is asked for ---------------------------------------------------------------
@pytest.mark.parametrize(("old", "new"), [(0, 2048), (1024, 2048), (2048, 2048), (3072, 4096), (4096, 4096),
                                          (8192, 4096)])
def test_the_new_key_size_is_one_new_exchange_certificate_accepts_at_least_as_strong_as_the_old_one(old, new):
    """ValidateSet 1024, 2048, 4096: a 3072-bit key becomes 4096, not a KeySize the cmdlet refuses; above 4096 the
    largest it accepts."""
    assert new_exchange_key_size(old) == new


def test_with_444_naming_none_the_certificate_the_last_run_made_to_replace_it_is_chosen():
    """An interrupted renewal converges: its journal names the certificate it made (issue 27, item 2)."""
    facts, _ = load_typed("two_candidates")
    selection = select_backend(facts, SETTINGS, replacement=(CANDIDATE_NEW.lower(), "made by run R (renew)"))
    assert selection.thumbprint == CANDIDATE_NEW
    assert selection.reason.endswith(f"{CANDIDATE_NEW} the one made by run R (renew)")


def test_a_replacement_that_is_no_candidate_changes_nothing():
    facts, _ = load_typed("two_candidates")
    with pytest.raises(SelectionError):
        select_backend(facts, SETTINGS, replacement=(AUTH, "made by run R (renew)"))
    bound, _ = load_typed("duplicate_backend_certs")
    assert select_backend(bound, SETTINGS, replacement=(CANDIDATE_NEW, "made by run R")).thumbprint == BACKEND, \
        "444's certificate wins over any replacement"

"""Which certificate exbe treats as the back-end certificate: read from the store, never guessed."""

from __future__ import annotations

import pytest

from exbe.model import Settings
from exbe.select import SelectionError, exchange_certificates_unavailable, ip_specific_444, select_backend

from .facts_fixtures import (
    AUTH,
    BACKEND,
    CANDIDATE_NEW,
    CANDIDATE_OLD,
    PUBLIC,
    SMTP_OLD,
    SUPERSEDED,
    binding,
    cert,
    load,
)

SETTINGS = Settings()


def test_the_certificate_bound_to_444_is_the_back_end_certificate_even_with_older_ones_around():
    facts, _ = load("duplicate_backend_certs")
    selection = select_backend(facts, SETTINGS)
    assert selection.thumbprint == BACKEND
    assert "*:444:" in selection.reason
    assert {c.thumbprint for c in selection.candidates} == {BACKEND, SUPERSEDED, SMTP_OLD}


def test_a_bound_certificate_is_selected_whatever_its_friendly_name():
    facts, _ = load()
    cert(facts, BACKEND)["friendly_name"] = "renamed by hand"
    assert select_backend(facts, SETTINGS).thumbprint == BACKEND


def test_with_444_empty_the_only_self_signed_microsoft_exchange_certificate_is_chosen_not_the_auth_certificate():
    facts, _ = load()
    binding(facts, "Exchange Back End", "*:444:")["certificate_hash"] = ""
    selection = select_backend(facts, SETTINGS)
    assert selection.thumbprint == BACKEND
    assert "has no certificate" in selection.reason and "only self-signed" in selection.reason


def test_with_the_444_binding_removed_by_an_update_the_unique_candidate_is_chosen():
    facts, _ = load()
    facts["bindings"] = [b for b in facts["bindings"] if b["binding_information"] != "*:444:"]
    selection = select_backend(facts, SETTINGS)
    assert selection.thumbprint == BACKEND
    assert "no https *:444: binding" in selection.reason


def test_a_bound_hash_missing_from_the_store_falls_back_to_the_unique_candidate():
    facts, _ = load("two_candidates")
    facts["certificates"] = [c for c in facts["certificates"] if c["thumbprint"] != CANDIDATE_OLD]
    selection = select_backend(facts, SETTINGS)
    assert selection.thumbprint == CANDIDATE_NEW
    assert f"carries {BACKEND}, which is not in LocalMachine\\My" in selection.reason


def test_several_unbound_candidates_stop_with_every_candidate_listed_and_what_to_do():
    facts, _ = load("two_candidates")
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
    assert error.found == f"Exchange Back End *:444: carries {BACKEND}, which is not in LocalMachine\\My"


def test_no_candidate_at_all_stops_and_points_to_microsofts_repair():
    facts, _ = load()
    facts["certificates"] = [c for c in facts["certificates"] if c["thumbprint"] != BACKEND]
    with pytest.raises(SelectionError) as caught:
        select_backend(facts, SETTINGS)
    assert caught.value.candidates == []
    assert "no candidates" in str(caught.value) and "KB 2779694" in str(caught.value)


@pytest.mark.parametrize("friendly_name", ["Microsoft Exchange ", "microsoft exchange", "Microsoft Exchange (old)"])
def test_only_the_exact_friendly_name_makes_a_candidate(friendly_name):
    facts, _ = load()
    binding(facts, "Exchange Back End", "*:444:")["certificate_hash"] = ""
    cert(facts, BACKEND)["friendly_name"] = friendly_name
    with pytest.raises(SelectionError, match="no candidates"):
        select_backend(facts, SETTINGS)


def test_a_ca_issued_certificate_named_microsoft_exchange_is_no_candidate():
    facts, _ = load()
    binding(facts, "Exchange Back End", "*:444:")["certificate_hash"] = ""
    cert(facts, PUBLIC)["friendly_name"] = "Microsoft Exchange"
    assert select_backend(facts, SETTINGS).thumbprint == BACKEND


def test_the_auth_certificate_is_never_a_candidate_even_named_microsoft_exchange():
    facts, _ = load()
    binding(facts, "Exchange Back End", "*:444:")["certificate_hash"] = ""
    cert(facts, AUTH)["friendly_name"] = "Microsoft Exchange"
    assert select_backend(facts, SETTINGS).thumbprint == BACKEND


def test_the_configured_site_and_friendly_name_are_used():
    facts, _ = load()
    for b in facts["bindings"]:
        if b["site"] == "Exchange Back End":
            b["site"] = "Exchange Back End (custom)"
    cert(facts, BACKEND)["friendly_name"] = "Contoso Exchange"
    settings = Settings(backend_site="Exchange Back End (custom)", friendly_name="Contoso Exchange")
    selection = select_backend(facts, settings)
    assert selection.thumbprint == BACKEND and "Exchange Back End (custom)" in selection.reason


def test_exchange_blinded_by_an_expired_auth_certificate_is_recognised():
    facts, exchange = load("auth_cert_expired")
    assert exchange_certificates_unavailable(facts, exchange)


def test_a_normal_exchange_answer_or_no_exchange_answer_is_not_blinded():
    facts, exchange = load()
    assert not exchange_certificates_unavailable(facts, exchange)
    assert not exchange_certificates_unavailable(facts, None)
    assert not exchange_certificates_unavailable({**facts, "certificates": []}, {**exchange, "certificates": []})


def test_ip_specific_444_bindings_are_found_and_the_catch_all_and_loopback_are_not():
    facts, _ = load("ip_specific_444")
    facts["bindings"].append({"site": "Exchange Back End", "protocol": "https", "binding_information": "[fe80::5]:444:",
                              "certificate_hash": BACKEND, "certificate_store": "My"})
    assert ip_specific_444(facts) == ["10.0.0.5:444:", "[fe80::5]:444:"]
    assert ip_specific_444(load()[0]) == []

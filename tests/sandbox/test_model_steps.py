"""exbe's WinRM steps on a simulated server: the contract's semantics, dry run, idempotence, refusals, rollback."""

from __future__ import annotations

import json

import pytest

from exbe import contract
from exbe.render import TEMPLATE_DIR
from exbe.sandbox.faults import Faults
from exbe.sandbox.records import TerminatingError
from exbe.sandbox.state import BACKEND_SITE, CSP_PROVIDER, FRONTEND_SITE, HostState
from exbe.sandbox.steps import PLATFORM_ERROR, run_step

SITES = {"backend_site": BACKEND_SITE, "frontend_site": FRONTEND_SITE}
CLONE = {"provider": CSP_PROVIDER, "key_length": 2048, "hash_algorithm": "SHA256", "validity_years": 5}
NO_FAULTS = Faults()


def host(scenario: str = "healthy") -> HostState:
    return HostState.from_scenario("exch01", scenario)


def snapshot(state: HostState) -> str:
    return json.dumps(state.to_dict(), sort_keys=True)


def step(state: HostState, name: str, faults: Faults = NO_FAULTS, **data) -> dict:
    result = run_step(state, name, data, faults)
    assert result == contract.make_result(name, ok=result["ok"], changed=result["changed"],
                                          dry_run=result["dry_run"], data=result["data"],
                                          warnings=result["warnings"], error=result["error"])
    return result


# Bindings by meaning, whatever their spelling (the captured servers write ":443:" and "127.0.0.1:443:").
def backend(state: HostState):
    return state.https_binding(BACKEND_SITE, 444)


def public(state: HostState):
    return state.https_binding(FRONTEND_SITE, 443)


def loopback(state: HostState):
    return state.https_binding(FRONTEND_SITE, 443, "127.0.0.1")


def hash_of(binding) -> str | None:
    return binding.certificate_hash if binding else None


def backend_thumb(state: HostState) -> str:
    return hash_of(backend(state))


def bind_input(state: HostState, thumbprint: str, *, moving_from: str | None = None, dry_run: bool = False) -> dict:
    """What exbe's plan sends: the exact texts of the bindings it found by meaning; the loopback binding only when
    it is to move."""
    found_loopback = loopback(state) if moving_from else None
    return {"thumbprint": thumbprint, **SITES,
            "backend_binding": backend(state).binding_information if backend(state) else None,
            "loopback_binding": found_loopback.binding_information if found_loopback else None,
            "loopback_from": moving_from, "after_trust": False, "dry_run": dry_run}


def new_clone(state: HostState) -> str:
    result = step(state, "clone", source_thumbprint=backend_thumb(state), dry_run=False, **CLONE)
    assert result["ok"], result["error"]
    return result["data"]["new_thumbprint"]


def exchange_cert(state: HostState) -> str:
    return next(c.thumbprint for c in state.my if c.friendly_name == "Microsoft Exchange")


# -- facts -----------------------------------------------------------------------------------------------------------
def test_facts_report_exactly_the_fields_of_the_contract_and_change_nothing():
    state = host("ip_specific_444")
    before = snapshot(state)
    result = step(state, "facts", friendly_name="Microsoft Exchange", **SITES)
    assert result["ok"] and not result["changed"] and snapshot(state) == before
    data = result["data"]
    assert set(data) == {"now", "computer", "powershell_version", "certificates", "root", "bindings", "sites",
                         "services", "allow_internal_untrusted_certs"}
    assert data["computer"] == {"name": "EXCH01", "fqdn": "exch01.contoso.local"}
    cert_fields = {"thumbprint", "subject", "issuer", "friendly_name", "not_before", "not_after",
                   "signature_algorithm", "key_algorithm", "key_size", "has_private_key", "provider",
                   "provider_type", "key_accessible", "dns_names", "self_signed"}
    assert all(set(c) == cert_fields for c in data["certificates"])
    assert all(set(r) == {"thumbprint", "subject", "not_after"} for r in data["root"])
    assert all(set(b) == {"site", "protocol", "binding_information", "certificate_hash", "certificate_store",
                          "ssl_flags"}
               for b in data["bindings"])
    assert data["sites"][BACKEND_SITE] == {"exists": True, "hsts_enabled": False, "hsts_header": False,
                                           "extended_protection": "Require"}
    assert data["services"] == {"W3SVC": "Running", "WAS": "Running"}
    assert data["now"].endswith("Z")


def test_facts_report_https_bindings_as_iis_spells_them_and_the_store_as_iis_names_it():
    data = step(host("ip_specific_444"), "facts", friendly_name="Microsoft Exchange", **SITES)["data"]
    rows = {(b["site"], b["binding_information"]): b["certificate_store"] for b in data["bindings"]}
    assert rows == {(BACKEND_SITE, "*:444:"): "MY", (BACKEND_SITE, "10.0.0.5:444:"): "MY",
                    (FRONTEND_SITE, ":443:"): "MY", (FRONTEND_SITE, "127.0.0.1:443:"): "MY"}
    assert {b["protocol"] for b in data["bindings"]} == {"https"}


def test_facts_report_hsts_set_as_a_custom_response_header_apart_from_the_hsts_element():
    state = host()
    state.sites[BACKEND_SITE].hsts_header = True
    sites = step(state, "facts", friendly_name="Microsoft Exchange", **SITES)["data"]["sites"]
    assert (sites[BACKEND_SITE]["hsts_header"], sites[BACKEND_SITE]["hsts_enabled"]) == (True, False)
    assert sites[FRONTEND_SITE]["hsts_header"] is False


def test_facts_of_a_missing_site_say_so():
    state = host()
    del state.sites[BACKEND_SITE]
    sites = step(state, "facts", friendly_name="Microsoft Exchange", **SITES)["data"]["sites"]
    assert sites[BACKEND_SITE] == {"exists": False, "hsts_enabled": False, "hsts_header": False,
                                   "extended_protection": "None"}


def test_facts_show_a_cng_key_and_the_registry_value_that_makes_the_root_copy_matter():
    cng = step(host("cng_backend"), "facts", **SITES)["data"]
    bound_hash = next(b["certificate_hash"] for b in cng["bindings"] if b["binding_information"] == "*:444:")
    cert = next(c for c in cng["certificates"] if c["thumbprint"] == bound_hash)
    assert (cert["provider"], cert["provider_type"]) == ("Microsoft Software Key Storage Provider", "CNG")
    assert step(host("untrusted_internal_disallowed"), "facts", **SITES)["data"]["allow_internal_untrusted_certs"] == 0


# -- the stated platform -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("version,edition", [("4.0", "Desktop"), ("5.0.10586.117", "Desktop"), ("7.4.6", "Core")])
def test_every_step_on_a_host_other_than_windows_powershell_5_1_fails_with_one_clear_envelope(version, edition):
    state = host()
    state.powershell_version = version
    before = snapshot(state)
    for name, data in [("facts", SITES), ("trust", {"thumbprint": backend_thumb(state), "dry_run": True}),
                       ("bind", bind_input(state, backend_thumb(state)))]:
        result = step(state, name, **data)
        assert (result["ok"], result["changed"], result["data"]) == (False, False, {})
        assert result["error"] == PLATFORM_ERROR.format(version=version, edition=edition)
    assert snapshot(state) == before


def test_the_sandbox_refuses_other_platforms_with_the_templates_own_words():
    template = (TEMPLATE_DIR / "_base.ps1.j2").read_text()
    assert "'" + PLATFORM_ERROR.replace("{version}", "{0}").replace("{edition}", "{1}") + "'" in template


# -- clone -----------------------------------------------------------------------------------------------------------
def test_clone_dry_run_predicts_a_change_and_creates_nothing():
    state = host("backend_expiring")
    before = snapshot(state)
    result = step(state, "clone", source_thumbprint=backend_thumb(state), dry_run=True, **CLONE)
    assert result["ok"] and result["changed"] and result["dry_run"]
    assert result["data"]["new_thumbprint"] is None
    assert snapshot(state) == before


def test_clone_creates_a_fresh_csp_certificate_with_the_same_names_and_a_new_key():
    state = host("backend_expiring")
    source = state.find("My", backend_thumb(state))
    result = step(state, "clone", source_thumbprint=source.thumbprint, dry_run=False, **CLONE)
    assert result["ok"] and result["changed"]
    data = result["data"]
    clone = state.find("My", data["new_thumbprint"])
    assert clone is not None and clone.friendly_name == "Microsoft Exchange"
    assert (data["provider"], data["provider_type"], data["key_accessible"]) == (CSP_PROVIDER, "CSP", True)
    assert clone.info["subject"] == source.info["subject"] and clone.info["dns_names"] == source.info["dns_names"]
    assert clone.key_pem != source.key_pem
    assert clone.network_service_read, "the clone template grants NETWORK SERVICE read, as SMTP assignment would"
    assert data["not_after"] > source.info["not_after"]
    assert backend_thumb(state) == source.thumbprint, "cloning binds nothing"


def test_clone_without_a_provider_lands_in_cng_and_warns():
    state = host()
    result = step(state, "clone", source_thumbprint=backend_thumb(state), dry_run=False, provider=None,
                  key_length=2048, hash_algorithm="SHA256", validity_years=5)
    assert result["data"]["provider_type"] == "CNG"
    assert any("KB 3032024" in w for w in result["warnings"])


def test_clone_of_a_certificate_not_in_my_fails_with_one_line():
    result = step(host(), "clone", source_thumbprint="AB" * 20, dry_run=False, **CLONE)
    assert not result["ok"] and not result["changed"] and "\n" not in result["error"]


# -- trust -----------------------------------------------------------------------------------------------------------
def test_trust_adds_the_public_part_to_root_once_dry_run_first():
    state = host("untrusted_internal_disallowed")
    thumb = backend_thumb(state)
    before = snapshot(state)
    dry = step(state, "trust", thumbprint=thumb, dry_run=True)
    assert dry["changed"] and dry["data"] == {"thumbprint": thumb, "present_before": False, "present_after": True}
    assert snapshot(state) == before
    real = step(state, "trust", thumbprint=thumb, dry_run=False)
    assert real["ok"] and real["changed"]
    root_copy = state.find("Root", thumb)
    assert root_copy is not None and root_copy.key_pem is None
    again = step(state, "trust", thumbprint=thumb, dry_run=False)
    assert again["ok"] and not again["changed"] and again["data"]["present_before"]
    assert sum(c.thumbprint == thumb for c in state.root) == 1


# -- bind ------------------------------------------------------------------------------------------------------------
def test_bind_dry_run_real_run_and_rerun_follow_the_ansible_trio():
    state = host("backend_expiring")
    old = backend_thumb(state)
    public_before = (public(state).binding_information, hash_of(public(state)))
    new = new_clone(state)
    before = snapshot(state)
    dry = step(state, "bind", **bind_input(state, new, moving_from=old, dry_run=True))
    assert dry["ok"] and dry["changed"] and snapshot(state) == before
    assert dry["data"]["after"] == {"backend": new, "loopback": new}
    real = step(state, "bind", **bind_input(state, new, moving_from=old))
    assert real["ok"] and real["changed"]
    assert real["data"]["before"] == {"backend": old, "loopback": old}
    assert real["data"]["after"] == {"backend": new, "loopback": new}
    assert hash_of(backend(state)) == new and hash_of(loopback(state)) == new
    assert (public(state).binding_information, hash_of(public(state))) == public_before, "the public 443 binding"
    again = step(state, "bind", **bind_input(state, new))
    assert again["ok"] and not again["changed"]


@pytest.mark.parametrize("public_spelling", [":443:", "*:443:"])
def test_bind_never_touches_the_public_443_binding_even_when_it_carries_the_old_certificate(public_spelling):
    state = host("default_site_on_backend_cert")
    public(state).binding_information = public_spelling
    old = backend_thumb(state)
    assert hash_of(public(state)) == old
    new = new_clone(state)
    result = step(state, "bind", **bind_input(state, new, moving_from=old))
    assert result["ok"] and hash_of(backend(state)) == new and hash_of(loopback(state)) == new
    assert (public(state).binding_information, hash_of(public(state))) == (public_spelling, old)


@pytest.mark.parametrize("public_spelling", [":443:", "*:443:"])
def test_bind_refuses_to_treat_the_public_binding_as_the_loopback_one(public_spelling):
    state = host("default_site_on_backend_cert")
    public(state).binding_information = public_spelling
    old = backend_thumb(state)
    new = new_clone(state)
    before = snapshot(state)
    result = step(state, "bind", **{**bind_input(state, new, moving_from=old), "loopback_binding": public_spelling})
    assert not result["ok"] and snapshot(state) == before
    assert "never touches the public binding" in result["error"] and "nothing changed" in result["error"]


def test_bind_leaves_the_loopback_binding_alone_unless_it_is_given_and_carries_loopback_from():
    state = host("backend_expiring")
    old = backend_thumb(state)
    new = new_clone(state)
    not_given = step(state, "bind", **{**bind_input(state, new), "loopback_from": old})
    assert not_given["ok"] and hash_of(backend(state)) == new and hash_of(loopback(state)) == old
    assert not_given["data"]["after"]["loopback"] is None, "a binding not given is not looked at"
    other = step(state, "bind", **bind_input(state, new, moving_from="CD" * 20))
    assert other["ok"] and not other["changed"] and hash_of(loopback(state)) == old


def test_bind_acts_on_the_exact_binding_text_it_is_given():
    state = host("backend_expiring")
    backend(state).binding_information = ":444:"  # all unassigned, spelled as the captured Default Web Site's 443
    new = new_clone(state)
    result = step(state, "bind", **bind_input(state, new))
    assert result["ok"] and result["changed"] and not result["data"]["created_backend_binding"]
    infos = [b.binding_information for b in state.sites[BACKEND_SITE].bindings if b.protocol == "https"]
    assert infos == [":444:"] and hash_of(backend(state)) == new


def test_bind_on_a_server_without_the_back_end_site_refuses_and_creates_nothing():
    state = host()
    thumb = backend_thumb(state)
    data = bind_input(state, thumb)
    del state.sites[BACKEND_SITE]
    result = step(state, "bind", **data)
    assert not result["ok"] and result["error"] == f"refusing to bind: IIS site {BACKEND_SITE} does not exist; " \
                                                   "nothing changed"
    assert BACKEND_SITE not in state.sites


def test_bind_fills_an_empty_444_binding_that_reports_no_hash():
    state = host("binding_empty")
    thumb = exchange_cert(state)
    result = step(state, "bind", **bind_input(state, thumb))
    assert result["ok"] and result["changed"] and not result["data"]["created_backend_binding"]
    assert result["data"]["before"]["backend"] is None and hash_of(backend(state)) == thumb


def test_bind_creates_the_catch_all_444_binding_only_when_backend_binding_is_null():
    state = host("binding_removed_by_update")
    thumb = exchange_cert(state)
    data = bind_input(state, thumb)
    assert data["backend_binding"] is None
    result = step(state, "bind", **data)
    assert result["ok"] and result["changed"] and result["data"]["created_backend_binding"]
    assert result["data"]["before"]["backend"] is None and result["data"]["after"]["backend"] == thumb
    assert [b.binding_information for b in state.sites[BACKEND_SITE].bindings if b.protocol == "https"] == ["*:444:"]


def test_bind_refuses_stale_facts_instead_of_creating_a_second_444_binding():
    state = host("backend_expiring")
    new = new_clone(state)
    before = snapshot(state)
    result = step(state, "bind", **{**bind_input(state, new), "backend_binding": None})
    assert not result["ok"] and snapshot(state) == before
    assert "out of date" in result["error"] and "*:444:" in result["error"]
    gone = host("binding_removed_by_update")
    result = step(gone, "bind", **{**bind_input(gone, exchange_cert(gone)), "backend_binding": "*:444:"})
    assert not result["ok"] and "has no https binding *:444:" in result["error"]


def test_bind_refuses_an_ip_specific_backend_binding_text():
    state = host("ip_specific_444")
    new = new_clone(state)
    before = snapshot(state)
    result = step(state, "bind", **{**bind_input(state, new), "backend_binding": "10.0.0.5:444:"})
    assert not result["ok"] and snapshot(state) == before and "not the all-unassigned" in result["error"]


def test_bind_reports_an_ip_specific_444_binding_and_never_creates_one():
    state = host("ip_specific_444")
    new = new_clone(state)
    result = step(state, "bind", **bind_input(state, new))
    assert result["ok"] and result["data"]["ip_specific_444"] == ["10.0.0.5:444:"]
    assert any("10.0.0.5:444:" in w and "SEC_E_BAD_BINDINGS" in w for w in result["warnings"])
    infos = [b.binding_information for b in state.sites[BACKEND_SITE].bindings if b.protocol == "https"]
    assert sorted(infos) == ["*:444:", "10.0.0.5:444:"]


@pytest.mark.parametrize("problem", ["not_in_my", "no_private_key", "cng", "key_inaccessible"])
def test_bind_refuses_an_unusable_certificate_before_changing_anything(problem):
    state = host("cng_backend" if problem == "cng" else "backend_expiring")
    if problem == "cng":
        thumb = backend_thumb(state)
        backend(state).certificate_hash = ""  # so binding it would be a change
    elif problem == "not_in_my":
        thumb = "AB" * 20
    else:
        thumb = new_clone(state)
        cert = state.find("My", thumb)
        if problem == "no_private_key":
            cert.key_pem = None
        else:
            cert.key_accessible = False
    before = snapshot(state)
    result = step(state, "bind", **bind_input(state, thumb))
    assert not result["ok"] and not result["changed"] and snapshot(state) == before
    assert result["error"].startswith("refusing to bind: ") and result["error"].endswith("; nothing changed")
    assert "\n" not in result["error"]


def test_bind_restores_the_previous_certificates_when_iis_fails_with_0x80070520():
    state = host("backend_expiring")
    old = backend_thumb(state)
    new = new_clone(state)
    before = snapshot(state)
    result = step(state, "bind", Faults(bind_com_error=True), **bind_input(state, new, moving_from=old))
    assert not result["ok"] and result["data"]["restored"]
    assert "0x80070520" in result["error"] and "A specified logon session does not exist" in result["error"]
    assert result["data"]["after"] == {"backend": old, "loopback": old}
    assert snapshot(state) == before


def test_a_failed_bind_on_a_removed_binding_leaves_no_empty_444_binding_behind():
    state = host("binding_removed_by_update")
    result = step(state, "bind", Faults(bind_com_error=True), **bind_input(state, exchange_cert(state)))
    assert not result["ok"] and result["data"]["restored"] and not result["data"]["created_backend_binding"]
    assert backend(state) is None


# -- restart ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["iisreset", "services"])
def test_restart_brings_a_stopped_w3svc_back_and_dry_run_only_predicts_it(method):
    state = host("w3svc_stopped")
    before = snapshot(state)
    dry = step(state, "restart", method=method, timeout_seconds=60, dry_run=True)
    assert dry["changed"] and snapshot(state) == before
    assert dry["ok"] and dry["data"]["w3svc_after"] == "Stopped", "a dry run reports the state it leaves, no failure"
    real = step(state, "restart", method=method, timeout_seconds=60, dry_run=False)
    assert real["ok"] and real["changed"]
    assert (real["data"]["w3svc_before"], real["data"]["w3svc_after"]) == ("Stopped", "Running")


def test_an_iisreset_timeout_leaves_w3svc_stopped_and_the_step_failed():
    state = host()
    result = step(state, "restart", Faults(iisreset_timeout=True), method="iisreset", timeout_seconds=60,
                  dry_run=False)
    assert not result["ok"] and result["changed"]
    assert result["data"]["w3svc_after"] == "Stopped" and state.services["W3SVC"] == "Stopped"
    assert "Stopped" in result["error"]


# -- cleanup ---------------------------------------------------------------------------------------------------------
def test_cleanup_removes_superseded_certificates_from_my_and_root_dry_run_first():
    state = host("duplicate_backend_certs")
    superseded = [c.thumbprint for c in state.my
                  if c.friendly_name == "Microsoft Exchange" and c.thumbprint != backend_thumb(state)]
    in_root = [t for t in superseded if state.find("Root", t)]
    before = snapshot(state)
    dry = step(state, "cleanup", thumbprints=superseded, dry_run=True, **SITES)
    assert dry["ok"] and dry["changed"] and snapshot(state) == before
    real = step(state, "cleanup", thumbprints=superseded, dry_run=False, **SITES)
    assert real["ok"] and real["changed"]
    assert real["data"] == {"removed_my": superseded, "removed_root": in_root, "refused": [], "kept_keys": []}
    assert all(state.find("My", t) is None and state.find("Root", t) is None for t in superseded)
    again = step(state, "cleanup", thumbprints=superseded, dry_run=False, **SITES)
    assert again["ok"] and not again["changed"]


def test_cleanup_refuses_a_certificate_that_is_still_bound_and_removes_the_others():
    state = host("duplicate_backend_certs")
    thumb = backend_thumb(state)
    expired = next(c.thumbprint for c in state.my if c.friendly_name == "Microsoft Exchange" and c.thumbprint != thumb)
    result = step(state, "cleanup", thumbprints=[thumb, expired], dry_run=False, **SITES)
    assert result["ok"] and result["changed"] and result["data"]["removed_my"] == [expired]
    assert result["data"]["refused"][0]["thumbprint"] == thumb
    assert "bound to Exchange Back End https *:444:" in result["data"]["refused"][0]["reason"]
    assert state.find("My", thumb) is not None


# A certificate serving TLS anywhere, not only on the two Exchange sites, is in use (real-server-shapes.md §4).
def in_use_elsewhere() -> tuple[HostState, dict[str, str]]:
    state = host("superseded_in_use_elsewhere")
    winrm = next(listener["CertificateThumbprint"] for listener in state.winrm_listeners
                 if listener["Transport"] == "HTTPS")
    bound = backend_thumb(state)
    shared = next(c.thumbprint for c in state.my if c.thumbprint != bound
                  and c.key_container == state.find("My", bound).key_container)
    roles = {"winrm": winrm, "third_site": state.binding("Contoso Intranet", "*:8443:").certificate_hash,
             "wmsvc": state.ssl_bindings["0.0.0.0!8172"], "shared_key": shared}
    roles["unused"] = next(c.thumbprint for c in state.my if c.friendly_name == "Microsoft Exchange"
                           and c.thumbprint not in {bound, *roles.values()})
    return state, roles


def test_cleanup_keeps_a_certificate_on_a_winrm_listener_a_third_site_or_wmsvc_and_says_where():
    state, roles = in_use_elsewhere()
    wanted = [roles["winrm"], roles["third_site"], roles["wmsvc"], roles["unused"]]
    result = step(state, "cleanup", thumbprints=wanted, dry_run=False, **SITES)
    assert result["ok"] and result["changed"]
    reasons = {r["thumbprint"]: r["reason"] for r in result["data"]["refused"]}
    assert reasons == {roles["winrm"]: "in use: the WinRM HTTPS listener *:5986",
                       roles["third_site"]: "in use: the http.sys SSL binding 0.0.0.0!8443",
                       roles["wmsvc"]: "in use: the http.sys SSL binding 0.0.0.0!8172"}
    assert result["data"]["removed_my"] == [roles["unused"]] and result["data"]["kept_keys"] == []
    assert all(state.find("My", roles[r]) is not None for r in ("winrm", "third_site", "wmsvc"))
    assert state.find("My", roles["unused"]) is None


def test_cleanup_removes_a_certificate_sharing_the_kept_ones_key_container_without_deleting_the_key():
    state, roles = in_use_elsewhere()
    bound = backend_thumb(state)
    result = step(state, "cleanup", thumbprints=[roles["shared_key"], roles["unused"]], dry_run=False, **SITES)
    assert result["ok"] and result["data"]["removed_my"] == [roles["shared_key"], roles["unused"]]
    assert result["data"]["kept_keys"] == [{"thumbprint": roles["shared_key"],
                                            "reason": f"its key container is shared with {bound}: the key stays"}]
    assert state.find("My", bound).key_accessible, "the bound certificate still opens its key"
    facts = step(state, "facts", friendly_name="Microsoft Exchange", **SITES)["data"]
    assert next(c for c in facts["certificates"] if c["thumbprint"] == bound)["key_accessible"] is True


def test_delete_key_takes_the_container_from_every_certificate_that_shares_it():
    """What cleanup avoids: ``Remove-Item -DeleteKey`` deletes the container (the Certificate provider's reference)."""
    from exbe.sandbox import windows
    state, roles = in_use_elsewhere()
    windows.remove_certificate(state, "My", roles["shared_key"], delete_key=True)
    assert state.find("My", backend_thumb(state)).key_accessible is False


def test_the_cleanup_summary_names_what_stayed_in_use_and_which_keys_stayed():
    from exbe.steps import get
    state, roles = in_use_elsewhere()
    result = step(state, "cleanup", thumbprints=[roles["winrm"], roles["shared_key"]], dry_run=False, **SITES)
    get("cleanup").check_result(result)
    line = get("cleanup").describe(result["data"], result["changed"], False)
    assert f"removed without the key: {roles['shared_key']} (its key container is shared with" in line
    assert f"kept 1 in use: {roles['winrm']} (in use: the WinRM HTTPS listener *:5986)" in line


# -- faults ----------------------------------------------------------------------------------------------------------
def test_the_step_fail_fault_is_a_terminating_error():
    with pytest.raises(TerminatingError, match="bind"):
        run_step(host(), "bind", {"thumbprint": "AB" * 20, "dry_run": True}, Faults(step_fail="bind"))


# -- what facts read (issue 20, item 6) --------------------------------------------------------------------------------
def test_facts_read_an_sni_binding_from_its_own_http_sys_entry_and_a_central_store_binding_as_carrying_none_of_my():
    """real-server-shapes.md §4: sslFlags bit 1 lives in http.sys as !port!host, bit 2 takes no certificate of My;
    neither is the 0.0.0.0!443 certificate of the public binding."""
    state = host("sni_and_ccs_bindings")
    superseded = next(c.thumbprint for c in state.my if c.friendly_name == "Microsoft Exchange"
                      and c.thumbprint != backend_thumb(state))
    bindings = {b["binding_information"]: b for b in step(state, "facts", friendly_name="Microsoft Exchange",
                                                          **SITES)["data"]["bindings"]}
    sni, ccs = bindings["*:443:legacy.contoso.com"], bindings["*:443:ccs.contoso.com"]
    assert (sni["certificate_hash"], sni["ssl_flags"]) == (superseded, 1)
    assert (ccs["certificate_hash"], ccs["ssl_flags"]) == ("", 2)
    assert bindings[":443:"]["certificate_hash"] == hash_of(public(state))


def test_cleanup_refuses_a_certificate_an_sni_binding_carries():
    state = host("sni_and_ccs_bindings")
    superseded = next(c.thumbprint for c in state.my if c.friendly_name == "Microsoft Exchange"
                      and c.thumbprint != backend_thumb(state))
    result = step(state, "cleanup", thumbprints=[superseded], dry_run=False, **SITES)
    assert result["data"]["refused"] == [{"thumbprint": superseded,
                                          "reason": "in use: bound to Default Web Site https *:443:legacy.contoso.com"}]


@pytest.mark.parametrize("value,read,warned", [(0, 0, False), ("0", 0, False), (" 1 ", 1, False),
                                               ("false", None, True), (None, None, False)])
def test_facts_read_allow_internal_untrusted_certs_whatever_its_registry_type(value, read, warned):
    state = host()
    state.allow_internal_untrusted_certs = value
    result = step(state, "facts", friendly_name="Microsoft Exchange", **SITES)
    assert result["ok"] and result["data"]["allow_internal_untrusted_certs"] == read
    assert any("AllowInternalUntrustedCerts is not a number" in w for w in result["warnings"]) == warned


def test_a_vendor_csp_key_is_a_csp_key_and_bind_accepts_it():
    """CSP or CNG comes from the key's provider information, not from a list of Microsoft's provider names."""
    state = host("legacy_csp_vendor")
    thumb = backend_thumb(state)
    facts = step(state, "facts", friendly_name="Microsoft Exchange", **SITES)["data"]
    assert next(c for c in facts["certificates"] if c["thumbprint"] == thumb)["provider_type"] == "CSP"
    result = step(state, "bind", **bind_input(state, thumb))
    assert result["ok"] and not result["changed"], result["error"]

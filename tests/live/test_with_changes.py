"""With ``EXBE_LIVE_ALLOW_CHANGES=1``: the renew chain on the live host, a second run that changes nothing, cleanup,
and binding certificates without a usable key. docs/live-testing.md lists what each test leaves on the host."""

from __future__ import annotations

import dataclasses

import pytest

from exbe.facts import HostFacts
from exbe.model import Settings
from exbe.selection import frontend_binding, loopback_binding

from .conftest import Exbe
from .state import bound_on_444, facts_of, snapshot
from .target import ExbeRun, LiveTarget

pytestmark = pytest.mark.live


@dataclasses.dataclass(frozen=True)
class Renewal:
    before: HostFacts
    run: ExbeRun
    after: HostFacts

    @property
    def old(self) -> str:
        return str(self.run.server["old_thumbprint"])

    @property
    def new(self) -> str:
        return str(self.run.server["new_thumbprint"])


@pytest.fixture(scope="module")
def renewal(exbe: Exbe, changes: LiveTarget) -> Renewal:
    """``exbe renew --force --restart-iis``, once, between two reads of the host."""
    before = facts_of(exbe("preflight"))
    run = exbe("renew", "--force", "--restart-iis")
    return Renewal(before, run, facts_of(exbe("preflight")))


def test_a_forced_renewal_replaces_trusts_binds_restarts_and_verifies(renewal: Renewal, target: LiveTarget) -> None:
    run = renewal.run
    assert run.code == 0, run.explain()
    assert renewal.old == bound_on_444(renewal.before) and renewal.new != renewal.old
    assert run.step("renew")["data"]["method"] == ("exchange" if target.exchange else "clone")
    assert [run.step(name)["status"] for name in ("renew", "trust", "bind", "restart", "verify")] == \
        ["changed", "changed", "changed", "changed", "ok"], run.explain()
    assert bound_on_444(renewal.after) == renewal.new
    assert renewal.after.in_root(renewal.new)
    probe = run.checks()["tls_444_serves_bound"]
    assert probe["status"] == "pass" and probe["value"] == renewal.new, "port 444 serves the new certificate"


def test_the_new_certificate_keeps_the_old_names_with_a_usable_key_in_a_legacy_csp(renewal: Renewal) -> None:
    old, new = renewal.before.certificate(renewal.old), renewal.after.certificate(renewal.new)
    assert old is not None and new is not None
    assert (new.subject, set(new.dns_names), new.friendly_name) == (old.subject, set(old.dns_names), old.friendly_name)
    assert (new.provider_type, new.key_accessible, new.self_signed) == ("CSP", True, True), new
    assert new.key_size >= 2048 and new.not_after > old.not_after
    assert renewal.after.certificate(renewal.old) is not None, "renew removes nothing; cleanup does, later"


def test_the_loopback_binding_follows_and_the_public_443_binding_is_untouched(renewal: Renewal) -> None:
    settings = Settings()
    loopback_before = loopback_binding(renewal.before, settings)
    loopback_after = loopback_binding(renewal.after, settings)
    if loopback_before is not None and loopback_before.certificate_hash == renewal.old:
        assert loopback_after is not None and loopback_after.certificate_hash == renewal.new
    public_before, public_after = frontend_binding(renewal.before, settings), frontend_binding(renewal.after, settings)
    assert public_after == public_before


def test_a_second_run_changes_nothing(renewal: Renewal, exbe: Exbe) -> None:
    run = exbe("renew", "--restart-iis")
    assert run.code == 0, run.explain()
    assert [name for name, step in run.steps.items() if step["changed"]] == [], run.explain()
    assert run.step("renew")["message"].startswith("not needed")
    assert run.step("restart")["status"] == "skipped"
    assert snapshot(facts_of(exbe("preflight"))) == snapshot(renewal.after)


def test_cleanup_keeps_everything_in_use_and_a_second_cleanup_changes_nothing(renewal: Renewal, exbe: Exbe,
                                                                              target: LiveTarget) -> None:
    run = exbe("cleanup")
    assert run.code == 0, run.explain()
    cleanup = run.step("cleanup")
    removed = set(cleanup["data"].get("removed_my") or [])
    after = facts_of(exbe("preflight"))
    assert renewal.new not in removed and bound_on_444(after) == renewal.new and after.in_root(renewal.new)
    assert not any(after.bindings_of(thumbprint) for thumbprint in removed)
    if not target.exchange:  # no service assignments to go by: exbe keeps every superseded certificate, and says so
        assert removed == set() and after.certificate(renewal.old) is not None, cleanup
        assert any("service assignments unknown" in warning for warning in cleanup["warnings"]), cleanup
    again = exbe("cleanup")
    assert again.code == 0 and not again.step("cleanup")["changed"], again.explain()


def test_binding_a_certificate_without_a_usable_key_is_refused_and_444_keeps_its_certificate(
        exbe: Exbe, changes: LiveTarget) -> None:
    if not changes.unusable_thumbprints:
        pytest.skip("set EXBE_LIVE_UNUSABLE_THUMBPRINTS to certificates in LocalMachine\\My without a usable key")
    bound = bound_on_444(facts_of(exbe("preflight")))
    for thumbprint in changes.unusable_thumbprints:
        run = exbe("bind", "--thumbprint", thumbprint)
        assert run.code == 1, run.explain()
        bind = run.step("bind")
        assert bind["status"] == "failed" and ("refusing to bind" in bind["message"] or "restored" in bind["message"])
        assert bound_on_444(facts_of(exbe("preflight"))) == bound, f"444 changed after binding {thumbprint}"
    checks = exbe("verify").checks()
    assert checks["tls_444_serves_bound"]["status"] == "pass" and checks["tls_444_serves_bound"]["value"] == bound
    assert checks["backend_binding_present"]["status"] == "pass"

"""A split binding: ``*:444:`` on the back-end certificate B, Default Web Site's ``127.0.0.1:443:`` on another
self-signed "Microsoft Exchange" certificate C (a superseded or duplicate back-end certificate, as two runs at once made
before exbe locked servers). On real servers the loopback binding carries the same self-signed certificate as
``*:444:`` when it carries a self-signed one (real-server-shapes.md §1): verify says so and bind repairs it. A
CA-issued certificate on the loopback binding is the admin's choice and is never touched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exbe.sandbox import windows
from exbe.sandbox.fleet import Fleet
from exbe.sandbox.state import BACKEND_BINDING, BACKEND_SITE, FRONTEND_BINDING, FRONTEND_SITE, LOOPBACK_BINDING

from . import sandbox_probe as probe


def split(fleet: Fleet) -> tuple[str, str]:
    """Put a duplicate of the back-end certificate B in My and on 127.0.0.1:443:; returns (B, C)."""
    host = fleet.host("exch01")
    with host.lock:
        state = host.state
        backend = state.binding(BACKEND_SITE, BACKEND_BINDING).certificate_hash
        duplicate = windows.new_self_signed_clone(state, state.find("My", backend), provider=None, key_length=2048,
                                                  hash_algorithm="sha256", validity_years=5)
        duplicate.provider = "Microsoft RSA SChannel Cryptographic Provider"
        state.binding(FRONTEND_SITE, LOOPBACK_BINDING).certificate_hash = duplicate.thumbprint
        host.save()
    return backend.upper(), duplicate.thumbprint


def loopback_check(record: Path) -> dict:
    steps = json.loads(record.read_text())["servers"][0]["steps"]
    return next(c for s in steps for c in s.get("checks", []) if c["id"] == "loopback_443")


@pytest.mark.parametrize("repair", [("bind",), ("renew",)], ids=["bind", "renew"])
def test_a_split_loopback_binding_fails_verify_naming_both_certificates_and_a_rerun_repairs_it(start_fleet, exbe,
                                                                                               tmp_path, repair):
    fleet = start_fleet([("exch01", "healthy")])
    backend, duplicate = split(fleet)
    public = probe.binding(probe.facts(fleet), FRONTEND_SITE, FRONTEND_BINDING)

    record = tmp_path / "verify.json"
    assert exbe(fleet, "verify", "--server", "exch01", "--json", str(record)).code == 1
    check = loopback_check(record)
    assert check["status"] == "fail"
    assert check["message"] == (
        f"EXCH01: Default Web Site 127.0.0.1:443: carries the self-signed {duplicate}, not the back-end certificate "
        f"{backend} of Exchange Back End *:444: (a split binding: a superseded or duplicate back-end certificate); "
        f"`exbe bind` moves it to {backend}")

    result = exbe(fleet, *repair, "--server", "exch01")
    assert result.code == 0, result.out
    after = probe.facts(fleet)
    assert probe.binding(after, BACKEND_SITE, BACKEND_BINDING) == backend
    assert probe.binding(after, FRONTEND_SITE, LOOPBACK_BINDING) == backend
    assert probe.binding(after, FRONTEND_SITE, FRONTEND_BINDING) == public, "the public binding is never touched"

    again = tmp_path / "again.json"
    assert exbe(fleet, "verify", "--server", "exch01", "--json", str(again)).code == 0
    assert loopback_check(again)["status"] == "pass"


def test_a_ca_issued_certificate_on_the_loopback_binding_passes_and_stays_through_renew_and_bind(start_fleet, exbe,
                                                                                                 tmp_path):
    fleet = start_fleet([("exch01", "healthy")])
    split(fleet)  # a superseded self-signed one in My too: still not the loopback's business
    host = fleet.host("exch01")
    with host.lock:
        ca_issued = host.state.binding(FRONTEND_SITE, FRONTEND_BINDING).certificate_hash
        host.state.binding(FRONTEND_SITE, LOOPBACK_BINDING).certificate_hash = ca_issued
        host.save()
    assert not host.state.find("My", ca_issued).info["self_signed"]

    record = tmp_path / "verify.json"
    exbe(fleet, "verify", "--server", "exch01", "--json", str(record))
    assert loopback_check(record)["status"] == "pass"
    for command in (("bind",), ("renew", "--force")):
        assert exbe(fleet, *command, "--server", "exch01").code == 0
        assert probe.binding(probe.facts(fleet), FRONTEND_SITE, LOOPBACK_BINDING) == ca_issued, command

"""The sandbox's secrets — its password, private keys and host states holding keys — are owner-only from the moment
each file exists, and its key cache is the user's own (issue 13, item 6)."""

from __future__ import annotations

import logging
import os
import socket
import ssl
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from exbe.sandbox import certs
from exbe.sandbox.fleet import Fleet

from ..conftest import PASSWORD, USERNAME


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """umask 0: a file created without an explicit mode would be world-readable and -writable (0666)."""
    previous = os.umask(0)
    yield
    os.umask(previous)


@pytest.fixture
def chmods(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every chmod the code under test makes: tightening a file after creating it leaves a window."""
    calls: list[str] = []
    real = os.chmod

    def recording(path: str | os.PathLike[str] | int, *args: object, **kwargs: object) -> None:
        calls.append(str(path))
        real(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "chmod", recording)
    return calls


def _handshake_444(port: int) -> None:
    """Connect to the 444 listener so that it writes the PEM of the certificate it serves."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, context.wrap_socket(raw) as tls:
        tls.sendall(b"GET / HTTP/1.1\r\nHost: exch01\r\nConnection: close\r\n\r\n")
        tls.recv(1024)


def test_every_sandbox_secret_is_created_owner_only_even_under_a_permissive_umask(tmp_path, permissive_umask,
                                                                                 chmods):
    state_dir = tmp_path / "state"
    with Fleet(state_dir, [("exch01", "healthy")], username=USERNAME, password=PASSWORD) as fleet:
        credentials = fleet.write_credentials()
        _handshake_444(fleet.ports("exch01")["backend"])
        served = list((state_dir / "tls").glob("*.pem"))
    secrets = [credentials, state_dir / "ntlm-users", state_dir / "winrm-https.key", state_dir / "sandbox-ca.key",
               state_dir / "exch01.json", *served]
    assert len(served) == 1, "the certificate the 444 listener served, with its key"
    assert {p.name: mode(p) for p in secrets} == {p.name: 0o600 for p in secrets}
    assert mode(state_dir) == 0o700 and mode(state_dir / "tls") == 0o700
    assert not [c for c in chmods if c.startswith(str(state_dir))], "no file is narrowed after it was created"
    assert PASSWORD.replace("'", "'\"'\"'") in credentials.read_text(), "the shell-quoted password, for `. file`"


def test_a_state_file_written_again_after_a_change_stays_owner_only(tmp_path, permissive_umask):
    with Fleet(tmp_path / "state", [("exch01", "healthy")], username=USERNAME, password=PASSWORD) as fleet:
        host = fleet.host("exch01")
        host.state.services["W3SVC"] = "Stopped"
        host.save()
        assert '"W3SVC": "Stopped"' in host.state_path.read_text() and mode(host.state_path) == 0o600
    assert not list((tmp_path / "state").glob(".*.tmp")), "no temporary file is left behind"


@pytest.fixture
def fresh_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process whose key pool is not created yet, with no EXBE_SANDBOX_KEY_CACHE."""
    monkeypatch.setattr(certs, "_POOL", None)
    monkeypatch.delenv("EXBE_SANDBOX_KEY_CACHE", raising=False)


def test_the_key_cache_is_in_the_users_cache_directory_and_only_theirs(tmp_path, monkeypatch, fresh_pool):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    pool = certs.key_pool()
    assert pool.cache_dir == tmp_path / "cache" / "exbe" / "sandbox-keys"
    assert mode(pool.cache_dir) == 0o700
    pool.key(1024)
    cached = sorted(pool.cache_dir.glob("rsa1024-*.pem"))
    assert cached and {mode(p) for p in cached} == {0o600}


def test_without_xdg_cache_home_the_key_cache_is_under_the_home_directory(tmp_path, monkeypatch, fresh_pool):
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert certs.key_pool().cache_dir == tmp_path / "home" / ".cache" / "exbe" / "sandbox-keys"


def test_a_key_cache_directory_others_can_enter_is_narrowed_to_its_owner(tmp_path, monkeypatch, fresh_pool):
    cache = tmp_path / "keys"
    cache.mkdir()
    cache.chmod(0o777)
    monkeypatch.setenv("EXBE_SANDBOX_KEY_CACHE", str(cache))
    assert certs.key_pool().cache_dir == cache and mode(cache) == 0o700


@pytest.mark.parametrize("planted", ["symbolic link", "another user's directory"])
def test_a_key_cache_someone_else_controls_is_not_used(tmp_path, monkeypatch, fresh_pool, caplog, planted):
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    cache = tmp_path / "keys"
    if planted == "symbolic link":
        cache.symlink_to(target)
    else:
        cache.mkdir(mode=0o700)
        owner = cache.stat().st_uid
        monkeypatch.setattr(os, "getuid", lambda: owner + 1)
    monkeypatch.setenv("EXBE_SANDBOX_KEY_CACHE", str(cache))
    with caplog.at_level(logging.WARNING, logger="exbe.sandbox"):
        pool = certs.key_pool()
    assert pool.cache_dir is None, "keys are generated in memory instead"
    assert "sandbox key cache disabled" in caplog.text and str(cache) in caplog.text
    assert not list(target.iterdir())

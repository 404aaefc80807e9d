# ruff: noqa: F811 - the shared fixtures (tests/auth_org.py) are imported, then named as test parameters
"""The PFX password of `exbe auth`'s import never leaves memory except as a SecureString under PSRP's session key,
and the sandbox holds exbe to that: a SecureString sent without the key exchange fails as a Windows PowerShell 5.1
server fails it."""

from __future__ import annotations

import base64
import logging
import os
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import pkcs12
from pypsrp.complex_objects import PSInvocationState
from pypsrp.powershell import PowerShell
from pypsrp.serializer import TaggedValue

from exbe import auth_import
from exbe.http_transport import HttpTransport
from exbe.sandbox import certs
from exbe.sandbox.authconfig import Organization
from exbe.sandbox.fleet import Fleet
from exbe.sandbox.psrp import KEY_EXCHANGE_FAILED
from exbe.sandbox.state import utcnow

from .auth_org import Exbe, exbe, org, real_time, world  # noqa: F401 - pytest fixtures, used as parameters
from .sandbox.test_protocol import exchange_pool

_BASE64 = re.compile(rb"[A-Za-z0-9+/]{24,}={0,2}")


def forms(secret: str) -> list[bytes]:
    """How the password would look if it leaked: as text, as UTF-16 (a .NET string, a CLIXML <S>), as Base64."""
    return [secret.encode(), secret.encode("utf-16-le"), base64.b64encode(secret.encode())]


def decoded(message: bytes) -> list[bytes]:
    """A WSMan message and every Base64 run in it decoded (PSRP fragments: the CLIXML of commands and arguments)."""
    found = [message]
    for run in _BASE64.findall(message):
        try:
            found.append(base64.b64decode(run + b"=" * (-len(run) % 4)))
        except ValueError:
            continue
    return found


def pfx_of_a_new_certificate() -> tuple[bytes, str]:
    now = utcnow()
    pem, key = certs.make_self_signed("Imported", [], now, now.replace(year=now.year + 1), key_index=5)
    data = pkcs12.serialize_key_and_certificates(b"x", certs.load_key(key), certs.load_cert(pem), None,
                                                 serialization.BestAvailableEncryption(b"pfx password"))
    return data, certs.thumbprint(pem)


def test_the_password_appears_in_no_output_report_log_file_or_wire_bytes_before_encryption(
        world: tuple[Fleet, Organization], org: Organization, exbe: Exbe, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    current = org.set_auth(400)["current"]
    two = org.members[1]
    org.not_replicating.add(two.name)
    two.state.my.remove(two.state.find("My", current))
    made: list[str] = []
    real = auth_import.secrets.token_urlsafe
    monkeypatch.setattr(auth_import.secrets, "token_urlsafe", lambda n: made.append(real(n)) or made[-1])
    sent: list[bytes] = []
    send = HttpTransport.send  # every WSMan message, before encryption
    monkeypatch.setattr(HttpTransport, "send", lambda self, message, **kw: sent.append(message) or send(
        self, message, **kw))
    caplog.set_level(logging.DEBUG)
    reports = tmp_path / "reports"
    reports.mkdir()
    result, record = exbe("auth", "--verbose", "--junit", str(reports / "auth.xml"), "--metrics",
                          str(reports / "auth.prom"))
    assert result.code == 0, result.out + result.err
    assert two.state.find("My", current) is not None  # the import happened
    (password,) = made
    leaks = forms(password)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]  # reports, the JSON record, the sandbox's state
    assert world[0].state_dir.is_relative_to(tmp_path)
    assert {p.name for p in written} >= {"auth.xml", "auth.prom", "run1.json"}
    for path in written:
        assert not any(leak in path.read_bytes() for leak in leaks), path
    for text in (result.out, result.err, caplog.text, str(record)):
        assert not any(leak.decode("latin-1") in text for leak in leaks)
    blobs = [blob for message in sent for blob in decoded(message)]
    assert not any(leak in blob for blob in blobs for leak in leaks), "the password crossed the wire in clear"
    secure = [blob for blob in blobs if b"<SS" in blob]
    assert len(secure) >= 2, "the export's argument and the import's -Password both travel as SecureStrings"
    assert any(b"Import-ExchangeCertificate" in blob for blob in secure)
    keys = [blob for blob in blobs if b'N="PublicKey"' in blob]
    assert len(keys) == 2, "one key exchange per pool with a SecureString: the source's WinRM, the home's Exchange"


def test_the_sandbox_fails_a_secure_string_sent_without_the_key_exchange_as_windows_powershell_does(
        world: tuple[Fleet, Organization]) -> None:
    fleet, org = world
    data, thumb = pfx_of_a_new_certificate()
    with exchange_pool(fleet) as pool:
        # a client that encrypts with a key of its own, never exchanged: the server has no way to read it
        pool._serializer.cipher = Cipher(algorithms.AES(os.urandom(32)), modes.CBC(b"\x00" * 16))
        ps = PowerShell(pool)
        ps.add_cmdlet("Import-ExchangeCertificate").add_parameter("FileData", data)
        ps.add_parameter("Password", TaggedValue("SS", "pfx password"))
        ps.invoke()
        assert ps.state == PSInvocationState.FAILED
        assert [str(e) for e in ps.streams.error][-1].startswith(KEY_EXCHANGE_FAILED)
    assert org.members[0].state.find("My", thumb) is None
    with exchange_pool(fleet) as pool:  # after PUBLIC_KEY / ENCRYPTED_SESSION_KEY the same call imports it
        pool.exchange_keys()
        ps = PowerShell(pool)
        ps.add_cmdlet("Import-ExchangeCertificate").add_parameter("FileData", data)
        ps.add_parameter("Password", TaggedValue("SS", "pfx password"))
        ps.invoke()
        assert ps.state == PSInvocationState.COMPLETED and not ps.streams.error, [str(e) for e in ps.streams.error]
    assert org.members[0].state.find("My", thumb) is not None

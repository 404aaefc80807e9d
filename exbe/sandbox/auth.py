"""HTTP authentication as WinRM does it: Negotiate/NTLM with message encryption, Basic only over HTTPS.

One :class:`ConnectionAuth` lives per TCP connection (HTTP keep-alive carries the security context, as on Windows).
NTLM stands in for Kerberos, which is not simulated. pyspnego's NTLM acceptor reads its accounts from the file named
by ``NTLM_USER_FILE`` (``DOMAIN:USER:PASSWORD`` lines); :func:`install_accounts` writes it.
"""

from __future__ import annotations

import base64
import hmac
import os
import re
import struct
from pathlib import Path

import spnego
import spnego.exceptions

from .private import write_private

MIME_BOUNDARY = "Encrypted Boundary"
SPNEGO_PROTOCOL = "application/HTTP-SPNEGO-session-encrypted"


def install_accounts(path: Path, username: str, password: str) -> None:
    """Write the NTLM account file (owner-only) and point pyspnego's acceptor at it (process-wide, like a machine's
    SAM)."""
    domain, _, user = username.rpartition("\\")
    write_private(path, f"{domain}:{user}:{password}\n")
    os.environ["NTLM_USER_FILE"] = str(path)


class AuthFailed(Exception):
    """The client's credentials were refused: answer 401 without a token."""


class ConnectionAuth:
    """Authentication and message-encryption state of one HTTP connection."""

    def __init__(self, *, tls: bool, username: str, password: str) -> None:
        self.tls = tls
        self._username = username
        self._password = password
        self._context: spnego.ContextProxy | None = None
        self.authenticated = False

    def challenge_headers(self) -> list[tuple[str, str]]:
        """WWW-Authenticate offers for an unauthenticated request."""
        offers = [("WWW-Authenticate", "Negotiate")]
        if self.tls:
            offers.append(("WWW-Authenticate", 'Basic realm="WSMAN"'))
        return offers

    @property
    def encrypting(self) -> bool:
        return self._context is not None and self.authenticated and not self.tls

    def step(self, authorization: str) -> str | None:
        """Process an Authorization header. Returns the token to send back (or None); raises AuthFailed."""
        scheme, _, value = authorization.partition(" ")
        scheme = scheme.lower()
        if scheme == "basic":
            if not self.tls:
                raise AuthFailed("Basic authentication over HTTP is refused")
            try:
                user, _, password = base64.b64decode(value).decode("utf-8").partition(":")
            except ValueError:
                raise AuthFailed("malformed Basic header") from None
            if not (_same_user(user, self._username) and hmac.compare_digest(password, self._password)):
                raise AuthFailed("wrong user name or password")
            self.authenticated = True
            return None
        if scheme not in ("negotiate", "ntlm"):
            raise AuthFailed(f"unsupported scheme {scheme}")
        if self._context is None or self.authenticated:
            self._context = spnego.server(protocol="negotiate", options=spnego.NegotiateOptions.wrapping_winrm)
            self.authenticated = False
        try:
            out = self._context.step(base64.b64decode(value))
        except (spnego.exceptions.SpnegoError, ValueError) as exc:
            self._context = None
            raise AuthFailed(str(exc)) from None
        if self._context.complete:
            self.authenticated = True
        return base64.b64encode(out).decode() if out else None

    def unwrap(self, body: bytes, content_type: str) -> bytes:
        """Decrypt a ``multipart/encrypted`` body (pypsrp's WinRMEncryption format)."""
        assert self._context is not None
        match = re.search(r'boundary="?([^";]+)"?', content_type)
        boundary = match.group(1) if match else MIME_BOUNDARY
        parts = [p for p in re.split(rb"--\s*" + re.escape(boundary.encode()) + rb"\r\n", body) if p]
        message = b""
        for i in range(0, len(parts) - 1, 2):
            length = int(parts[i].split(b"Length=")[1].strip())
            payload = re.sub(rb"--\s*" + re.escape(boundary.encode()) + rb"--\r\n$", b"", parts[i + 1])
            payload = payload.replace(b"\tContent-Type: application/octet-stream\r\n", b"")
            header_len = struct.unpack("<i", payload[:4])[0]
            plain = self._context.unwrap_winrm(payload[4 : 4 + header_len], payload[4 + header_len :])
            if len(plain) != length:
                raise ValueError("encrypted length mismatch")
            message += plain
        return message

    def wrap(self, message: bytes) -> tuple[str, bytes]:
        """Encrypt a response body; returns (content type, body)."""
        assert self._context is not None
        header, data, padding = self._context.wrap_winrm(message)
        head = "\r\n".join(
            [
                f"--{MIME_BOUNDARY}",
                f"\tContent-Type: {SPNEGO_PROTOCOL}",
                f"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length={len(message) + padding}",
                f"--{MIME_BOUNDARY}",
                "\tContent-Type: application/octet-stream",
                "",
            ]
        ).encode()
        body = head + struct.pack("<i", len(header)) + header + data + f"--{MIME_BOUNDARY}--\r\n".encode()
        content_type = f'multipart/encrypted;protocol="{SPNEGO_PROTOCOL}";boundary="{MIME_BOUNDARY}"'
        return content_type, body


def _same_user(given: str, expected: str) -> bool:
    """Compare user names as Windows does: case-insensitive, with or without the domain part."""
    given_l, expected_l = given.lower(), expected.lower()
    return given_l == expected_l or given_l == expected_l.rpartition("\\")[2]

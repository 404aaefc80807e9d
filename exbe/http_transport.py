"""The HTTP beneath pypsrp's ``WSMan``: one keep-alive connection per endpoint (issue 26).

pypsrp 0.9.1 sends each WSMan envelope through a requests ``Session``; per request that costs more CPU than the
protocol's own work (merging the session's settings, preparing the request, urllib3's pool, the response hooks), most
of what separated exbe from the floor. pypsrp's ``WSMan`` only calls its transport's ``send(message, *,
retries_on_read_timeout, timeout)``, ``close()`` and reads ``endpoint``; :class:`HttpTransport` is that transport:
``http.client`` opens the connection (TLS, a proxy's tunnel), :mod:`exbe.http_wire` carries each request and answer
on it. It does what pypsrp's transport did, and what exbe added around it, in one place:

* **Authentication** as pypsrp's: Negotiate, NTLM and Kerberos with pyspnego (the same context options, SPN service
  and channel binding token from the TLS certificate, RFC 5929), WinRM message encryption with pypsrp's
  ``WinRMEncryption`` when the connection needs it (NTLM/Kerberos over HTTP), Basic on every request. The same
  requests on the wire as pypsrp: with encryption, a blank request and the handshake before the first message;
  without, the message itself carries the handshake. CredSSP is not here: :func:`usable` sends it through pypsrp's
  own transport (requests-credssp), as before.
* **TLS** as requests': the certificate is validated against the inventory's ``ca_file``, else
  ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``, else certifi's bundle (what requests uses), with urllib3's context
  (TLS 1.2 or later, hostname checked); ``cert_validation: false`` switches both off.
* **Proxies** from the environment (``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY``/``NO_PROXY``), resolved once per
  endpoint as requests resolves them: HTTPS through an ``http://`` proxy's CONNECT tunnel, HTTP through it directly.
  A proxy reached otherwise (``https://``, SOCKS) goes through pypsrp's transport (:func:`usable`).
* **Refusals**: a redirect is never followed (:class:`~exbe.wsman_connection.RedirectRefused`); with message
  encryption an answer in plaintext is refused (:class:`UnencryptedResponse`).
* **The server's deadline** (:mod:`exbe.deadline`): no request starts after it, each waits at most the time left.
* **Errors** are requests' exception types with requests' words (``ConnectTimeout``, ``ReadTimeout``,
  ``ConnectionError`` "Connection aborted.", ``SSLError``), and pypsrp's (``AuthenticationError``,
  ``WinRMTransportError``): :func:`exbe.transport.classify` reads both transports' failures alike, and pypsrp's
  ``WSMan`` turns an HTTP 500 into its WSMan fault as before.
* A kept-alive connection the server closed while idle is noticed before it is used, and a new one is opened (and
  authenticated), as urllib3 does.
"""

from __future__ import annotations

import base64
import functools
import http.client
import logging
import os
import re
import ssl
import time
import urllib.parse
from typing import TYPE_CHECKING, Any

from .deadline import CURRENT, Deadline, request_timeouts
from .http_wire import BrokenAnswer, HttpWire

if TYPE_CHECKING:
    from .inventory import Server

log = logging.getLogger("exbe.transport")

#: Authentication whose security context belongs to the connection (a new connection authenticates anew).
CONNECTION_AUTH = ("negotiate", "ntlm", "kerberos")
#: What pypsrp's session sends with every request (its User-Agent; ``identity``: IIS would compress otherwise).
BASE_HEADERS = {"User-Agent": "Python PSRP Client", "Accept-Encoding": "identity", "Accept": "*/*",
                "Connection": "Keep-Alive"}
ENCRYPTED_TYPES = ("multipart/encrypted;", "multipart/x-multi-encrypted;")
_BOUNDARY = re.compile("boundary=[" '|\\"](.*)[' '|\\"]')


class UnencryptedResponse(Exception):
    """A server answered in plaintext on a connection whose messages must be encrypted (NTLM/Kerberos over HTTP)."""


def usable(server: Server, proxy: str | None) -> bool:
    """Whether :class:`HttpTransport` carries this endpoint: not for CredSSP, nor through a proxy other than
    ``http://`` (those keep pypsrp's requests transport)."""
    return server.auth != "credssp" and (proxy is None or proxy.lower().startswith("http://"))


def environment_proxy(endpoint: str) -> str | None:
    """The proxy the environment names for ``endpoint``, as requests resolves it (``NO_PROXY`` honoured). Where the
    environment names no proxy at all (decided once per environment: requests' look costs more than a request),
    there is nothing to resolve."""
    import requests.utils

    if not _proxies_named(_environment()):
        return None
    return requests.utils.select_proxy(endpoint, requests.utils.get_environ_proxies(endpoint)) or None


def _environment() -> tuple[tuple[Any, Any], ...]:
    """The environment as a cache key: CPython's own mapping behind ``os.environ``, read without decoding every
    variable (twice per server, eighty-odd variables on a build agent)."""
    data = getattr(os.environ, "_data", None)
    return tuple(data.items()) if isinstance(data, dict) else tuple(os.environ.items())


@functools.lru_cache(maxsize=2)
def _proxies_named(environment: tuple[tuple[Any, Any], ...]) -> bool:
    """Whether requests would find any proxy for this environment (``urllib.request.getproxies``: the variables, and
    on Windows the Internet settings when they name none); ``environment`` is the cache's key."""
    import urllib.request

    return bool(urllib.request.getproxies())


class HttpTransport:
    """pypsrp's transport interface on one kept-alive connection (see the module's docstring). Its settings are those
    of pypsrp's own transport for the endpoint (URL, TLS validation, auth, credentials, timeouts), and for Negotiate,
    NTLM and Kerberos the ``HTTPNegotiateAuth`` pypsrp would have used (provider, SPN service, CBT, delegation)."""

    def __init__(self, pypsrp_transport: Any, *, server: Server, endpoint_name: str, proxy: str | None) -> None:
        from pypsrp.negotiate import HTTPNegotiateAuth

        t = pypsrp_transport
        self.endpoint: str = t.endpoint
        self.wrap_required: bool = bool(t.wrap_required)
        self.connection_timeout: float = t.connection_timeout
        self.read_timeout: float = t.read_timeout
        self.reconnection_backoff: float = t.reconnection_backoff
        self.username = t.username
        self.auth_name: str = t.auth
        self.encryption: Any = None  # pypsrp's WinRMEncryption once authenticated (message encryption only)
        self._server = server
        self._endpoint_name = endpoint_name
        self._deadline: Deadline | None = CURRENT.get()
        url = urllib.parse.urlsplit(self.endpoint)
        self._host = url.hostname or ""
        self._tls = url.scheme == "https"
        self._port = url.port or (443 if self._tls else 80)
        self._target = url.path or "/"
        self._headers = dict(BASE_HEADERS)
        self._negotiate: Any = None
        if t.auth in CONNECTION_AUTH:
            self._negotiate = HTTPNegotiateAuth(username=t.username, password=t.password, auth_provider=t.auth,
                                                wrap_required=self.wrap_required, **t._get_auth_kwargs("negotiate"))
        elif t.auth == "basic":
            if t.username is None or t.password is None:
                raise ValueError("For basic auth, the username and password must be specified")
            pair = f"{t.username}:{t.password}".encode("latin-1")  # exbe.config refused what Latin-1 cannot carry
            self._headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        else:
            raise ValueError(f"auth {t.auth!r} is not carried by exbe's HTTP transport")
        self._tls_context = _tls_context(t.cert_validation) if self._tls else None
        self._proxy = urllib.parse.urlsplit(proxy) if proxy else None
        self._conn: http.client.HTTPConnection | None = None  # opens the connection (TLS, a proxy's tunnel)
        self._wire: HttpWire | None = None  # requests and answers on it
        through_proxy = self._proxy is not None and not self._tls  # plain HTTP through a proxy: absolute targets
        self._request_target = self.endpoint if through_proxy else self._target
        default_port = 443 if self._tls else 80
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._host_field = url.netloc if through_proxy else (
            host if self._port == default_port else f"{host}:{self._port}")  # what http.client writes
        if through_proxy and self._proxy is not None:
            self._headers.update(_proxy_headers(self._proxy))

    # -- pypsrp's interface ------------------------------------------------------------------------------------------
    def send(self, message: bytes, *, retries_on_read_timeout: int = 0,
             timeout: float | tuple[float, float] | None = None) -> bytes:
        """Send one WSMan envelope, return the answer's body (decrypted). A timed-out request is sent again up to
        ``retries_on_read_timeout`` times after pypsrp's pauses (``backoff * (2**attempt - 1)``), never past the
        deadline."""
        import requests

        attempt = 0
        while True:
            try:
                return self._send_once(message, timeout)
            except (requests.exceptions.ConnectTimeout, requests.exceptions.ReadTimeout):
                attempt += 1
                pause = self.reconnection_backoff * (2 ** attempt - 1)  # pypsrp's pause before its next attempt
                if self._deadline is not None and self._deadline.left() <= self.reconnection_backoff * 2 ** attempt:
                    # the deadline cut the wait short, or would pass before the next attempt (pypsrp pauses at most
                    # backoff * 2**attempt, exbe.deadline.bound_requests): it is what stopped, and is named
                    raise self._deadline.refused(self._server, self._endpoint_name, waiting=True) from None
                if attempt > retries_on_read_timeout:
                    raise
                log.info("%s: no answer from %s in time; asking again in %g s (attempt %d)", self._server.name,
                         self._endpoint_name, pause, attempt + 1)
                time.sleep(pause)

    def close(self) -> None:
        self._drop()
        self.encryption = None  # the security context belonged to the connection

    def _drop(self) -> None:
        """Close the connection (its context is forgotten when the next request finds none)."""
        if self._wire is not None:
            self._wire.close()
            self._wire = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- one request -------------------------------------------------------------------------------------------------
    def _send_once(self, message: bytes, timeout: float | tuple[float, float] | None) -> bytes:
        connect, read = self._timeouts(timeout)
        kept = self._conn
        if kept is not None and (kept.sock is None or _closed_by_peer(kept.sock)):
            self._drop()  # closed by the server while idle: a new one is opened below
        if self._conn is None:
            self.encryption = None  # a security context lives and dies with its connection
        if self._negotiate is not None and self.wrap_required and self.encryption is None:
            self.close()  # a security context is made on a new connection, never on one that had another
            conn = self._connection(connect)
            self._answer(*self._authenticate(conn, None, read))  # a blank request first: encryption needs a context
            if self._conn is not conn:
                raise _aborted("the server closed the connection after authenticating")
            if self.encryption is None:
                raise self._unauthenticated()
        else:
            conn = self._connection(connect)
        headers = dict(self._headers)
        if self.wrap_required:
            content_type, payload = self.encryption.wrap_message(message)
            headers["Content-Type"] = (f'{content_type};protocol="{self.encryption.protocol}";'
                                       'boundary="Encrypted Boundary"')
        else:
            payload = message
            headers["Content-Type"] = "application/soap+xml;charset=UTF-8"
        status, answer_headers, body = self._exchange(conn, payload, headers, read)
        if status == 401 and self._negotiate is not None and not self.wrap_required:
            status, answer_headers, body = self._authenticate(conn, payload, read, first=(answer_headers, headers))
        return self._answer(status, answer_headers, body)

    def _timeouts(self, timeout: float | tuple[float, float] | None) -> tuple[float, float]:
        return request_timeouts(self._deadline, timeout, (self.connection_timeout, self.read_timeout), self._server,
                                self._endpoint_name)

    def _connection(self, connect_timeout: float) -> http.client.HTTPConnection:
        """The endpoint's connection, opened now if there is none."""
        if self._conn is None:
            conn = self._new_connection(connect_timeout)
            self._conn, self._wire = conn, HttpWire(conn.sock)  # connect() made the socket
        return self._conn

    def _new_connection(self, connect_timeout: float) -> http.client.HTTPConnection:
        import requests

        proxy = self._proxy
        host, port = (proxy.hostname or "", proxy.port or 80) if proxy is not None else (self._host, self._port)
        conn: http.client.HTTPConnection
        if self._tls:
            conn = http.client.HTTPSConnection(host, port, timeout=connect_timeout, context=self._tls_context)
            if proxy is not None:
                conn.set_tunnel(self._host, self._port, headers=_proxy_headers(proxy))
        else:
            conn = http.client.HTTPConnection(host, port, timeout=connect_timeout)
        try:
            conn.connect()
        except (TimeoutError, ssl.SSLError, OSError) as exc:
            conn.close()
            if isinstance(exc, TimeoutError):
                raise requests.exceptions.ConnectTimeout(f"connection to {self.endpoint} timed out "
                                                         f"(connect timeout={connect_timeout:g})") from exc
            if isinstance(exc, ssl.SSLError):
                raise requests.exceptions.SSLError(f"{exc}") from exc
            raise requests.exceptions.ConnectionError(f"Failed to establish a new connection: {exc}") from exc
        return conn

    def _exchange(self, conn: http.client.HTTPConnection, payload: bytes | None, headers: dict[str, str],
                  read_timeout: float) -> tuple[int, dict[str, str], bytes]:
        """One HTTP request and its whole answer (:mod:`exbe.http_wire`): (status, fields, body)."""
        import requests

        wire = self._wire
        if wire is None or self._conn is not conn:  # closed after the previous answer, within one handshake
            raise _aborted("the server closed the connection")
        body = payload or b""
        head = "".join([f"POST {self._request_target} HTTP/1.1\r\nHost: {self._host_field}\r\n",
                        *(f"{name}: {value}\r\n" for name, value in headers.items()),
                        f"Content-Length: {len(body)}\r\n\r\n"]).encode("latin-1")
        try:
            if wire.sock.gettimeout() != read_timeout:  # each settimeout is a system call, the GIL let go
                wire.sock.settimeout(read_timeout)
            status, fields, answer, close = wire.exchange(head, body)
        except (TimeoutError, OSError, BrokenAnswer) as exc:
            self.close()  # the connection's state is unknown: never reused
            if isinstance(exc, TimeoutError):
                raise requests.exceptions.ReadTimeout(f"read from {self.endpoint} timed out "
                                                      f"(read timeout={read_timeout:g})") from exc
            raise _aborted(repr(exc)) from exc
        if close:
            self._drop()  # this answer is still read with the connection's context; the next request opens anew
        return status, fields, answer

    def _authenticate(self, conn: http.client.HTTPConnection, payload: bytes | None, read_timeout: float,
                      first: tuple[dict[str, str], dict[str, str]] | None = None) -> tuple[int, dict[str, str], bytes]:
        """pypsrp's Negotiate handshake (``HTTPNegotiateAuth.handle_401``) on this connection, carrying ``payload``
        (None: the blank request before message encryption). ``first``: the 401 already answered to ``payload``."""
        import spnego
        import spnego.channel_bindings

        auth = self._negotiate
        if first is None:
            headers = dict(self._headers)
            status, answer, body = self._exchange(conn, payload, headers, read_timeout)
            if status != 401:
                return status, answer, body
        else:
            answer, headers = first
        offered = _Headers(answer)
        provider = auth._check_auth_supported(offered, ["Negotiate", "Kerberos", "NTLM"])
        provider_l = provider.lower()
        protocol = auth.auth_provider
        if provider_l != protocol:
            if protocol == "negotiate":
                protocol = provider_l
            elif provider_l != "negotiate":
                raise ValueError(f"Server responded with the auth protocol '{provider}' which is incompatible with "
                                 f"the specified auth_provider '{protocol}'")
        cbt = None
        if auth.send_cbt and isinstance(conn.sock, ssl.SSLSocket):
            der = conn.sock.getpeercert(True)
            if der:
                cbt = spnego.channel_bindings.GssChannelBindings(
                    application_data=b"tls-server-end-point:" + auth._get_certificate_hash(der))
        context_req = spnego.ContextReq.default
        if auth.delegate:
            context_req |= spnego.ContextReq.delegate
        context = spnego.client(*_credentials(self.username, auth.password),
                                hostname=auth.hostname_override or self._host, service=auth.service,
                                channel_bindings=cbt, context_req=context_req, protocol=protocol,
                                options=spnego.NegotiateOptions.wrapping_winrm if self.wrap_required
                                else spnego.NegotiateOptions.none)
        out_token = context.step()
        while not context.complete or out_token is not None:
            headers["Authorization"] = f"{provider} {base64.b64encode(out_token or b'').decode('ascii')}"
            status, answer, body = self._exchange(conn, payload, headers, read_timeout)
            in_token = auth._get_auth_token(_Headers(answer), auth._regex)
            if in_token in (None, b""):
                break
            out_token = context.step(in_token)
        if self.wrap_required:
            from pypsrp.encryption import WinRMEncryption

            kind = WinRMEncryption.KERBEROS if provider_l == "kerberos" else WinRMEncryption.SPNEGO
            self.encryption = WinRMEncryption(context, kind)
        return status, answer, body

    def _answer(self, status: int, headers: dict[str, str], body: bytes) -> bytes:
        """The body of a WSMan answer, decrypted; an error status, a redirect or a plaintext answer raises."""
        from pypsrp.exceptions import WinRMTransportError

        from .wsman_connection import RedirectRefused

        if 300 <= status < 400:
            self.close()
            raise RedirectRefused(status, headers.get("location"))
        content_type = headers.get("content-type", "")
        if content_type.startswith(ENCRYPTED_TYPES):
            if self.encryption is None:
                raise UnencryptedResponse(f"HTTP {status} encrypted for a context this connection does not have")
            found = _BOUNDARY.search(content_type)
            body = self.encryption.unwrap_message(body, found.group(1) if found else "Encrypted Boundary")
        elif self.wrap_required and status == 200 and body:
            raise UnencryptedResponse(f"HTTP 200 with content type {content_type or '(none)'}")
        if status >= 400:
            if status == 401:
                self.close()
                raise self._unauthenticated()
            raise WinRMTransportError("http", status, body.decode("utf-8", "replace"))
        return body

    def _unauthenticated(self) -> Exception:
        from pypsrp.exceptions import AuthenticationError

        return AuthenticationError(f"Failed to authenticate the user {self.username} with {self.auth_name}")


def _credentials(username: str | None, password: str | None) -> tuple[Any, Any]:
    """``spnego.client``'s first two arguments for this account. Where pyspnego's own NTLM is all this agent has (no
    SSPI, no GSSAPI: Kerberos cannot happen), the account's NTLM one-way hashes, computed once per process: pyspnego
    computes them for every context it makes (two DES blocks and an MD4 in pure Python, a twentieth of a verify's
    CPU), and derives everything else from them, so the messages are the same. Elsewhere (Windows' SSPI, GSSAPI),
    username and password as pypsrp passes them: a hash credential would turn SSPI off."""
    if username is None or password is None or not _python_ntlm_only():
        return username, password
    return _hashed(username, password), None


@functools.cache
def _python_ntlm_only() -> bool:
    import spnego._gss
    import spnego._sspi

    return not spnego._sspi.HAS_SSPI and not spnego._gss.HAS_GSSAPI


@functools.lru_cache(maxsize=4)
def _hashed(username: str, password: str) -> Any:
    import spnego
    from spnego._ntlm_raw.crypto import lmowfv1, ntowfv1

    return spnego.NTLMHash(username, lm_hash=lmowfv1(password).hex(), nt_hash=ntowfv1(password).hex())


def _aborted(why: str) -> Exception:
    """A request lost with its connection, in requests' words (:func:`exbe.transport.classify` calls it dropped)."""
    import requests

    return requests.exceptions.ConnectionError(f"Connection aborted.: {why}")


class _Headers:
    """An answer's headers as pypsrp's negotiate helpers read them (``response.headers.get``)."""

    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers


def _closed_by_peer(sock: Any) -> bool:
    """A kept-alive socket the server has closed (or that has unread bytes: it cannot carry a request either)."""
    from urllib3.util.wait import wait_for_read

    try:
        return bool(wait_for_read(sock, timeout=0.0))
    except OSError:
        return True


def _proxy_headers(proxy: urllib.parse.SplitResult) -> dict[str, str]:
    """Basic credentials for the proxy when its URL carries them (as requests sends them)."""
    if proxy.username is None:
        return {}
    pair = f"{urllib.parse.unquote(proxy.username)}:{urllib.parse.unquote(proxy.password or '')}"
    return {"Proxy-Authorization": "Basic " + base64.b64encode(pair.encode("latin-1")).decode("ascii")}


def _tls_context(cert_validation: bool | str) -> ssl.SSLContext:
    """requests' TLS settings: urllib3's context, the CA file or directory named, else the environment's bundle,
    else certifi's; ``False`` validates nothing. One context serves every connection with the same settings: loading
    certifi's bundle costs about 50 ms of CPU, which requests paid for each server's two endpoints."""
    if cert_validation is False:
        return _validating_nothing()
    where = cert_validation if isinstance(cert_validation, str) else (
        os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or _certifi_bundle())
    try:
        seen = os.stat(where)
        version: tuple[int, ...] = (seen.st_ino, seen.st_size, seen.st_mtime_ns)  # a bundle rewritten is read again
    except OSError:
        version = ()  # OpenSSL's load says what is wrong with it
    return _validating(where, version)


@functools.cache
def _validating_nothing() -> ssl.SSLContext:
    from urllib3.util.ssl_ import create_urllib3_context

    context = create_urllib3_context(cert_reqs=ssl.CERT_NONE)
    context.check_hostname = False
    return context


@functools.lru_cache(maxsize=8)
def _validating(where: str, version: tuple[int, ...]) -> ssl.SSLContext:
    """A context trusting the CAs at ``where`` (a file or a directory) as they were at ``version``."""
    from urllib3.util.ssl_ import create_urllib3_context

    context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
    if os.path.isdir(where):
        context.load_verify_locations(capath=where)
    else:
        context.load_verify_locations(cafile=where)
    return context


def _certifi_bundle() -> str:
    from requests.utils import DEFAULT_CA_BUNDLE_PATH

    return str(DEFAULT_CA_BUNDLE_PATH)

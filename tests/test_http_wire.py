"""exbe's HTTP framing (exbe/http_wire.py) reads every answer HTTP/1.1 allows a server, or a proxy in front of it, to
send -- and says so when an answer is cut short -- so a WinRM answer is never mistaken for another."""

from __future__ import annotations

import socket
import threading

import pytest

from exbe.http_wire import BrokenAnswer, HttpWire

HEAD = b"POST /wsman HTTP/1.1\r\nHost: exch01:5985\r\nContent-Length: 4\r\n\r\n"


def answered(*answers: bytes, close_after: bool = False) -> tuple[HttpWire, list[bytes]]:
    """A wire whose server reads each request and sends the next answer (then closes, with ``close_after``)."""
    client, server = socket.socketpair()
    requests: list[bytes] = []

    def serve() -> None:
        reader = server.makefile("rb")
        for answer in answers:
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                line = reader.readline()
                if not line:
                    return
                head += line
            requests.append(head + reader.read(int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])))
            server.sendall(answer)
        if close_after:
            server.shutdown(socket.SHUT_RDWR)

    threading.Thread(target=serve, daemon=True).start()
    client.settimeout(10)
    return HttpWire(client), requests


def test_a_content_length_answer_keeps_the_connection_for_the_next_request():
    wire, requests = answered(b"HTTP/1.1 200 \r\nContent-Length: 5\r\nServer: Microsoft-HTTPAPI/2.0\r\n\r\nhello",
                              b"HTTP/1.1 401 \r\nWWW-Authenticate: Negotiate\r\nWWW-Authenticate: Basic realm=\"x\"\r\n"
                              b"Content-Length: 0\r\n\r\n")
    assert wire.exchange(HEAD, b"body") == (200, {"content-length": "5", "server": "Microsoft-HTTPAPI/2.0"},
                                            b"hello", False)
    status, fields, body, close = wire.exchange(HEAD, b"more")
    assert (status, body, close) == (401, b"", False)
    assert fields["www-authenticate"] == 'Negotiate, Basic realm="x"', "repeated fields joined, as urllib3 joins them"
    assert requests == [HEAD + b"body", HEAD + b"more"]


def test_a_chunked_answer_with_extensions_and_trailers_is_read_whole():
    wire, _ = answered(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
    assert wire.exchange(HEAD, b"body")[2] == b"hello world"


def test_interim_answers_are_skipped_and_a_folded_field_continues():
    wire, _ = answered(b"HTTP/1.1 100 Continue\r\n\r\n"
                       b"HTTP/1.1 200 OK\r\nX-Long: one\r\n two\r\nContent-Length: 2\r\n\r\nok")
    status, fields, body, _ = wire.exchange(HEAD, b"body")
    assert (status, fields["x-long"], body) == (200, "one two", b"ok")


@pytest.mark.parametrize(("answer", "body"), [
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", b"ok"),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", b"ok"),
    (b"HTTP/1.1 200 OK\r\n\r\nto the end", b"to the end"),
], ids=["connection close", "HTTP/1.0", "delimited by the end of the connection"])
def test_an_answer_that_ends_its_connection_says_so(answer, body):
    wire, _ = answered(answer, close_after=True)
    assert wire.exchange(HEAD, b"body")[2:] == (body, True)


@pytest.mark.parametrize("answer", [
    b"",  # closed without an answer
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
], ids=["nothing", "cut short", "bad chunk size", "not http", "bad field"])
def test_an_answer_cut_short_or_not_http_is_refused(answer):
    wire, _ = answered(answer, close_after=True)
    with pytest.raises(BrokenAnswer):
        wire.exchange(HEAD, b"body")


def test_a_large_body_goes_out_whole():
    wire, requests = answered(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    body = bytes(range(256)) * 1024
    head = HEAD.replace(b"Content-Length: 4", f"Content-Length: {len(body)}".encode())
    assert wire.exchange(head, body)[0] == 200
    assert requests == [head + body]

"""One HTTP/1.1 request and its answer on an open socket, framed as RFC 9112 says (issue 26).

``http.client`` parses every answer's headers with the ``email`` package (about 140,000 instructions an answer, a
verify reads twenty) and builds its request line by line; exbe's transport keeps ``http.client`` for what it does
well -- opening the connection: TLS, the proxy's CONNECT tunnel -- and frames its own requests and answers here:
the request written in one piece, the answer read with a buffered reader over the socket. What an answer may be:

* a status line (``HTTP/1.x CODE [reason]``), header fields (a field repeated is joined with ", ", as urllib3 joins
  them; an obsolete folded line continues the field before it), an empty line;
* interim answers (1xx) before the final one, skipped;
* a body framed by ``Transfer-Encoding: chunked`` (trailers read and dropped), ``Content-Length``, nothing (1xx,
  204, 304), or the end of the connection;
* ``Connection: close`` (or HTTP/1.0 without ``keep-alive``): the connection is not used again.

An answer cut short or malformed raises :class:`BrokenAnswer`; timeouts and socket errors propagate.
"""

from __future__ import annotations

import socket
from typing import BinaryIO

#: The longest status or header line read (http.client's limit).
MAX_LINE = 65536
#: The most header fields an answer may carry (http.client's limit).
MAX_FIELDS = 100


class BrokenAnswer(Exception):
    """The server's answer ended early or is not HTTP/1.x."""


class HttpWire:
    """Requests and answers on one socket, one at a time."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._reader: BinaryIO = sock.makefile("rb")

    def exchange(self, head: bytes, body: bytes) -> tuple[int, dict[str, str], bytes, bool]:
        """Send a request (``head``: its line and fields, ending with the empty line) and read the final answer:
        (status, fields with lower-case names, body, whether the connection ends with it)."""
        if len(body) < 65536:
            self.sock.sendall(head + body)  # one send for the usual small request
        else:
            self.sock.sendall(head)  # a large body is not copied to join it
            self.sock.sendall(body)
        while True:
            version, status, fields = self._head()
            if not 100 <= status < 200:
                break
        connection = fields.get("connection", "").lower()
        close = "close" in connection or (version == "HTTP/1.0" and "keep-alive" not in connection)
        if status in (204, 304):
            return status, fields, b"", close
        if "chunked" in fields.get("transfer-encoding", "").lower():
            return status, fields, self._chunked(), close
        length = fields.get("content-length")
        if length is None:
            return status, fields, self._reader.read(), True  # delimited by the end of the connection
        try:
            size = int(length.split(",")[0])
        except ValueError:
            raise BrokenAnswer(f"Content-Length {length!r}") from None
        return status, fields, self._exactly(size), close

    def close(self) -> None:
        self._reader.close()

    def _head(self) -> tuple[str, int, dict[str, str]]:
        line = self._line()
        if not line:
            raise BrokenAnswer("Remote end closed connection without response")
        parts = line.decode("iso-8859-1").split(None, 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise BrokenAnswer(f"not an HTTP/1.x status line: {line[:80]!r}")
        fields: dict[str, str] = {}
        last = ""
        for _ in range(MAX_FIELDS + 1):
            raw = self._line()
            if raw in (b"\r\n", b"\n", b""):
                return parts[0], int(parts[1]), fields
            text = raw.decode("iso-8859-1")
            if text[0] in " \t" and last:  # an obsolete folded line continues the field before it
                fields[last] = f"{fields[last]} {text.strip()}"
                continue
            name, colon, value = text.partition(":")
            if not colon:
                raise BrokenAnswer(f"header line without a colon: {raw[:80]!r}")
            last = name.strip().lower()
            value = value.strip()
            fields[last] = f"{fields[last]}, {value}" if last in fields else value
        raise BrokenAnswer(f"more than {MAX_FIELDS} header fields")

    def _line(self) -> bytes:
        line = self._reader.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise BrokenAnswer("header line too long")
        return line

    def _exactly(self, size: int) -> bytes:
        data = self._reader.read(size) if size else b""
        if len(data) < size:
            raise BrokenAnswer(f"IncompleteRead({len(data)} bytes read, {size - len(data)} more expected)")
        return data

    def _chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            line = self._line()
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BrokenAnswer(f"chunk size {line[:40]!r}") from None
            if size == 0:
                while self._line() not in (b"\r\n", b"\n", b""):
                    pass  # trailer fields: nothing exbe reads
                return b"".join(parts)
            parts.append(self._exactly(size))
            self._line()  # the CRLF after the chunk

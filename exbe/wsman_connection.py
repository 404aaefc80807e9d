"""How exbe builds pypsrp's ``WSMan`` for an endpoint and guards its HTTP session.

* **XML namespaces, registered once.** pypsrp 0.9.1 registers ElementTree's process-wide namespace prefixes every
  time a ``WSMan`` is built. ``ET.register_namespace`` first deletes the entry it is about to add, so another thread
  writing an envelope at that instant finds no prefix for ``http://www.w3.org/XML/1998/namespace`` and declares it as
  ``ns0``, which XML forbids: the server refuses the envelope and the server is reported unreachable. Here the
  prefixes are registered once, and pypsrp's module sees an ElementTree whose ``register_namespace`` leaves a prefix
  that is already registered alone, so building a ``WSMan`` never touches the map again.
* **Envelopes written without a codec per write.** ``ET.tostring(element, encoding="utf-8")`` sends every piece of
  the document through a text wrapper over a byte buffer; writing to a string and encoding it once gives the same
  bytes (no XML declaration for UTF-8 either way) in about 60% of the time. pypsrp writes every envelope and every
  PSRP message this way (issue 26: a fifth of a run's CPU); what it writes back of a received object, exbe's
  serializer writes only when it is read, with this function (:mod:`exbe.psrp_serializer`). A string that UTF-8
  cannot encode (a lone surrogate) goes through ElementTree's own path, which writes a character reference.
* **Redirects are never followed.** A WinRM or Exchange endpoint that answers 3xx has been moved or intercepted:
  following it would send the request -- and start NTLM or send a Basic password -- to a host nobody configured,
  HTTPS to HTTP included. The answer becomes a connection error naming the Location (control characters shown
  escaped, length bounded).
"""

from __future__ import annotations

import threading
import types
import xml.etree.ElementTree as ET
from typing import Any

from .redaction import visible_controls
from .wsman_envelope import text_wsman

#: The most of a redirect's Location an error message shows.
LOCATION_SHOWN = 200

_registered = threading.Lock()
_done: list[bool] = []


class RedirectRefused(Exception):
    """An endpoint answered a redirect; exbe does not follow it (the request is not sent anywhere else)."""

    def __init__(self, status: int, location: str | None) -> None:
        self.status = status
        self.location = shown_location(location)
        super().__init__(f"HTTP {status} redirect to {self.location} refused: exbe never follows redirects")


def shown_location(location: str | None) -> str:
    """A server's Location header as an error message may show it: quoted, controls escaped, bounded."""
    if location is None:
        return "(no Location)"
    text = visible_controls(location, keep="")
    if len(text) > LOCATION_SHOWN:
        text = text[:LOCATION_SHOWN] + f"... ({len(location)} characters)"
    return f"'{text}'"


def register_namespaces_once() -> None:
    """Register pypsrp's WSMan namespace prefixes with ElementTree, once per process, and give pypsrp's modules that
    write XML the ElementTree of :func:`_element_tree_for_pypsrp`. Call before any thread writes an envelope
    (``transport.preload``)."""
    with _registered:
        if _done:
            return
        import pypsrp.messages
        import pypsrp.serializer
        import pypsrp.wsman

        facade = _element_tree_for_pypsrp()
        for prefix, uri in pypsrp.wsman.NAMESPACES.items():
            facade.register_namespace(prefix, uri)  # "xml" is ElementTree's own: left alone, never deleted
        for module in (pypsrp.wsman, pypsrp.messages, pypsrp.serializer):
            setattr(module, "ET", facade)  # noqa: B010 - pypsrp does not export ET
        _done.append(True)


def _element_tree_for_pypsrp() -> types.ModuleType:
    """ElementTree as pypsrp's modules see it: everything is ElementTree's (copied, so lookups stay direct), except

    * registering a prefix already registered for the same namespace changes nothing (ElementTree's own call
      deletes, then re-adds);
    * ``tostring`` to UTF-8 writes to a string and encodes it once (:func:`tostring`)."""
    module = types.ModuleType(ET.__name__, ET.__doc__)
    module.__dict__.update({name: value for name, value in vars(ET).items() if not name.startswith("__")})

    def register_namespace(prefix: str, uri: str) -> None:
        if ET._namespace_map.get(uri) != prefix:  # type: ignore[attr-defined]
            ET.register_namespace(prefix, uri)

    module.register_namespace = register_namespace  # type: ignore[attr-defined]
    module.tostring = tostring  # type: ignore[attr-defined]
    return module


def tostring(element: ET.Element, encoding: Any = None, method: Any = None, **options: Any) -> Any:
    """``ET.tostring`` with the same result; UTF-8 without other options written to a string, then encoded once."""
    if encoding is not None and encoding.lower() == "utf-8" and not options and method in (None, "xml"):
        text = ET.tostring(element, encoding="unicode", method=method)
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            pass  # a lone surrogate: ElementTree writes it as a character reference
    return ET.tostring(element, encoding=encoding, method=method, **options)


def new_wsman(host: str, **options: Any) -> Any:
    """pypsrp's ``WSMan`` for one endpoint, writing its envelopes as text (:func:`exbe.wsman_envelope.text_wsman`),
    the namespaces registered once first."""
    register_namespaces_once()
    return text_wsman()(host, **options)


def refuse_redirect(response: Any, *args: Any, **kwargs: Any) -> Any:
    """A requests response hook: a 3xx answer ends the request with :class:`RedirectRefused` before requests could
    follow it (hooks run before requests resolves redirects)."""
    if 300 <= response.status_code < 400:
        status, location = response.status_code, response.headers.get("location")
        response.close()
        raise RedirectRefused(status, location)
    return response

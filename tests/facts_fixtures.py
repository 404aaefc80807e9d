"""Facts documents for the pure decision tests: ``tests/data/facts/baseline.json`` (EXCH01 as the facts step and the
Exchange endpoint report it on 2026-06-01, spelled as the captured real servers spell it) plus small overrides, one
file per situation.

An override merges into the baseline: objects merge key by key; the lists ``certificates`` and ``root`` are patched
by thumbprint and ``bindings`` by ``"<site>|<binding information>"``: ``null`` removes the item, an unknown key adds
one (``"$like": <key>`` copies an existing item first). ``"exchange": null`` means the Exchange endpoint was not
available.

The decision functions take typed facts: tests change the documents ``load`` returns, then hand them over with
``typed(facts, exchange)`` (or ``load_typed(...)`` when nothing is changed). Binding spellings are the real ones
(``../shared/real-server-shapes.md`` §1): ``:443:`` (empty IP), ``127.0.0.1:443:`` (trailing colon), ``*:444:``.
"""

from __future__ import annotations

import copy
import datetime
import json
from pathlib import Path
from typing import Any

from exbe.facts import ExchangeFacts, HostFacts

DATA = Path(__file__).parent / "data" / "facts"
NOW = datetime.datetime(2026, 6, 1, 8, 0, 0, tzinfo=datetime.timezone.utc)

BACKEND = "BFDC0014BC99FCAD6B3F728F6C46BEE7B762FB39"  # self-signed "Microsoft Exchange", *:444: and 127.0.0.1:443:
PUBLIC = "B2B1930EA2253EA762CAD3A0465B3D56979B1D98"  # CA-issued, Default Web Site :443:, IIS
AUTH = "75385156F1DC9A35DD46193F6BC9EF54BEE945D0"  # Microsoft Exchange Server Auth Certificate
CANDIDATE_OLD, CANDIDATE_NEW = "6E70175696E7B8DD37A3D610A851A39EA44ED563", "E2FBB0AB1BFE1A8226BB7923CC406538A7ADCA84"
SUPERSEDED = "18FB378ED181A7E2172253CEA1E84D1CB028C752"  # expired, unassigned, with a Root copy
SMTP_OLD = "52A868AF8CF951F31E1DB52BE41A1785D3F59914"  # older, still assigned to SMTP
ROOT_ORPHAN = "9898FE8D61ABAE1336FCEDCE8A16024DE6D63A4E"  # Root copy of a certificate gone from My
STAGED = "3E587C8F4A02A8361B6D705E38C453660118D23E"  # a replacement created by an interrupted run

_KEYS = {"certificates": ("thumbprint",), "root": ("thumbprint",), "bindings": ("site", "binding_information")}


def load(*overrides: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``(facts, exchange)``: the baseline with the named overrides applied in order."""
    document = json.loads((DATA / "baseline.json").read_text(encoding="utf-8"))
    facts, exchange = document["facts"], document["exchange"]
    for name in overrides:
        patch = json.loads((DATA / f"{name}.json").read_text(encoding="utf-8"))
        facts = _merge(facts, patch.get("facts", {}))
        if "exchange" in patch:
            exchange = None if patch["exchange"] is None or exchange is None else _merge(exchange, patch["exchange"])
    return facts, exchange


def typed(facts: dict[str, Any], exchange: dict[str, Any] | None = None) -> tuple[HostFacts, ExchangeFacts | None]:
    """The documents as the decision functions get them (parsed once at the boundary, as ``exbe.jobs.backend`` does)."""
    return HostFacts.parse(facts), ExchangeFacts.from_dict(exchange) if exchange is not None else None


def load_typed(*overrides: str) -> tuple[HostFacts, ExchangeFacts | None]:
    return typed(*load(*overrides))


def cert(facts: dict[str, Any], thumbprint: str) -> dict[str, Any]:
    return next(c for c in facts["certificates"] if c["thumbprint"] == thumbprint)


def binding(facts: dict[str, Any], site: str, info: str) -> dict[str, Any]:
    return next(b for b in facts["bindings"] if b["site"] == site and b["binding_information"] == info)


def expires_in(facts: dict[str, Any], thumbprint: str, days: float) -> dict[str, Any]:
    """Set a certificate's NotAfter ``days`` after the facts' ``now``; returns the certificate."""
    target = cert(facts, thumbprint)
    target["not_after"] = iso(NOW + datetime.timedelta(days=days))
    return target


def add_binding(facts: dict[str, Any], site: str, info: str, thumbprint: str | None) -> dict[str, Any]:
    """Add an https binding (``info`` exactly as IIS would report it); returns it."""
    added = {"site": site, "protocol": "https", "binding_information": info, "certificate_hash": thumbprint or "",
             "certificate_store": "MY" if thumbprint else ""}
    facts["bindings"].append(added)
    return added


def without_binding(facts: dict[str, Any], site: str, info: str) -> None:
    facts["bindings"] = [b for b in facts["bindings"] if (b["site"], b["binding_information"]) != (site, info)]


def iso(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _merge(base: Any, patch: Any) -> Any:
    if not (isinstance(base, dict) and isinstance(patch, dict)):
        return copy.deepcopy(patch)
    merged = dict(base)
    for key, value in patch.items():
        if key in _KEYS and isinstance(base.get(key), list) and isinstance(value, dict):
            merged[key] = _merge_list(base[key], value, _KEYS[key])
        else:
            merged[key] = _merge(base.get(key), value) if key in base else copy.deepcopy(value)
    return merged


def _merge_list(items: list[dict[str, Any]], patch: dict[str, Any], fields: tuple[str, ...]) -> list[dict[str, Any]]:
    def key(item: dict[str, Any]) -> str:
        return "|".join(item[f] for f in fields)

    result = [copy.deepcopy(item) for item in items]
    for name, change in patch.items():
        index = next((n for n, item in enumerate(result) if key(item) == name), None)
        if change is None:
            result = [item for item in result if key(item) != name]
        elif index is not None:
            result[index] = _merge(result[index], change)
        else:
            change = dict(change)
            like = change.pop("$like", None)
            base = copy.deepcopy(next(item for item in items if key(item) == like)) if like else {}
            result.append(_merge(base, {**change, **dict(zip(fields, name.split("|"), strict=True))}))
    return result

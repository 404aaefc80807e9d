"""Whether serialization payload signing is on for one Exchange server, judged as CSS-Exchange's HealthChecker does
(``Diagnostics/HealthChecker/Analyzer/Security/Get-SerializedDataSigningState.ps1`` and
``Analyzer/Get-FilteredSettingOverrideInformation.ps1``; facts carried over, code written here):

* the feature came with the January 2023 Security Update, off by default; from the November 2023 SU it is on by
  default (Exchange 2016 and 2019; Exchange SE builds carry it). The build is ``Get-ExchangeServer``'s
  ``AdminDisplayVersion`` (``Version 15.2 (Build 1118.40)``);
* only a SettingOverride with component ``Data``, section ``EnableSerializationDataSigning`` and an ``Enabled=``
  parameter counts, when it applies to this server (no ``Server`` list: the whole organization; else the list names
  this server), to its build (``MinVersion``/``MaxVersion``), and its status is Accepted;
* one such override decides (``Enabled=True``/``False``; another value: unknown); several make the state unknown.

Unknown is said with its reason, never guessed: the decisions that depend on it (is Exchange blinded?) say so.
The builds of the two updates per cumulative update are HealthChecker's build table (Exchange's own build list).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from typing import Any

ON, OFF, UNKNOWN = "on", "off", "unknown"

#: (major, minor, CU build) -> (first revision with the January 2023 SU, first revision with the November 2023 SU);
#: None: that CU never received the update. CUs released after an update carry it from their first build (0).
_SU_REVISIONS: dict[tuple[int, int, int], tuple[int | None, int | None]] = {
    (15, 1, 2507): (17, 35),  # Exchange 2016 CU23: Jan23SU 15.1.2507.17, Nov23SU 15.1.2507.35
    (15, 2, 986): (37, None),  # Exchange 2019 CU11: Jan23SU 15.2.986.37; its last SU was Mar23SU
    (15, 2, 1118): (21, 40),  # Exchange 2019 CU12: Jan23SU 15.2.1118.21, Nov23SU 15.2.1118.40
    (15, 2, 1258): (0, 28),  # Exchange 2019 CU13 (May 2023, after Jan23SU): Nov23SU 15.2.1258.28
}
#: The first CU of each version released after the November 2023 SU (2019 CU14, Feb 2024; Exchange SE is 15.2 too).
_AFTER_NOVEMBER_2023 = {(15, 2): 1544}
_VERSION = re.compile(r"Version\s+(\d+)\.(\d+)\s*\(Build\s+(\d+)\.(\d+)\)|^\s*(\d+)\.(\d+)\.(\d+)\.(\d+)\s*$")


@dataclasses.dataclass(frozen=True)
class Signing:
    """Serialization signing on this server: ``state`` on, off or unknown, and why."""

    state: str
    why: str

    @property
    def on(self) -> bool | None:
        return None if self.state == UNKNOWN else self.state == ON


def build_of(version: str | None) -> tuple[int, int, int, int] | None:
    """``AdminDisplayVersion`` as numbers: ``Version 15.2 (Build 1118.40)`` (its ToString) or ``15.2.1118.40``."""
    match = _VERSION.search(version or "")
    if match is None:
        return None
    numbers = [int(n) for n in match.groups() if n is not None]
    return numbers[0], numbers[1], numbers[2], numbers[3]


def by_build(build: tuple[int, int, int, int]) -> tuple[bool, bool]:
    """(available, on by default) for a build."""
    major, minor, cu, revision = build
    if (major, minor, cu) in _SU_REVISIONS:
        january, november = _SU_REVISIONS[(major, minor, cu)]
        return (january is not None and revision >= january, november is not None and revision >= november)
    after = _AFTER_NOVEMBER_2023.get((major, minor))
    later = after is not None and cu >= after
    return later, later


def judge(version: str | None, overrides: Iterable[Mapping[str, Any]] | None, server: str | None) -> Signing:
    """The state on ``server`` (its name), from its build and the organization's SettingOverrides (props of each
    object; None when they could not be read)."""
    build = build_of(version)
    if build is None:
        return Signing(UNKNOWN, f"the server's build is unknown (AdminDisplayVersion {version or 'not read'})")
    shown = ".".join(map(str, build))
    available, default_on = by_build(build)
    if not available:
        return Signing(OFF, f"build {shown} predates the January 2023 Security Update, which brought it")
    default = (f"on by default on build {shown} (November 2023 SU or later)" if default_on
               else f"off by default on build {shown} (before the November 2023 SU)")
    if overrides is None:
        return Signing(UNKNOWN, f"{default}, but the setting overrides could not be read")
    applying = [o for o in overrides if _applies(o, build, server)]
    if not applying:
        return Signing(ON if default_on else OFF, f"{default}; no setting override changes it")
    if len(applying) > 1:
        names = ", ".join(str(o.get("Name") or "?") for o in applying)
        return Signing(UNKNOWN, f"several setting overrides apply ({names}); HealthChecker calls that unknown too")
    value = _enabled_value(applying[0])
    name = applying[0].get("Name") or "?"
    if value == "true":
        return Signing(ON, f"enabled by the setting override {name}")
    if value == "false":
        return Signing(OFF, f"disabled by the setting override {name}")
    return Signing(UNKNOWN, f"the setting override {name} sets Enabled to {value!r}")


def _applies(override: Mapping[str, Any], build: tuple[int, int, int, int], server: str | None) -> bool:
    if str(override.get("ComponentName") or "").lower() != "data":
        return False
    if str(override.get("SectionName") or "").lower() != "enableserializationdatasigning":
        return False
    if _enabled_value(override) is None:
        return False
    status = str(override.get("Status") or "Accepted")
    if status.lower() != "accepted":
        return False
    servers = [s.split(".")[0].lower() for s in strings(override.get("Server"))]
    if servers and (server is None or server.split(".")[0].lower() not in servers):
        return False
    low, high = build_of(_text(override.get("MinVersion"))), build_of(_text(override.get("MaxVersion")))
    return (low is None or build >= low) and (high is None or build <= high)


def _enabled_value(override: Mapping[str, Any]) -> str | None:
    for parameter in strings(override.get("Parameters")):
        name, sep, value = parameter.partition("=")
        if sep and name.strip().lower() == "enabled":
            return value.strip().lower()
    return None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def strings(value: Any) -> list[str]:
    """A multi-valued property as text items. ``Parameters`` is a ``MultiValuedProperty`1[System.String]`` (E19
    GetSettingOverride.xml); pypsrp 0.9.1 does not know that type and hands back an object whose ``property_sets``
    hold the ``<LST>`` element as raw XML text."""
    from xml.etree import ElementTree

    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [s for item in value for s in strings(item)]
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("<LST"):
            try:
                return [item.text or "" for item in ElementTree.fromstring(text) if item.tag.endswith("S")]
            except ElementTree.ParseError:
                return [text]
        return [text] if text else []
    nested = getattr(value, "property_sets", None)
    if nested:
        return strings(list(nested))
    return [str(value)]

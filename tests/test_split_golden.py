"""The runbook's split (issue 21) changed no behaviour: a mixed sandbox fleet's JUnit and JSON, for `exbe renew`
then `exbe verify`, are the same as the ones recorded on 468f7c0, before the split (tests/data/golden/), once the
volatile fields are normalised (times, durations, run ids, thumbprints, ports, days left, temporary paths); and
each server got the same number of requests on each endpoint.

The golden files record behaviour on purpose: a later change to what the reports say updates them with
``EXBE_UPDATE_GOLDEN=1 python -m pytest tests/test_split_golden.py`` and the diff is reviewed like code.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from exbe.sandbox.faults import Faults

from .exbe_cli import run_exbe

GOLDEN = Path(__file__).resolve().parent / "data" / "golden"
#: every kind of outcome a fleet report carries: renewed, not due, renewed from nothing bound, a finding renew does
#: not fix, a bind that fails, a dropped connection, refused credentials (with --keep-going)
HOSTS = [("exch01", "healthy"), ("exch02", "backend_expiring"), ("exch03", "binding_empty"),
         ("exch04", "sha1_backend"), ("exch05", "backend_expired"), ("exch06", "healthy"), ("exch07", "healthy")]
FAULTS = {"exch05": Faults(bind_com_error=True), "exch06": Faults(drop_after=0), "exch07": Faults(auth_fail=True)}

_THUMB = re.compile(r"\b[0-9A-Fa-f]{40}\b")
_SHORT = re.compile(r"\b([0-9A-Fa-f]{8})\.\.\.")
_RUN_ID = re.compile(r"\b[0-9a-f]{12}\b")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)?")
_DATE = re.compile(r"\b\d{4}-\d\d-\d\d\b")
_PORT = re.compile(r"(127\.0\.0\.1|localhost|sim-exch\d+|exch\d+(?:\.[\w.-]+)?):\d{2,5}")
_DAYS = re.compile(r"\b\d+ days?\b")
#: numbers that change from run to run; days left among them: a certificate made and read within one second (the
#: servers' clock is read to the second) has a whole day more left than one read a second later
_NUMBER_KEYS = {"duration_s", "time", "wall_time_s", "timestamp", "value", "days_left", "current_days", "next_days",
                "seconds"}


def _normalise_text(text: str, names: dict[str, str], tmp: str) -> str:
    text = text.replace(tmp, "<tmp>")

    def token(kind: str) -> Any:
        def replace(match: re.Match[str]) -> str:
            key = match.group(0).upper()
            return names.setdefault(key, f"<{kind}{len([n for n in names.values() if n.startswith('<' + kind)])}>")
        return replace

    text = _THUMB.sub(token("thumb"), text)
    text = _SHORT.sub(lambda m: next((name + "..." for thumb, name in names.items()
                                      if name.startswith("<thumb") and thumb.startswith(m.group(1).upper())),
                                     "<short>..."), text)
    text = _TIME.sub("<time>", text)
    text = _DATE.sub("<date>", text)
    text = _RUN_ID.sub(token("run"), text)
    text = _PORT.sub(lambda m: f"{m.group(1)}:<port>", text)
    text = _DAYS.sub("<n> days", text)
    text = re.sub(r"\b\d+\.\d+s\b", "<s>", text)
    return re.sub(r"\b\d+(\.\d+)?\b(?= ?(ms|seconds?|s\b))", "<n>", text)


def _normalise(value: Any, names: dict[str, str], tmp: str, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _normalise(v, names, tmp, k) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [_normalise(v, names, tmp, key) for v in value]
    if isinstance(value, str):
        return _normalise_text(value, names, tmp)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and key in _NUMBER_KEYS:
        return "<n>"
    return value


def _junit(path: Path, names: dict[str, str], tmp: str) -> str:
    text = path.read_text(encoding="utf-8")
    text = re.sub(r'(time|timestamp)="[^"]*"', r'\1="<n>"', text)
    text = re.sub(r'(name="\w*days\w*" value=)"-?\d+"', r'\1"<n>"', text)
    text = re.sub(r"\bvalue: -?\d+\b", "value: <n>", text)
    text = re.sub(r'(\w*days\w*(?:"|&quot;): )-?\d+', r"\1<n>", text)  # within a value shown as JSON
    return _normalise_text(text, names, tmp)


@pytest.mark.parametrize("task", ["renew", "verify"])
def test_a_mixed_fleets_reports_are_what_they_were_before_the_split(task, start_fleet, tmp_path, capsys,
                                                                      monkeypatch) -> None:
    fleet = start_fleet(HOSTS, faults=FAULTS)
    if task == "verify":  # verify after a renew: the fleet as the renew left it
        run_exbe(fleet, tmp_path, capsys, monkeypatch, "renew", "--all", "--keep-going")
    for name, _ in HOSTS:
        fleet.host(name).reset_counts()
    result = run_exbe(fleet, tmp_path, capsys, monkeypatch, task, "--all", "--keep-going",
                      "--junit", str(tmp_path / "r.xml"), "--json", str(tmp_path / "r.json"))
    names: dict[str, str] = {}
    record = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    # thumbprints named in order of first appearance, so that an abbreviated one (8 digits and "...") names the same
    for thumb in _THUMB.findall(json.dumps(record, sort_keys=True) + (tmp_path / "r.xml").read_text("utf-8")):
        names.setdefault(thumb.upper(), f"<thumb{len(names)}>")
    got = {"code": result.code,
           "requests": {name: {endpoint: fleet.host(name).total_requests(endpoint)
                               for endpoint in ("winrm", "exchange")} for name, _ in HOSTS},
           "json": _normalise(record, names, str(tmp_path)),
           "junit": _junit(tmp_path / "r.xml", names, str(tmp_path)).splitlines()}
    golden = GOLDEN / f"mixed-{task}.json"
    if os.environ.get("EXBE_UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    expected = json.loads(golden.read_text(encoding="utf-8"))
    assert got["code"] == expected["code"]
    assert got["requests"] == expected["requests"], "the same round trips per server and endpoint"
    assert got["json"] == expected["json"], _difference(expected["json"], got["json"])
    assert got["junit"] == expected["junit"], _difference(expected["junit"], got["junit"])


def _difference(expected: Any, got: Any) -> str:
    """What differs, as lines of the recorded report and this run's (a failing run's message: pytest's own -q diff
    shows only which top-level key differs)."""
    lines = difflib.unified_diff(json.dumps(expected, indent=1, sort_keys=True).splitlines(),
                                 json.dumps(got, indent=1, sort_keys=True).splitlines(), "recorded", "this run",
                                 lineterm="", n=2)
    return "\n".join(list(lines)[:80])

"""Values are data: whatever an administrator or an inventory puts in a name or thumbprint, it changes the one
input-document line of a script and nothing else, and it reads back exactly."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exbe import __version__, contract
from exbe.model import Settings
from exbe.render import is_exbe_rendering, manual_input, render_manual, render_step

OLD = "A1" * 20
NEW = "B2" * 20
SITES = {"backend_site": "Exchange Back End", "frontend_site": "Default Web Site"}

#: Each step's ordinary input, and the fields whose values come from users or inventories.
BASELINE: dict[str, dict[str, Any]] = {
    "facts": {**SITES, "friendly_name": "Microsoft Exchange"},
    "clone": {"source_thumbprint": OLD, "provider": "Microsoft RSA SChannel Cryptographic Provider",
              "key_length": 2048, "hash_algorithm": "SHA256", "validity_years": 5, "dry_run": False},
    "trust": {"thumbprint": NEW, "dry_run": False},
    "bind": {"thumbprint": NEW, **SITES, "backend_binding": "*:444:", "loopback_binding": "127.0.0.1:443:",
             "loopback_from": OLD, "after_trust": True, "dry_run": False},
    "restart": {"method": "iisreset", "timeout_seconds": 120, "dry_run": False},
    "cleanup": {"thumbprints": [OLD], **SITES, "dry_run": False},
}
USER_FIELDS: dict[str, tuple[str, ...]] = {
    "facts": ("backend_site", "frontend_site", "friendly_name"),
    "clone": ("source_thumbprint", "provider", "hash_algorithm"),
    "trust": ("thumbprint",),
    "bind": ("thumbprint", "backend_site", "frontend_site", "backend_binding", "loopback_binding", "loopback_from"),
    "cleanup": ("thumbprints", "backend_site", "frontend_site"),
}
MANUAL_BASELINE = manual_input(Settings())
MANUAL_FIELDS = ("backend_site", "frontend_site", "friendly_name", "thumbprint", "auth_subject")

HOSTILE = ["'", '"', "`", "$(Remove-Item C:\\ -Recurse)", "; Stop-Computer", "\n", "\r", "\r\n", "'@", '"@',
           "\n'@\nStop-Computer\n", "@'", "{{ input_document }}", "{% raw %}", "\u202e\u05e9\u05dc\u05d5\u05dd",
           "\U0001f525", "\u2028", "\\", "}", "#>", "<#", "\ufeff"]
hostile_text = st.lists(
    st.one_of(st.sampled_from(HOSTILE),
              st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))),
    min_size=1, max_size=6).map("".join).filter(bool)


@st.composite
def hostile_step_input(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    step = draw(st.sampled_from(sorted(USER_FIELDS)))
    data = dict(BASELINE[step])
    for field in draw(st.lists(st.sampled_from(USER_FIELDS[step]), min_size=1, unique=True)):
        data[field] = draw(st.lists(hostile_text, max_size=3)) if field == "thumbprints" else draw(hostile_text)
    return step, data


def _without_document(text: str) -> str:
    lines = text.split("\n")
    index = lines.index(contract.INPUT_OPEN) + 1
    return "\n".join(lines[:index] + lines[index + 1:])


def _document_span(text: str) -> tuple[int, int]:
    start = text.index(contract.INPUT_OPEN + "\n") + len(contract.INPUT_OPEN) + 1
    return start, text.index("\n", start)


@given(hostile_step_input())
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_hostile_values_change_only_the_input_document_line(case: tuple[str, dict[str, Any]]) -> None:
    step, data = case
    text = render_step(step, data)
    assert _without_document(text) == _without_document(render_step(step, BASELINE[step]))
    assert text.isascii()


@given(hostile_step_input())
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_hostile_values_read_back_exactly_and_the_script_is_still_recognised(case: tuple[str, dict[str, Any]]) -> None:
    step, data = case
    text = render_step(step, data)
    assert contract.parse_script(text) == (step, data)
    assert is_exbe_rendering(text) == (True, f"exbe {__version__} {step} step")


@given(st.lists(st.sampled_from(MANUAL_FIELDS), min_size=1, unique=True), st.data())
@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
def test_hostile_values_change_only_the_input_document_of_a_hand_run_script(fields: list[str],
                                                                             data: st.DataObject) -> None:
    hostile = {**MANUAL_BASELINE, **{field: data.draw(hostile_text) for field in fields}}
    for task in ("renew", "bind"):
        baseline = render_manual(task, MANUAL_BASELINE)
        assert _without_document(render_manual(task, hostile)) == _without_document(baseline)


@given(hostile_step_input(), st.data())
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_any_single_character_edit_outside_the_document_is_refused(case: tuple[str, dict[str, Any]],
                                                                    data: st.DataObject) -> None:
    step, values = case
    text = render_step(step, values)
    start, end = _document_span(text)
    position = data.draw(st.integers(0, len(text) - 1).filter(lambda i: not start <= i < end), label="position")
    kind = data.draw(st.sampled_from(["delete", "replace", "insert"]), label="kind")
    char = data.draw(st.characters(blacklist_categories=("Cs",)).filter(lambda c: c != text[position]), label="char")
    if kind == "delete":
        edited = text[:position] + text[position + 1:]
    elif kind == "replace":
        edited = text[:position] + char + text[position + 1:]
    else:
        edited = text[:position] + char + text[position:]
    recognised, reason = is_exbe_rendering(edited)
    assert not recognised and reason

"""exbe's serializer writes every string exactly as pypsrp's does ([MS-PSRP] 2.2.5.3.2 escaping), only faster for the
ASCII text of rendered scripts."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from pypsrp.serializer import Serializer

from exbe.psrp_serializer import fast_serializer
from exbe.render import render_step

REFERENCE = Serializer()
FAST = fast_serializer()


@given(st.text())
def test_any_string_is_serialized_exactly_as_pypsrp_does(text: str) -> None:
    assert FAST._serialize_string(text) == REFERENCE._serialize_string(text)


@given(st.text(alphabet=st.characters(max_codepoint=0x7F)))
def test_ascii_with_control_characters_and_underscore_x_is_escaped_as_pypsrp_does(text: str) -> None:
    text += "_x_X\r\n\t\x00\x7f"
    assert FAST._serialize_string(text) == REFERENCE._serialize_string(text)


def test_a_rendered_script_serializes_to_the_same_xml() -> None:
    script = render_step("facts", {"backend_site": "Exchange Back End", "frontend_site": "Default Web Site",
                                   "friendly_name": "Microsoft _x000A_ Exchange"})
    assert FAST._serialize_string(script) == REFERENCE._serialize_string(script)
    assert "_x000A_" in FAST._serialize_string(script)

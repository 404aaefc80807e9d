"""The wire form: a step script travels with only the functions it uses, without comments and indentation, and it
means to PowerShell exactly what the readable form means (tree-sitter-pwsh compares the two, token by token)."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from exbe import __version__, render
from exbe.render import TEMPLATE_DIR, is_exbe_rendering, render_manual, render_step
from exbe.wire_form import UnsupportedScript, compact, prune_functions
from tests import pwsh
from tests.test_templates_syntax import MANUAL_VARIANTS, STEP_VARIANTS

FACTS = {"backend_site": "Exchange Back End", "frontend_site": "Default Web Site",
         "friendly_name": "Microsoft Exchange"}
TRUST = {"thumbprint": "B2" * 20, "dry_run": False}


def _same_for_powershell(readable: str, wire: str) -> None:
    assert pwsh.syntax_errors(wire) == []
    assert pwsh.tokens(wire) == pwsh.tokens(readable)
    assert pwsh.shape(wire) == pwsh.shape(readable)


# -- every shipped script ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,step,data", STEP_VARIANTS, ids=[n for n, _, _ in STEP_VARIANTS])
def test_the_wire_form_of_every_step_script_means_what_the_readable_form_means(name: str, step: str,
                                                                                data: dict) -> None:
    readable, wire = render_step(step, data, readable=True), render_step(step, data)
    _same_for_powershell(readable, wire)
    assert len(wire) < len(readable)
    comments = [line for line in wire.split("\n") if line.lstrip().startswith("#")]
    assert comments == [readable.split("\n", 1)[0]], "only the exbe-step header line stays a comment"
    assert not any(line != line.lstrip() for line in wire.split("\n")[:wire.index("$ExbeInput = ")])


@pytest.mark.parametrize("name,task,data", MANUAL_VARIANTS[::4], ids=[n for n, _, _ in MANUAL_VARIANTS[::4]])
def test_every_hand_run_script_compacts_to_the_same_powershell(name: str, task: str, data: dict) -> None:
    readable = render_manual(task, data)
    _same_for_powershell(readable, compact(readable))


@pytest.mark.parametrize("step", sorted({step for _, step, _ in STEP_VARIANTS}))
def test_a_step_script_defines_only_functions_its_own_code_reaches(step: str) -> None:
    data = next(data for _, variant, data in STEP_VARIANTS if variant == step)
    wire = render_step(step, data)
    defined = {name.lower() for name in pwsh.functions(wire)}
    called = {c.name.lower() for c in pwsh.commands(wire)}
    assert defined <= called, f"unused functions travel: {sorted(defined - called)}"
    # and nothing it calls went missing: every command is defined here or documented (test_templates_syntax)
    assert f"invoke-exbe{step}" in defined


def test_a_read_only_step_leaves_the_library_functions_it_does_not_use_behind() -> None:
    trust = pwsh.functions(render_step("trust", TRUST))
    facts = pwsh.functions(render_step("facts", FACTS))
    assert "Get-ExbeCertInfo" in facts and "Get-ExbeCertInfo" not in trust
    assert "Find-ExbeCertificate" in trust


def test_values_in_the_input_document_never_change_which_functions_travel() -> None:
    plain = render_step("facts", FACTS)
    named = render_step("facts", {**FACTS, "friendly_name": "Invoke-ExbeBind Get-ExbeBindRefusal function x {"})
    assert set(pwsh.functions(named)) == set(pwsh.functions(plain))
    assert named.replace("Invoke-ExbeBind Get-ExbeBindRefusal function x {", "Microsoft Exchange") == plain


def test_the_sandbox_recognises_the_wire_and_the_readable_form_and_nothing_else() -> None:
    wire, readable = render_step("trust", TRUST), render_step("trust", TRUST, readable=True)
    assert is_exbe_rendering(wire) == (True, f"exbe {__version__} trust step")
    assert is_exbe_rendering(readable) == (True, f"exbe {__version__} trust step")
    recognised, reason = is_exbe_rendering(wire.replace("\nparam(", "\n  param(", 1))
    assert not recognised and "differs" in reason


def test_a_new_library_template_in_an_override_directory_is_pruned_without_any_code_change(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATE_DIR, templates)
    (templates / "_site.ps1.j2").write_text(
        "function Get-SiteLabel {\n    # used by the step\n    return (Format-SiteLabel -Text 'site')\n}\n\n"
        "function Format-SiteLabel {\n    param([string] $Text)\n    return $Text.ToUpperInvariant()\n}\n\n"
        "# never called by anything\nfunction Remove-SiteEverything {\n    Remove-Item -Path 'C:\\' -Recurse\n}\n")
    trust = templates / "trust.ps1.j2"
    trust.write_text('{% include "_site.ps1.j2" %}\n\n' + trust.read_text().replace(
        "$thumbprint = [string]$Doc.thumbprint", "$thumbprint = [string]$Doc.thumbprint\n    [void](Get-SiteLabel)"))
    functions = pwsh.functions(render_step("trust", TRUST, override_dir=templates))
    assert {"Get-SiteLabel", "Format-SiteLabel"} <= set(functions)
    assert "Remove-SiteEverything" not in functions
    assert "never called by anything" not in render_step("trust", TRUST, override_dir=templates, readable=True)


def test_a_changed_override_template_is_rendered_again(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATE_DIR, templates)
    first = render_step("trust", TRUST, override_dir=templates)
    trust = templates / "trust.ps1.j2"
    trust.write_text(trust.read_text().replace("present_before", "was_present"))
    second = render_step("trust", TRUST, override_dir=templates)
    assert "was_present" in second and "was_present" not in first


def test_a_fleets_first_servers_asking_for_a_script_at_once_render_it_once(tmp_path: Path, monkeypatch) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATE_DIR, templates)
    renderings: list[str] = []
    original = render.prune_functions
    monkeypatch.setattr(render, "prune_functions", lambda text: renderings.append(text) or original(text))
    with ThreadPoolExecutor(8) as pool:
        scripts = set(pool.map(lambda _: render_step("trust", TRUST, override_dir=templates), range(16)))
    assert len(scripts) == 1 and len(renderings) == 1


# -- the compactor on text that is easy to get wrong -------------------------------------------------------------------
TRICKY = [
    ("here-strings keep every line, blank and '#'",
     "$a = @'\n    # not a comment\n\n  indented 'quote'\n'@\n    $b = @\"\n  $x # y \"q\"\n\"@ # after\n",
     "$a = @'\n    # not a comment\n\n  indented 'quote'\n'@\n$b = @\"\n  $x # y \"q\"\n\"@\n"),
    ("a '#' inside quotes is text, a doubled quote is one quote",
     "    $a = 'it''s # here'  # a comment\n    $b = \"say \"\"#\"\" `\" # still text\"\n",
     "$a = 'it''s # here'\n$b = \"say \"\"#\"\" `\" # still text\"\n"),
    ("a subexpression inside a double-quoted string keeps its own strings and comments",
     "$a = \"x $( 'y)' # ) inside\n) z\" # gone\n",
     "$a = \"x $( 'y)' # ) inside\n) z\"\n"),
    ("block comments go, even over several lines or with a quote in them",
     "<#\n .SYNOPSIS\n  don't\n#>\nfunction Get-A {\n    <# inline #> return 1\n}\n",
     "function Get-A {\nreturn 1\n}\n"),
    ("a line continuation keeps the next line, even an empty or a comment one",
     "Get-Item `\n        -Path 'a'\nWrite-Output `\n\n'b'\nWrite-Output `\n# c\n'd'\n",
     "Get-Item `\n-Path 'a'\nWrite-Output `\n\n'b'\nWrite-Output `\n\n'd'\n"),
    ("a blank escaped by a backtick stays",
     "Write-Output a` \nWrite-Output ``\n",
     "Write-Output a` \nWrite-Output ``\n"),
    ("a multi-line single-quoted string keeps its indentation",
     "    $a = 'one\n        two'\n",
     "$a = 'one\n        two'\n"),
    ("#requires is a directive, not a comment; a braced variable may hold '#' and quotes",
     "#Requires -Version 5.1\n${a#'b} = 1 # c\n",
     "#Requires -Version 5.1\n${a#'b} = 1\n"),
]


@pytest.mark.parametrize("what,text,expected", TRICKY, ids=[t[0] for t in TRICKY])
def test_the_compactor_strips_only_comments_and_indentation(what: str, text: str, expected: str) -> None:
    assert compact(text) == expected
    assert pwsh.tokens(expected) == pwsh.tokens(text)


@pytest.mark.parametrize("text", [
    "Write-Output a#b\n",  # glued to a word: PowerShell reads it as part of the word
    "cmd.exe /c --% echo # not a comment\n",  # after --% PowerShell passes the rest of the line as it is
    "$a = 'never closed\n",
    "<# never closed\n",
    "$a = @'\nnever closed\n",
    "$a = \"$(never closed\"\n",
])
def test_the_compactor_refuses_what_it_cannot_read_for_sure(text: str) -> None:
    with pytest.raises(UnsupportedScript):
        compact(text)


# -- pruning ---------------------------------------------------------------------------------------------------------
LIBRARY = """\
function Get-Used {
    return (Get-Helper)
}

# documents Get-Helper
function Get-Helper {
    function Get-Inner {
        return 1
    }
    return (Get-Inner)
}

# documents Get-Unused
# over two lines
function Get-Unused {
    return (Get-OnlyFromUnused)
}

function Get-OnlyFromUnused {
    return 2
}

function Get-NamedInAComment {
    return 3
}

function Get-NamedInAString {
    return 4
}

function Get-Used {
    return (Get-Helper)
}

# Get-NamedInAComment is mentioned here only
$name = 'Get-NamedInAString'
get-used
"""


def test_pruning_keeps_what_the_code_reaches_by_name_and_drops_the_rest_with_its_comments() -> None:
    pruned = prune_functions(LIBRARY)
    assert set(pwsh.functions(pruned)) == {"Get-Used", "Get-Helper", "Get-Inner", "Get-NamedInAString"}
    assert pruned.count("function Get-Used {") == 1, "an identical second definition (an included template) goes"
    assert "documents Get-Unused" not in pruned and "over two lines" not in pruned
    assert "# documents Get-Helper" in pruned and "# Get-NamedInAComment is mentioned here only" in pruned
    assert pwsh.syntax_errors(pruned) == []
    assert "\n\n\n" not in pruned


def test_pruning_leaves_text_it_cannot_read_for_sure_alone() -> None:
    unbalanced = "function Get-A {\n    return 1\n\nfunction Get-B {\n    return 2\n}\n"
    assert prune_functions(unbalanced) == unbalanced
    glued = "function Get-A {\n    return 1\n}\nWrite-Output a#b\n"
    assert prune_functions(glued) == glued


@pytest.mark.parametrize("text", [
    "Write-Output a` #b\n",  # PowerShell writes 'a #b': the escaped blank makes '#b' argument text
    "Write-Output a`\t<# b #>\n",
    "$a = \"$(Write-Output a` #b)\"\n",
])
def test_the_compactor_refuses_a_hash_after_a_backtick_escaped_blank(text: str) -> None:
    with pytest.raises(UnsupportedScript):
        compact(text)


def test_an_override_template_with_an_escaped_blank_before_a_hash_travels_readable(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATE_DIR, templates)
    trust = templates / "trust.ps1.j2"
    trust.write_text(trust.read_text().replace(
        "$thumbprint = [string]$Doc.thumbprint", "$thumbprint = [string]$Doc.thumbprint\n    Write-Verbose a` #b"))
    wire = render_step("trust", TRUST, override_dir=templates)
    assert "Write-Verbose a` #b" in wire
    assert wire == render_step("trust", TRUST, override_dir=templates, readable=True)


LIBRARY_OF_TWO = "function Get-ExbeA {\n    return 1\n}\n\nfunction Get-ExbeB {\n    return 2\n}\n\n"


@pytest.mark.parametrize("call", [
    "$n = 'B'\n& ('Get-Exbe' + $n)\n",
    "$n = 'Get-ExbeB'\n& $n\n",
    "& \"Get-Exbe$n\"\n",
    ". $n\n",
    "Invoke-Expression ('Get-Exbe' + 'B')\n",
    "$f = { Get-ExbeA }\n$f = 'Get-ExbeB'\n& $f\n",
])
def test_pruning_keeps_every_function_when_a_call_computes_its_name(call: str) -> None:
    script = LIBRARY_OF_TWO + "Get-ExbeA\n" + call
    assert prune_functions(script) == script


@pytest.mark.parametrize("call", ["& 'Get-ExbeA'\n", "$f = { Get-ExbeA }\n& $f\n", "Get-ExbeA 2>&1\n",
                                  "& { Get-ExbeA }\n"])
def test_pruning_still_drops_unused_functions_behind_static_calls(call: str) -> None:
    pruned = prune_functions(LIBRARY_OF_TWO + call)
    assert set(pwsh.functions(pruned)) == {"Get-ExbeA"}
